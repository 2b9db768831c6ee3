"""Races the payment flow must survive: duplicate notifications at once, expiry against payment."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import func, select

from knowpay.access.models import Entitlement
from knowpay.ledger.models import JournalTransaction
from knowpay.ledger.service import verify_ledger
from knowpay.payments.maintenance import expire_order
from knowpay.payments.models import ChannelNotification
from knowpay.refunds.models import Refund
from tests.fakes import LaterClock


def _run_together(n: int, target) -> list:
    results: list = [None] * n
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = target(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _pending_payment(client, buyer, product_id) -> tuple[dict, dict]:
    order = client.post("/api/v1/orders", headers=buyer.headers, json={"items": [{"product_id": product_id}]})
    payment = client.post(f"/api/v1/orders/{order.get_json()['id']}/payments", headers=buyer.headers,
                          json={"channel": "sandbox"})
    assert payment.status_code == 201, payment.get_json()
    return order.get_json(), payment.get_json()


def test_thirty_concurrent_duplicate_notifications_capture_once(app, client, ctx, buyer, published_product,
                                                                fake_channel):
    _, payment = _pending_payment(client, buyer, published_product["id"])
    body = fake_channel.notification_body(payment["id"], payment["amount"])

    def deliver(_i: int) -> tuple[int, str]:
        answer = app.test_client().post("/notify/sandbox", data=body, content_type="application/json")
        return answer.status_code, answer.get_data(as_text=True)

    answers = _run_together(30, deliver)
    assert answers == [(200, "success")] * 30
    with ctx.db.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(JournalTransaction)
                              .where(JournalTransaction.kind == "capture")) == 1
        assert session.scalar(select(func.count()).select_from(Entitlement)) == 1
        notes = list(session.scalars(select(ChannelNotification.status)))
        assert sorted(notes) == ["duplicate"] * 29 + ["processed"]
        assert verify_ledger(session).ok


def test_expiry_racing_a_successful_payment_ends_consistent_either_way(app, client, ctx, buyer,
                                                                       published_product, fake_channel):
    rounds = 6
    pairs = [_pending_payment(client, buyer, published_product["id"]) for _ in range(rounds)]
    ctx.clock = LaterClock(ctx.clock, timedelta(seconds=ctx.settings.order_ttl_seconds + 5))
    for order, payment in pairs:
        fake_channel.trades[payment["id"]]["status"] = "pending"
        body = fake_channel.notification_body(payment["id"], payment["amount"])

        def race(i: int, order=order, body=body):
            if i == 0:
                return expire_order(ctx, order["id"])
            return app.test_client().post("/notify/sandbox", data=body, content_type="application/json").status_code

        _run_together(2, race)
    with ctx.db.transaction(write=False) as session:
        assert verify_ledger(session).ok
    for order, payment in pairs:
        got_order = client.get(f"/api/v1/orders/{order['id']}", headers=buyer.headers).get_json()
        got_payment = client.get(f"/api/v1/payments/{payment['id']}", headers=buyer.headers).get_json()
        assert got_payment["status"] == "succeeded"  # the channel has the money, so the payment succeeded
        with ctx.db.transaction(write=False) as session:
            refunds = session.scalar(select(func.count()).select_from(Refund).where(Refund.payment_id == payment["id"]))
            access = session.scalar(select(func.count()).select_from(Entitlement)
                                    .where(Entitlement.order_id == order["id"]))
        if got_order["status"] == "paid":
            assert (refunds, access) == (0, 1)
        else:
            assert got_order["status"] == "expired"
            assert (refunds, access) == (1, 0)  # money received for a closed order goes back
