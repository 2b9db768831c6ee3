"""The jobs: sweeps every minute, driven by database state, and an on-demand outbox kick.

Every job is safe to run twice or to lose half-way: it finds its work in the database and
changes state by compare-and-set, so a worker killed mid-job costs a minute, never an effect.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from huey import Huey, crontab
from huey.api import TaskWrapper

from knowpay.config import Settings
from knowpay.context import Context
from knowpay.jobs.queue import make_huey

log = logging.getLogger(__name__)

EVERY_MINUTE = crontab(minute="*")
# A sweep still waiting in the queue when the next one is due is dropped rather than piled up.
SWEEP_EXPIRES_SECONDS = 120
# At most one kick waits in the queue; a flag older than this stands for a kick that was lost.
KICK_FLAG = "outbox-kick-pending"
KICK_FLAG_STALE_SECONDS = 60
# One kick drains at most this many batches, so a flood cannot hold a worker thread for long.
OUTBOX_ROUNDS = 10


@dataclass(frozen=True)
class Tasks:
    """The registered tasks; calling one enqueues it (`tasks.kick_outbox()`)."""

    expire_orders: TaskWrapper
    query_pending_payments: TaskWrapper
    process_refunds: TaskWrapper
    sweep_outbox: TaskWrapper
    kick_outbox: TaskWrapper
    settle_earnings: TaskWrapper
    reconcile_yesterday: TaskWrapper
    verify_invariants: TaskWrapper
    prune_sign_in_throttles: TaskWrapper


class _ContextOnce:
    """Builds the worker's Context on first use, once per process, whichever thread asks first."""

    def __init__(self, factory: Callable[[], Context]) -> None:
        self._factory = factory
        self._context: Context | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Context:
        if self._context is None:
            with self._lock:
                if self._context is None:
                    self._context = self._factory()
        return self._context


def drain_outbox(ctx: Context) -> tuple[int, int]:
    """Dispatch new events to their endpoints and deliver what is due; (dispatched, delivered)."""
    from knowpay.outbox import dispatch, webhooks

    dispatched = delivered = 0
    for _ in range(OUTBOX_ROUNDS):
        fanned = dispatch.dispatch_pending(ctx)
        sent = webhooks.deliver_due(ctx)
        dispatched, delivered = dispatched + fanned, delivered + sent
        if fanned < dispatch.DISPATCH_LIMIT and sent < webhooks.DELIVER_LIMIT:
            break
    return dispatched, delivered


def _report(what: str, count: int) -> int:
    if count:
        log.info("%s: %d", what, count)
    return count


def register_tasks(huey: Huey, context_factory: Callable[[], Context]) -> Tasks:
    """Register every job on `huey`; `context_factory` runs lazily, once per worker process."""
    context = _ContextOnce(context_factory)

    @huey.periodic_task(EVERY_MINUTE, name="expire_orders", expires=SWEEP_EXPIRES_SECONDS)
    def expire_orders() -> int:
        from knowpay.payments.maintenance import expire_due_orders

        return _report("orders expired", expire_due_orders(context()))

    @huey.periodic_task(EVERY_MINUTE, name="query_pending_payments", expires=SWEEP_EXPIRES_SECONDS)
    def query_pending_payments() -> int:
        from knowpay.payments import maintenance

        return _report("pending payments queried", maintenance.query_pending_payments(context()))

    @huey.periodic_task(EVERY_MINUTE, name="process_refunds", expires=SWEEP_EXPIRES_SECONDS)
    def process_refunds() -> int:
        from knowpay.refunds.processing import process_pending_refunds

        return _report("refunds processed", process_pending_refunds(context()))

    @huey.periodic_task(EVERY_MINUTE, name="sweep_outbox", expires=SWEEP_EXPIRES_SECONDS)
    def sweep_outbox() -> int:
        dispatched, delivered = drain_outbox(context())
        _report("outbox events dispatched", dispatched)
        return _report("webhook deliveries attempted", delivered)

    @huey.task(name="kick_outbox")
    def kick_outbox() -> None:
        # Lower the flag before the work: an event committed from now on earns a kick of its own.
        huey.delete(KICK_FLAG)
        dispatched, delivered = drain_outbox(context())
        _report("outbox events dispatched (kick)", dispatched)
        _report("webhook deliveries attempted (kick)", delivered)

    @huey.periodic_task(crontab(minute="7"), name="settle_earnings", expires=3600)
    def settle_earnings() -> int:
        from knowpay.payouts.settlement import settle_due_earnings

        return _report("payments settled", settle_due_earnings(context()))

    @huey.periodic_task(crontab(hour="*/6", minute="17"), name="reconcile_yesterday", expires=3600)
    def reconcile_yesterday() -> int:
        # Every six hours: the first run after a channel publishes yesterday's bill settles it,
        # and re-running a day only replaces that day's result.
        return _report("channels reconciled", reconcile_previous_day(context()))

    @huey.periodic_task(crontab(hour="4", minute="37"), name="verify_invariants", expires=3600)
    def verify_invariants() -> bool:
        from knowpay.invariants import check_invariants

        return check_invariants(context()).ok

    @huey.periodic_task(crontab(hour="4", minute="11"), name="prune_sign_in_throttles", expires=3600)
    def prune_sign_in_throttles() -> int:
        from knowpay.security.lockout import prune_throttles

        ctx = context()
        with ctx.db.transaction() as session:
            pruned = prune_throttles(session, policy=ctx.settings.lockout, clock=ctx.clock)
        return _report("sign-in failure counts forgotten", pruned)

    register_recommendation_refresh(huey, context)
    register_analytics_tasks(huey, context)
    register_risk_tasks(huey, context)
    return Tasks(expire_orders=expire_orders, query_pending_payments=query_pending_payments,
                 process_refunds=process_refunds, sweep_outbox=sweep_outbox, kick_outbox=kick_outbox,
                 settle_earnings=settle_earnings, reconcile_yesterday=reconcile_yesterday,
                 verify_invariants=verify_invariants, prune_sign_in_throttles=prune_sign_in_throttles)


def reconcile_previous_day(ctx: Context) -> int:
    """Reconcile yesterday (platform time zone) for every enabled channel with bills; returns how many ran."""
    from datetime import timedelta

    from knowpay.reconciliation.service import local_day, reconcile

    day = local_day(ctx.clock.now(), ctx.settings.timezone) - timedelta(days=1)
    done = 0
    for name in ctx.channels.names():
        try:
            reconcile(ctx, channel=name, day=day)
            done += 1
        except Exception:  # noqa: BLE001 - one channel's failure must not stop the others; the run records it
            log.exception("reconciliation of %s for %s failed", name, day)
    return done


def _raise_no_context() -> Context:
    raise RuntimeError("this process only enqueues jobs; run them with `knowpay worker`")


_producers: dict[tuple[str | None, str], tuple[Huey, Tasks]] = {}
_producers_lock = threading.Lock()


def _producer(settings: Settings) -> tuple[Huey, Tasks]:
    """The queue as seen by a process that only enqueues (the web), built on first use."""
    key = (settings.redis_url, str(settings.instance_path))
    with _producers_lock:
        if key not in _producers:
            huey = make_huey(settings)
            _producers[key] = (huey, register_tasks(huey, _raise_no_context))
        return _producers[key]


def _raise_kick_flag(huey: Huey) -> bool:
    """True when no kick is waiting (or the one that was is presumed lost), having raised the flag."""
    now = time.time()
    if huey.put_if_empty(KICK_FLAG, now):
        return True
    raised_at = huey.get(KICK_FLAG, peek=True)
    if raised_at is None or now - raised_at > KICK_FLAG_STALE_SECONDS:
        huey.put(KICK_FLAG, now)
        return True
    return False


def enqueue_outbox_kick(settings: Settings) -> bool:
    """Ask a worker to deliver new outbox events now; call it after the commit that wrote them.

    Returns False (with a warning) when the queue cannot be reached: the events are safe in the
    database and the sweep every minute delivers them.
    """
    try:
        huey, tasks = _producer(settings)
        if _raise_kick_flag(huey):
            tasks.kick_outbox()
        return True
    except Exception as exc:  # noqa: BLE001 - whatever the broker's failure, the request already committed
        log.warning("could not enqueue an outbox kick (%s: %s); the periodic sweep will deliver",
                    exc.__class__.__name__, exc)
        return False


# Recommendations may lag purchases by a minute (API.md). Huey's schedule counts whole minutes, so the
# refresh runs as a chain of delayed tasks every half minute instead; a worker starting up, and an
# hourly check, start a new chain when the expected next link is overdue (a flushed queue).
RECOMMEND_EVERY_SECONDS = 30
RECOMMEND_LINK = "recommend-refresh-next-link"
RECOMMEND_LINK_OVERDUE_SECONDS = 120


def register_recommendation_refresh(huey: Huey, context: Callable[[], Context]) -> TaskWrapper:
    """Register the recommendations refresh chain; returns its task (calling it enqueues one link)."""

    def schedule_next() -> None:
        link = refresh_recommendations.schedule(delay=RECOMMEND_EVERY_SECONDS)
        huey.put(RECOMMEND_LINK, (link.id, time.time() + RECOMMEND_EVERY_SECONDS))

    def ensure_chain() -> None:
        expected = huey.get(RECOMMEND_LINK, peek=True)
        if expected is None or time.time() - expected[1] > RECOMMEND_LINK_OVERDUE_SECONDS:
            schedule_next()

    @huey.task(name="refresh_recommendations", context=True)
    def refresh_recommendations(task=None) -> int:
        from knowpay.recommend.service import refresh_recommendations as refresh

        expected = huey.get(RECOMMEND_LINK, peek=True)
        if expected is not None and task is not None and expected[0] != task.id:
            return 0  # a link of an older chain: the current one carries on, this one ends here
        schedule_next()  # before the work, so that a worker stopped mid-refresh leaves the chain intact
        return _report("recommendation buyers recounted", refresh(context()))

    huey.on_startup("recommendations_chain")(ensure_chain)
    huey.periodic_task(crontab(minute="29"), name="check_recommendations_chain", expires=3600)(ensure_chain)
    return refresh_recommendations


# Analytics (issue 9): the store takes in each minute's changes; figures may lag payments by a minute.
# The checks run every five minutes, off the hour's first minute when the other schedules crowd in.
ANALYTICS_CHECK = crontab(minute="4-59/5")


def register_analytics_tasks(huey: Huey, context: Callable[[], Context]) -> dict[str, TaskWrapper]:
    """The analytics load every minute, anomaly checks and the channel model every five, Parquet hourly."""

    @huey.periodic_task(EVERY_MINUTE, name="load_analytics", expires=SWEEP_EXPIRES_SECONDS)
    def load_analytics() -> int:
        from knowpay.analytics.store import load_increment

        result = load_increment(context())
        return _report("analytics events loaded", result.events)

    @huey.periodic_task(ANALYTICS_CHECK, name="check_analytics", expires=300)
    def check_analytics() -> int:
        from knowpay.analytics.anomalies import check_anomalies
        from knowpay.analytics.channel_ranking import refresh_channel_model

        ctx = context()
        refresh_channel_model(ctx)
        return _report("analytics anomalies found", len(check_anomalies(ctx)))

    @huey.periodic_task(crontab(minute="41"), name="export_analytics_parquet", expires=3600)
    def export_analytics_parquet() -> int:
        from knowpay.analytics.parquet import export_parquet

        return _report("analytics parquet partitions written", len(export_parquet(context())))

    return {"load_analytics": load_analytics, "check_analytics": check_analytics,
            "export_analytics_parquet": export_analytics_parquet}


def register_risk_tasks(huey: Huey, context: Callable[[], Context]) -> dict[str, TaskWrapper]:
    """Risk (issue 8): yesterday's report stored every six hours (the first run after midnight in the
    platform time zone makes it, later ones add late review outcomes); old database counters pruned."""

    @huey.periodic_task(crontab(hour="*/6", minute="23"), name="store_risk_report", expires=3600)
    def store_risk_report() -> int:
        from knowpay.risk.report import store_daily_report, yesterday

        ctx = context()
        return _report("risk decisions in yesterday's report", store_daily_report(ctx, yesterday(ctx))["decisions"])

    @huey.periodic_task(crontab(hour="3", minute="53"), name="prune_risk_counters", expires=3600)
    def prune_risk_counters() -> int:
        from knowpay.risk.counters import DbCounters

        ctx = context()
        return _report("risk counter rows pruned", DbCounters(ctx.db).prune(ctx.clock.now()))

    return {"store_risk_report": store_risk_report, "prune_risk_counters": prune_risk_counters}
