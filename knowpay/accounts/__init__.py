"""Users, roles, bearer tokens and API keys (on Flask-Security's models)."""
