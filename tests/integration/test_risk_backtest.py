"""Back-test figures on a small history whose labels and outcome are known payment by payment."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from knowpay.accounts.models import User
from knowpay.orders.models import Order
from knowpay.payments.models import Payment
from knowpay.risk.backtest import backtest
from knowpay.risk.models import RiskLabel

START = datetime(2026, 11, 1, 2, 0, 0)


def _user(session, name: str, created: datetime) -> str:
    user = User(email=f"{name}@example.com", username=name, active=True, fs_uniquifier=uuid.uuid4().hex,
                created_at=created, create_datetime=created, update_datetime=created)
    session.add(user)
    session.flush()
    return user.id


def _payment(session, buyer: str, at: datetime, amount: int, *, status: str = "succeeded",
             device: str | None = None) -> str:
    order = Order(buyer_id=buyer, status="pending", currency="cny", amount_subtotal=amount, amount_discount=0,
                  amount_total=amount, amount_refunded=0, expires_at=at + timedelta(minutes=15), created_at=at,
                  version=1)
    session.add(order)
    session.flush()
    payment = Payment(order_id=order.id, buyer_id=buyer, channel="stripe", status=status, amount=amount,
                      currency="cny", device_id=device, client_ip="45.9.9.9" if device else "36.112.1.1",
                      channel_extra={}, amount_refunded=0, version=1, query_attempts=0, created_at=at,
                      updated_at=at + timedelta(seconds=5),
                      succeeded_at=at + timedelta(seconds=5) if status == "succeeded" else None)
    session.add(payment)
    session.flush()
    return payment.id


def test_backtest_counts_payments_money_and_known_bad_exactly(ctx):
    with ctx.db.transaction() as session:
        tester = _user(session, "tester", START - timedelta(hours=1))
        card_testing = [_payment(session, tester, START + timedelta(seconds=40 * i), 990, status="failed",
                                 device="dev-t") for i in range(12)]
        for payment_id in card_testing:
            session.add(RiskLabel(payment_id=payment_id, label="fraud", source="admin", created_at=START))
        for n in range(5):
            buyer = _user(session, f"buyer{n}", START - timedelta(days=200))
            for day in (1, 3):
                _payment(session, buyer, START + timedelta(days=day, hours=n), 9900)
    limits = {"limits": [{"counter": "attempts", "per": "user", "window_seconds": 600, "max": 5}]}

    result = backtest(ctx, "velocity", since=START - timedelta(days=1), params=limits)

    assert (result.assessed, result.assessed_amount["cny"]) == (22, 12 * 990 + 10 * 9900)
    assert (result.stopped, result.stopped_amount["cny"]) == (7, 7 * 990)  # the 6th to the 12th attempt
    assert (result.stopped_bad, result.bad, result.bad_amount["cny"]) == (7, 12, 12 * 990)
    assert set(result.stopped_ids) == set(card_testing[5:])
    assert (result.precision, round(result.recall, 4)) == (1.0, round(7 / 12, 4))
    lines = result.lines()
    assert lines[2].split() == ["payments", "assessed", "22", "1108.80", "cny"]
    assert lines[3].split() == ["would", "have", "stopped", "7", "69.30", "cny"]
    assert lines[4].split()[:7] == ["of", "them", "known", "bad", "7", "69.30", "cny"]

    # Only the window asked for is counted, but what came before still feeds the counters.
    later = backtest(ctx, "velocity", since=START + timedelta(seconds=40 * 8), params=limits)
    assert (later.assessed, later.stopped, later.stopped_bad, later.bad) == (4 + 10, 4, 4, 4)
    failures = backtest(ctx, "velocity", since=START - timedelta(days=1), params={"limits": [
        {"counter": "failures", "per": "device", "window_seconds": 3600, "max": 3}]})
    # failures are counted when they happen (5 s after each attempt): the 5th attempt sees 4 before it
    assert failures.stopped == 8 and failures.stopped_bad == 8
