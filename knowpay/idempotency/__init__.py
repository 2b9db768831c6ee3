"""Idempotency-Key handling for mutating API calls (API.md conventions)."""
