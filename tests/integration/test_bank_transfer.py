"""Bank transfer: account and reference handed out, the order held for days, an admin records what
arrived; only the exact amount captures, anything else is flagged and changes no money."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from knowpay.ledger.service import balance_of, verify_ledger
from knowpay.payments.maintenance import expire_due_orders
from knowpay.refunds.models import Refund
from knowpay.security.models import AuditEntry


def _transfer_payment(client, buyer, product_id) -> dict:
    order = client.post("/api/v1/orders", headers=buyer.headers, json={"items": [{"product_id": product_id}]})
    payment = client.post(f"/api/v1/orders/{order.get_json()['id']}/payments", headers=buyer.headers,
                          json={"channel": "bank_transfer"})
    assert payment.status_code == 201, payment.get_json()
    return payment.get_json()


def test_transfer_action_gives_account_and_reference_and_holds_the_order(client, buyer, published_product):
    payment = _transfer_payment(client, buyer, published_product["id"])
    action = payment["action"]
    assert action["type"] == "bank_transfer"
    assert action["reference"].startswith("KP-") and action["reference"] == payment["channel_trade_no"]
    assert action["account"] == {"name": "KnowPay Test Ltd", "number": "6222 1111 2222 3333", "bank": "Test Bank"}
    order = client.get(f"/api/v1/orders/{payment['order_id']}", headers=buyer.headers).get_json()
    created, expires = (datetime.fromisoformat(order[k].rstrip("Z")) for k in ("created_at", "expires_at"))
    assert expires - created >= timedelta(days=3) - timedelta(seconds=5)


def test_only_the_exact_amount_captures(client, ctx, buyer, admin, published_product):
    payment = _transfer_payment(client, buyer, published_product["id"])
    ref = payment["action"]["reference"]
    record = lambda **body: client.post("/api/v1/bank-transfers", headers=admin.headers, json=body)  # noqa: E731
    assert record(reference=ref, amount=100).get_json()["outcome"] == "partial"
    assert record(reference=ref, amount=99999).get_json()["outcome"] == "excess"
    assert record(reference="KP-NOPE-NOPE", amount=9900).get_json()["outcome"] == "unknown_reference"
    assert client.get(f"/api/v1/payments/{payment['id']}", headers=buyer.headers).get_json()["status"] == \
        "requires_action"
    captured = record(reference=ref.lower(), amount=9900, note="ICBC statement line 42")
    assert captured.status_code == 201 and captured.get_json()["outcome"] == "captured"
    assert client.get(f"/api/v1/orders/{payment['order_id']}", headers=buyer.headers).get_json()["status"] == "paid"
    assert record(reference=ref, amount=9900).get_json()["outcome"] == "not_payable"
    assert client.post("/api/v1/bank-transfers", headers=buyer.headers,
                       json={"reference": ref, "amount": 1}).status_code == 403
    with ctx.db.transaction(write=False) as session:
        assert balance_of(session, "clearing:bank_transfer:cny") == 9900
        assert verify_ledger(session).ok


def test_a_bank_transfer_refund_completes_when_an_admin_marks_it_sent(client, ctx, buyer, admin, published_product):
    payment = _transfer_payment(client, buyer, published_product["id"])
    client.post("/api/v1/bank-transfers", headers=admin.headers,
                json={"reference": payment["action"]["reference"], "amount": 9900})
    refund = client.post("/api/v1/refunds", headers=buyer.headers, json={"payment_id": payment["id"]}).get_json()
    assert refund["status"] == "pending"
    assert client.post(f"/api/v1/refunds/{refund['id']}/mark-sent", headers=buyer.headers).status_code == 403
    sent = client.post(f"/api/v1/refunds/{refund['id']}/mark-sent", headers=admin.headers)
    assert sent.status_code == 200 and sent.get_json()["status"] == "succeeded"
    assert client.post(f"/api/v1/refunds/{refund['id']}/mark-sent", headers=admin.headers).status_code == 409
    with ctx.db.transaction(write=False) as session:
        assert session.scalars(select(Refund.status)).one() == "succeeded"
        assert balance_of(session, "clearing:bank_transfer:cny") == 0


def test_an_unconfirmed_transfer_expires_after_its_days(client, ctx, buyer, published_product):
    payment = _transfer_payment(client, buyer, published_product["id"])
    base = ctx.clock
    ctx.clock = type("Later", (), {"now": lambda self: base.now() + timedelta(days=1)})()
    assert expire_due_orders(ctx) == 0
    ctx.clock = type("Later", (), {"now": lambda self: base.now() + timedelta(days=3, minutes=1)})()
    assert expire_due_orders(ctx) == 1
    with ctx.db.transaction(write=False) as session:
        from knowpay.payments.models import Payment

        assert session.get(Payment, payment["id"]).status == "expired"


def test_recording_transfers_and_sending_refunds_by_hand_need_a_second_factor_and_are_audited(
        client, ctx, buyer, admin, make_user, published_product):
    payment = _transfer_payment(client, buyer, published_product["id"])
    body = {"reference": payment["action"]["reference"], "amount": 9900}
    plain = make_user("admin")
    refused = client.post("/api/v1/bank-transfers", headers=plain.headers, json=body)
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "two_factor_not_enabled"
    receipt = client.post("/api/v1/bank-transfers", headers=admin.headers, json=body).get_json()
    refund = client.post("/api/v1/refunds", headers=buyer.headers, json={"payment_id": payment["id"]}).get_json()
    assert client.post(f"/api/v1/refunds/{refund['id']}/mark-sent", headers=plain.headers).status_code == 403
    assert client.post(f"/api/v1/refunds/{refund['id']}/mark-sent", headers=admin.headers).status_code == 200
    with ctx.db.transaction(write=False) as session:
        entries = session.execute(select(AuditEntry.actor_id, AuditEntry.action, AuditEntry.target).where(
            AuditEntry.action.in_(("bank_transfer.recorded", "refund.requested", "refund.marked_sent")))
            .order_by(AuditEntry.seq)).all()
    assert entries == [(admin.id, "bank_transfer.recorded", receipt["id"]), (buyer.id, "refund.requested", refund["id"]),
                       (admin.id, "refund.marked_sent", refund["id"])]
