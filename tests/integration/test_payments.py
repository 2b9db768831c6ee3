"""The core flow over the API with a fake channel: pay, notify (once or many times), expire, refund."""

from __future__ import annotations

from sqlalchemy import func, select

from knowpay.access.models import Entitlement
from knowpay.ledger.service import balance_of, verify_ledger
from knowpay.outbox.models import OutboxEvent
from knowpay.payments.maintenance import expire_due_orders, query_pending_payments
from knowpay.payments.models import ChannelNotification
from knowpay.refunds.models import Refund
from knowpay.refunds.processing import process_pending_refunds
from tests.fakes import LaterClock


def _order(client, buyer, product_id) -> dict:
    made = client.post("/api/v1/orders", headers=buyer.headers, json={"items": [{"product_id": product_id}]})
    assert made.status_code == 201, made.get_json()
    return made.get_json()


def _pay(client, buyer, order_id, channel="sandbox", **extra) -> dict:
    made = client.post(f"/api/v1/orders/{order_id}/payments", headers=buyer.headers,
                       json={"channel": channel, **extra})
    assert made.status_code == 201, made.get_json()
    return made.get_json()


def _notify(client, fake_channel, payment, **overrides):
    body = fake_channel.notification_body(payment["id"], overrides.pop("amount", payment["amount"]), **overrides)
    return client.post("/notify/sandbox", data=body, content_type="application/json")


def test_paying_a_course_captures_once_and_grants_access(client, ctx, buyer, creator, published_product,
                                                         fake_channel):
    order = _order(client, buyer, published_product["id"])
    payment = _pay(client, buyer, order["id"])
    assert payment["status"] == "requires_action"
    assert payment["action"] == {"type": "qr_code", "code_url": f"fake://pay/{payment['id']}"}
    assert payment["amount"] == 9900

    first = _notify(client, fake_channel, payment)
    assert (first.status_code, first.get_data(as_text=True)) == (200, "success")
    again = _notify(client, fake_channel, payment)
    assert (again.status_code, again.get_data(as_text=True)) == (200, "success")

    assert client.get(f"/api/v1/payments/{payment['id']}", headers=buyer.headers).get_json()["status"] == "succeeded"
    paid = client.get(f"/api/v1/orders/{order['id']}", headers=buyer.headers).get_json()
    assert paid["status"] == "paid" and paid["paid_at"]
    entitlements = client.get("/api/v1/entitlements", headers=buyer.headers).get_json()["data"]
    assert [(e["product_id"], e["status"]) for e in entitlements] == [(published_product["id"], "active")]
    with ctx.db.transaction(write=False) as session:
        # 99.00 sale, 10% platform fee, 0.6% channel fee (59.4 → 59 fen)
        assert balance_of(session, "clearing:sandbox:cny") == 9900 - 59
        assert balance_of(session, f"creator:{creator.id}:pending:cny") == 8910
        assert balance_of(session, "platform:fees:cny") == 990
        assert balance_of(session, "channel_fees:sandbox:cny") == 59
        assert verify_ledger(session).ok
        statuses = sorted(session.scalars(select(ChannelNotification.status)))
        assert statuses == ["duplicate", "processed"]
        types = sorted(session.scalars(select(OutboxEvent.type)))
        assert types == ["entitlement.granted", "order.paid", "payment.succeeded"]


def test_notification_that_does_not_match_changes_nothing_and_is_stored_with_its_reason(
        client, ctx, buyer, published_product, fake_channel):
    order = _order(client, buyer, published_product["id"])
    payment = _pay(client, buyer, order["id"])
    cases = [
        (fake_channel.notification_body(payment["id"], 1), "amount"),
        (fake_channel.notification_body(payment["id"], 9900, currency="usd"), "currency"),
        (fake_channel.notification_body("pay_doesnotexist0000000000", 9900), "unknown payment"),
        (b'{"secret": "wrong", "payment_id": "x"}', "bad signature"),
        (b"not json", "malformed"),
    ]
    for body, reason in cases:
        answer = client.post("/notify/sandbox", data=body, content_type="application/json")
        assert (answer.status_code, answer.get_data(as_text=True)) == (400, "failure")
    with ctx.db.transaction(write=False) as session:
        notes = list(session.scalars(select(ChannelNotification).order_by(ChannelNotification.received_at)))
        assert [n.status for n in notes] == ["rejected"] * 5
        for note, (_, reason) in zip(notes, cases, strict=True):
            assert reason in note.reason
        assert session.scalar(select(func.count()).select_from(OutboxEvent)) == 0
    assert client.get(f"/api/v1/orders/{order['id']}", headers=buyer.headers).get_json()["status"] == "pending"


def test_a_declined_payment_fails_and_the_order_stays_payable(client, buyer, published_product, fake_channel):
    order = _order(client, buyer, published_product["id"])
    payment = _pay(client, buyer, order["id"])
    _notify(client, fake_channel, payment, status="failed")
    got = client.get(f"/api/v1/payments/{payment['id']}", headers=buyer.headers).get_json()
    assert got["status"] == "failed"
    retry = _pay(client, buyer, order["id"])
    assert retry["status"] == "requires_action"


def test_a_second_successful_payment_is_refunded_automatically(client, ctx, buyer, published_product,
                                                               fake_channel):
    order = _order(client, buyer, published_product["id"])
    first, second = _pay(client, buyer, order["id"]), _pay(client, buyer, order["id"])
    _notify(client, fake_channel, first)
    _notify(client, fake_channel, second)
    with ctx.db.transaction(write=False) as session:
        refund = session.scalars(select(Refund)).one()
        assert (refund.payment_id, refund.amount, refund.kind, refund.status) == (
            second["id"], 9900, "duplicate_payment", "pending")
    assert process_pending_refunds(ctx) == 1
    assert process_pending_refunds(ctx) == 0
    assert fake_channel.count("refund") == 1
    with ctx.db.transaction(write=False) as session:
        assert session.scalars(select(Refund.status)).one() == "succeeded"
        assert balance_of(session, "refunds_due:cny") == 0
        assert balance_of(session, "clearing:sandbox:cny") == 9900 - 59
        assert session.scalar(select(func.count()).select_from(Entitlement)) == 1
        assert verify_ledger(session).ok


def test_expiry_closes_the_channel_trade_first_and_a_paid_trade_wins(client, ctx, buyer, published_product,
                                                                      fake_channel):
    from datetime import timedelta

    paid_order = _order(client, buyer, published_product["id"])
    paid_payment = _pay(client, buyer, paid_order["id"])
    unpaid_order = _order(client, buyer, published_product["id"])
    unpaid_payment = _pay(client, buyer, unpaid_order["id"])
    fake_channel.trades[paid_payment["id"]]["status"] = "succeeded"  # paid, but the notification was lost
    ctx.clock = LaterClock(ctx.clock, timedelta(seconds=ctx.settings.order_ttl_seconds + 1))
    assert expire_due_orders(ctx) == 1
    assert fake_channel.count("close") == 2
    get = lambda path: client.get(path, headers=buyer.headers).get_json()  # noqa: E731
    assert get(f"/api/v1/orders/{paid_order['id']}")["status"] == "paid"
    assert get(f"/api/v1/payments/{paid_payment['id']}")["status"] == "succeeded"
    assert get(f"/api/v1/orders/{unpaid_order['id']}")["status"] == "expired"
    assert get(f"/api/v1/payments/{unpaid_payment['id']}")["status"] == "expired"
    # a paid notification for the expired attempt now is money to give back, not a second sale
    _notify(client, fake_channel, unpaid_payment)
    with ctx.db.transaction(write=False) as session:
        assert session.scalars(select(Refund.kind)).one() == "duplicate_payment"


def test_querying_the_channel_completes_a_payment_whose_notification_was_lost(client, ctx, buyer,
                                                                              published_product, fake_channel):
    from datetime import timedelta

    order = _order(client, buyer, published_product["id"])
    payment = _pay(client, buyer, order["id"])
    assert query_pending_payments(ctx) == 0  # not due yet
    ctx.clock = LaterClock(ctx.clock, timedelta(seconds=31))
    assert query_pending_payments(ctx) == 0  # due, still unpaid: asked and rescheduled
    assert fake_channel.count("query") == 1
    fake_channel.trades[payment["id"]]["status"] = "succeeded"
    ctx.clock = LaterClock(ctx.clock, timedelta(seconds=61))
    assert query_pending_payments(ctx) == 1
    assert client.get(f"/api/v1/orders/{order['id']}", headers=buyer.headers).get_json()["status"] == "paid"


