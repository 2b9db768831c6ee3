"""Velocity counters under concurrent payments (database and Redis), and Redis failing mid-checkout."""

from __future__ import annotations

import threading
import uuid

import pytest
import redis
from sqlalchemy import func, select

from knowpay.accounts.models import User
from knowpay.payments.service import PaymentAsk, create_payment
from knowpay.risk.engine import build_engine, install_engine
from knowpay.risk.models import RiskCounterEvent, RiskDecision
from tests.integration.test_risk_failures import decline, failure_rows, failures_seen_by_last_decision, pay

REDIS_URL = "redis://127.0.0.1:6379/0"
N = 12


def _redis_reason() -> str | None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
        return None
    except redis.RedisError as exc:
        return f"Redis at {REDIS_URL} does not answer ({exc.__class__.__name__})"


@pytest.fixture
def redis_namespace():
    reason = _redis_reason()
    if reason:
        pytest.skip(reason)
    namespace = f"knowpay-test:{uuid.uuid4().hex}"
    yield namespace
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{namespace}:*"):
        client.delete(key)


def _orders(client, buyer, product_id, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        made = client.post("/api/v1/orders", headers=buyer.headers, json={"items": [{"product_id": product_id}]})
        assert made.status_code == 201, made.get_json()
        ids.append(made.get_json()["id"])
    return ids


def _pay_all_at_once(ctx, buyer_id: str, order_ids: list[str]) -> list:
    with ctx.db.transaction(write=False) as session:
        user = session.get(User, buyer_id)
        _ = user.roles
    barrier = threading.Barrier(len(order_ids))
    results: list = [None] * len(order_ids)

    def pay(i: int) -> None:
        barrier.wait()
        try:
            results[i] = create_payment(ctx, buyer=user, order_id=order_ids[i],
                                        ask=PaymentAsk(channel="sandbox", client_ip="36.112.0.7", device_id="dev-x"))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results[i] = exc

    threads = [threading.Thread(target=pay, args=(i,)) for i in range(len(order_ids))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _attempt_counts(ctx) -> list[int]:
    with ctx.db.transaction(write=False) as session:
        return sorted(d.inputs["signals"]["attempts_user_600"] for d in session.scalars(select(RiskDecision)))


def test_concurrent_payments_in_the_database_each_count_every_attempt_before_them(client, ctx, buyer,
                                                                                  published_product, fake_channel):
    results = _pay_all_at_once(ctx, buyer.id, _orders(client, buyer, published_product["id"], N))
    assert all(getattr(r, "status", None) == "requires_action" for r in results), results
    assert _attempt_counts(ctx) == list(range(1, N + 1))
    with ctx.db.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(RiskCounterEvent).where(
            RiskCounterEvent.key == f"att:pay:user:{buyer.id}")) == N
        ip_counts = sorted(d.inputs["signals"]["attempts_ip_600"] for d in session.scalars(select(RiskDecision)))
    assert ip_counts == list(range(1, N + 1))
    assert fake_channel.count("create") == N


def test_concurrent_payments_in_redis_each_count_every_attempt_before_them(client, ctx, buyer, published_product,
                                                                           fake_channel, redis_namespace):
    install_engine(ctx, build_engine(ctx.settings.with_overrides(redis_url=REDIS_URL), ctx.db,
                                     redis_namespace=redis_namespace))
    results = _pay_all_at_once(ctx, buyer.id, _orders(client, buyer, published_product["id"], N))
    assert all(getattr(r, "status", None) == "requires_action" for r in results), results
    assert _attempt_counts(ctx) == list(range(1, N + 1))
    store = redis.Redis.from_url(REDIS_URL)
    assert store.zcard(f"{redis_namespace}:att:pay:user:{buyer.id}") == N
    assert store.zcard(f"{redis_namespace}:acct:pay:device:dev-x") == 1
    assert 0 < store.ttl(f"{redis_namespace}:att:pay:user:{buyer.id}") <= 86400
    with ctx.db.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(RiskCounterEvent)) == 0
        assert {d.inputs["counters"] for d in session.scalars(select(RiskDecision))} == {"redis"}


def test_when_redis_cannot_be_reached_checkout_goes_on_with_database_counters(client, ctx, buyer,
                                                                             published_product, fake_channel):
    install_engine(ctx, build_engine(ctx.settings.with_overrides(redis_url="redis://127.0.0.1:1/0"), ctx.db))
    [order_id] = _orders(client, buyer, published_product["id"], 1)
    paid = client.post(f"/api/v1/orders/{order_id}/payments", headers=buyer.headers, json={"channel": "sandbox"})
    assert paid.status_code == 201, paid.get_json()
    assert fake_channel.count("create") == 1
    with ctx.db.transaction(write=False) as session:
        decision = session.scalars(select(RiskDecision)).one()
        assert decision.inputs["counters"] == "database"
        assert decision.faults == ["counters: redis unavailable (ConnectionError); used database"]
        assert session.scalar(select(func.count()).select_from(RiskCounterEvent)) > 0


def test_with_redis_counters_a_declined_payment_is_counted_in_redis(client, ctx, buyer, published_product,
                                                                   fake_channel, redis_namespace):
    install_engine(ctx, build_engine(ctx.settings.with_overrides(redis_url=REDIS_URL), ctx.db,
                                     redis_namespace=redis_namespace))
    first = pay(client, buyer, published_product["id"]).get_json()
    decline(client, fake_channel, first)

    store = redis.Redis.from_url(REDIS_URL)
    assert store.zrange(f"{redis_namespace}:fail:pay:user:{buyer.id}", 0, -1) == [first["id"].encode()]
    assert failure_rows(ctx) == []
    assert pay(client, buyer, published_product["id"]).status_code == 201
    assert failures_seen_by_last_decision(ctx) == {"user": 1, "ip": 1, "device": 1}
