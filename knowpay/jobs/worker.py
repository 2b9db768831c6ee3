"""`knowpay worker`: the Huey consumer with its schedule, until SIGINT or SIGTERM (both graceful)."""

from __future__ import annotations

import logging
import signal

from knowpay.config import Settings
from knowpay.context import Context, build_context
from knowpay.jobs.queue import make_huey
from knowpay.jobs.tasks import register_tasks

log = logging.getLogger(__name__)

# SIGINT waits this long for running jobs before leaving them; they are idempotent and run again.
SHUTDOWN_TIMEOUT_SECONDS = 20
# How long an idle worker may sleep between looks at the queue (SQLite polls; Redis blocks).
MAX_POLL_DELAY_SECONDS = 2.0


def run_worker(settings: Settings, *, workers: int = 2) -> None:
    """Consume jobs with `workers` threads and enqueue the every-minute sweeps (call from the main thread)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from knowpay.security.redaction import install_log_redaction

    install_log_redaction(settings)
    huey = make_huey(settings)
    built: list[Context] = []

    def context_factory() -> Context:
        context = build_context(settings)
        built.append(context)
        return context

    register_tasks(huey, context_factory)
    consumer = huey.create_consumer(workers=workers, worker_type="thread", periodic=True,
                                    max_delay=MAX_POLL_DELAY_SECONDS,
                                    shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS)
    # SIGTERM (systemd, docker stop) shuts down gracefully too: a job cut off mid-write would be
    # redone by the next sweep anyway, but an embedded store (DuckDB) aborts the process if its
    # writer thread is killed at interpreter exit.
    consumer._signal_actions[signal.SIGTERM] = (False, True)
    log.info("KnowPay worker: %d threads on %s", workers,
             "Redis" if settings.redis_url else "the SQLite queue")
    try:
        consumer.run()
    finally:
        for context in built:
            context.db.dispose()
