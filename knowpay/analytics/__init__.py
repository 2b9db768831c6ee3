"""Payment analytics: a DuckDB store loaded from the operational database, metrics, exports, alerts."""
