"""Build the application's pieces outside a web request (CLI, worker, tests)."""

from __future__ import annotations

from knowpay.config import Settings, load_settings
from knowpay.migrate import upgrade


def init_database(settings: Settings | None = None) -> Settings:
    """Create or migrate the database to the newest schema."""
    settings = settings or load_settings()
    settings.instance_path.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    return settings
