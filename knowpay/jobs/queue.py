"""The job queue: Huey on a SQLite file in the instance folder, or on Redis when KNOWPAY_REDIS_URL is set."""

from __future__ import annotations

from pathlib import Path

from huey import Huey, RedisHuey, SqliteHuey
from redis import ConnectionPool

from knowpay.config import Settings

QUEUE_NAME = "knowpay"
JOBS_FILE = "jobs.sqlite3"


def make_huey(settings: Settings) -> Huey:
    """The queue both the web process (to enqueue) and the worker (to consume) talk to."""
    if settings.redis_url:
        # Timeouts, so that an unreachable Redis fails an enqueue quickly instead of holding a request;
        # the read timeout stays above Huey's 1-second blocking pop.
        pool = ConnectionPool.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=10)
        return RedisHuey(QUEUE_NAME, connection_pool=pool)
    folder = Path(settings.instance_path)
    folder.mkdir(parents=True, exist_ok=True)
    return SqliteHuey(QUEUE_NAME, filename=str(folder / JOBS_FILE))
