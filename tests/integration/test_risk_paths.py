"""One decision whichever way its signals are fetched: Redis counters overlapped with the history read
(checkout's path), the same counters answered before the history is read, and the database counters
(Redis's fall-back); and the faults those fetches can hit on the way."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest
import redis
from sqlalchemy import delete, func, select, text

from knowpay.accounts.models import User
from knowpay.db import Database
from knowpay.orders.models import Order
from knowpay.risk.counters import RedisCounters
from knowpay.risk.engine import build_engine
from knowpay.risk.features import observation
from knowpay.risk.model import train
from knowpay.risk.models import RiskCounterEvent
from knowpay.risk.profiles import DbProfiles, History, reader
from knowpay.risk.service import add_list_entry, update_rule
from knowpay.risk.simulate import simulate
from knowpay.risk.subject import Subject
from tests.integration.test_risk_velocity import REDIS_URL, redis_namespace  # noqa: F401 - a fixture


class InTurn:
    """Counters answered before the history is read: the order an assessment had before the two overlapped."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.name = inner.name

    def begin(self, observation, now):  # type: ignore[no-untyped-def]
        counts = self.inner.observe(observation, now)
        return lambda: counts

    def observe(self, observation, now):  # type: ignore[no-untyped-def]
        return self.inner.observe(observation, now)

    def record(self, hits, now, session=None) -> None:  # type: ignore[no-untyped-def]
        self.inner.record(hits, now, session=session)


def _subjects(ctx, n: int) -> list[Subject]:
    """Payments, top-ups, refunds and payouts of the simulated accounts, on a few shared IPs, devices,
    instruments and coupons, so that every kind of signal is non-zero somewhere."""
    with ctx.db.transaction(write=False) as session:
        users = session.execute(select(User.id, User.email, User.created_at).order_by(User.id)).all()
        coupons = sorted(set(session.scalars(select(Order.coupon_code).where(Order.coupon_code.is_not(None)))))
    rng = random.Random(8)
    made = []
    for i in range(n):
        user_id, email, created = rng.choice(users)
        made.append(Subject(
            kind=rng.choice(("payment",) * 5 + ("topup", "refund", "payout")), user_id=user_id, email=email or "",
            account_created_at=created, amount=rng.choice((990, 9900, 29900, 600000, 3000000)), currency="cny",
            channel=rng.choice(("alipay", "wechat", "stripe")),
            ip=rng.choice((f"36.0.{rng.randint(0, 3)}.7", "58.1.1.1", "10.0.0.1", None)),
            device_id=rng.choice((f"dev-{rng.randint(0, 12)}", None)),
            instruments={"wechat_openid": f"oid-{rng.randint(0, 40)}"} if rng.random() < 0.5 else {},
            coupon_code=rng.choice(coupons) if coupons and rng.random() < 0.3 else None,
            quantity=rng.choice((1, 1, 12)), order_id=f"ord_{i}", can_challenge=rng.random() < 0.5))
    return made


def _decision(assessment) -> dict:  # type: ignore[no-untyped-def]
    return {"outcome": assessment.outcome, "shadow_outcome": assessment.shadow_outcome,
            "fired": [f.to_json() for f in assessment.fired], "score": assessment.score,
            "model_version": assessment.model_version, "shadow_scores": assessment.shadow_scores,
            "signals": assessment.signals, "features": assessment.features, "faults": assessment.faults,
            "notes": assessment.notes}


def test_every_way_of_fetching_the_signals_gives_the_same_decisions(ctx, redis_namespace):  # noqa: F811
    simulate(ctx, buyers=20, days=8, seed=5)
    assert train(ctx, seed=1, activate=True).version == 1
    add_list_entry(ctx, kind="device", value="dev-3", reason="test", list_name="block", actor_id=None)
    update_rule(ctx, "velocity", actor_id=None, params={"limits": [
        {"counter": "attempts", "per": "ip", "window_seconds": 600, "max": 4},
        {"counter": "attempts", "per": "user", "window_seconds": 3600, "max": 3},
        {"counter": "instruments", "per": "device", "window_seconds": 86400, "max": 2}]})
    with ctx.db.transaction() as session:
        session.execute(delete(RiskCounterEvent))  # the simulation's counts: every path starts from none
        start = session.scalar(select(func.max(Order.created_at))).replace(microsecond=0) + timedelta(minutes=1)
    subjects = _subjects(ctx, 120)
    settings = ctx.settings.with_overrides(redis_url=REDIS_URL)
    overlapped = build_engine(settings, ctx.db, redis_namespace=f"{redis_namespace}:overlapped")
    in_turn = build_engine(settings, ctx.db, redis_namespace=f"{redis_namespace}:in-turn")
    in_turn.counters = InTurn(in_turn.counters)
    database = build_engine(ctx.settings.with_overrides(redis_url=None), ctx.db)

    found: dict[str, list[dict]] = {"overlapped": [], "in turn": [], "database": []}
    for i, subject in enumerate(subjects):
        # Whole seconds apart, so no event sits within Redis's score rounding of a window's edge.
        at = start + timedelta(seconds=7 * i)
        for name, engine in (("overlapped", overlapped), ("in turn", in_turn), ("database", database)):
            assessment = engine.assess(subject, now=at, attempt_id=f"att_{i}")
            assert assessment.counters == ("database" if name == "database" else "redis")
            found[name].append(_decision(assessment))

    assert found["overlapped"] == found["in turn"]
    assert found["overlapped"] == found["database"]
    decisions = found["overlapped"]
    assert all(d["faults"] == [] and d["score"] is not None for d in decisions)
    # The comparison means something: every outcome, most rules, and the signals they read, occur.
    assert {str(d["outcome"]) for d in decisions} >= {"allow", "review", "block"}
    fired = {f["rule"] for d in decisions for f in d["fired"]}
    assert fired >= {"blocklist", "velocity", "amount", "shared_device", "coupon_linked"}, fired
    for signal in ("attempts_user_600", "instruments_ip_86400", "accounts_device_2592000", "history_count",
                   "refunded_payments", "coupon_linked_uses"):
        assert any(d["signals"][signal] for d in decisions), signal


def test_a_script_redis_does_not_know_is_loaded_and_run(redis_namespace):  # noqa: F811
    counters = RedisCounters(redis.Redis.from_url(REDIS_URL), namespace=redis_namespace)
    known = counters._observe.sha
    counters._observe.sha = "0" * 40  # as after a Redis restart: EVALSHA answers NOSCRIPT
    subject = Subject(kind="payment", user_id="usr_a", email="a@example.com", account_created_at=datetime(2026, 1, 1),
                      amount=990, currency="cny", ip="36.0.0.7", device_id="dev-1")
    now = datetime(2026, 11, 25, 4, 0, 0)

    first = counters.observe(observation(subject, "att_1"), now)
    second = counters.observe(observation(subject, "att_2"), now + timedelta(seconds=1))

    assert counters._observe.sha == known
    assert (first.get("att:pay:user:usr_a", 600), second.get("att:pay:user:usr_a", 600)) == (1, 2)
    assert second.members == {"acct:pay:ip:36.0.0.7": ["usr_a"], "acct:pay:device:dev-1": ["usr_a"]}


@pytest.mark.postgres
def test_a_history_connection_that_died_is_replaced_without_a_fault(pg_test_url):
    db = Database(pg_test_url, pool_size=1)
    try:
        profiles = DbProfiles(db)
        subject = Subject(kind="payment", user_id="usr_nobody", email="", account_created_at=datetime(2026, 1, 1),
                          amount=990, currency="cny")
        now = datetime(2026, 11, 25, 4, 0, 0)
        assert profiles.history(subject, now) == History()
        pooled = reader(db).raw_connection()
        with pooled.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        pooled.close()
        with db.engine.connect() as conn:  # the server ends it, as a restart or an idle timeout would
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar() is True

        assert profiles.history(subject, now) == History()

        replaced = reader(db).raw_connection()
        with replaced.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            assert cursor.fetchone()[0] != pid
        replaced.close()
    finally:
        db.dispose()
    assert reader(db).pool.checkedin() == 0  # closed with the database's own pool
