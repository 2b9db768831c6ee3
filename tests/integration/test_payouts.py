"""Settlement and payouts: pending → available after the period, payouts held, approved, paid, rejected."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from knowpay.ledger.service import verify_ledger
from knowpay.payouts.models import PayoutAccount
from knowpay.payouts.settlement import settle_due_earnings


class _Later:
    def __init__(self, base, delta) -> None:
        self.base, self.delta = base, delta

    def now(self):
        return self.base.now() + self.delta


def _sell(client, buyer, product_id, fake_channel) -> dict:
    order = client.post("/api/v1/orders", headers=buyer.headers, json={"items": [{"product_id": product_id}]})
    payment = client.post(f"/api/v1/orders/{order.get_json()['id']}/payments", headers=buyer.headers,
                          json={"channel": "sandbox"}).get_json()
    body = fake_channel.notification_body(payment["id"], payment["amount"])
    assert client.post("/notify/sandbox", data=body, content_type="application/json").status_code == 200
    return payment


def _fresh_headers(client, who) -> dict:
    token = client.post("/api/v1/auth/token", json={"email": who.email, "password": "correct-horse-9"}).get_json()
    return {"Authorization": f"Bearer {token['access_token']}"}


def _earnings(client, headers) -> dict:
    return client.get("/api/v1/creator/earnings", headers=headers).get_json()


def test_earnings_settle_after_the_period_and_a_payout_goes_through(client, ctx, buyer, creator, admin,
                                                                   published_product, fake_channel):
    _sell(client, buyer, published_product["id"], fake_channel)
    assert _earnings(client, creator.headers) == {"pending": 8910, "available": 0, "in_payout": 0, "paid_out": 0,
                                                  "currency": "cny"}
    assert settle_due_earnings(ctx) == 0  # still inside the 7-day period
    ctx.clock = _Later(ctx.clock, timedelta(days=7, seconds=1))
    assert settle_due_earnings(ctx) == 1
    assert settle_due_earnings(ctx) == 0
    creator_h, admin_h = _fresh_headers(client, creator), _fresh_headers(client, admin)
    assert _earnings(client, creator_h)["available"] == 8910

    missing = client.post("/api/v1/payouts", headers=creator_h, json={"amount": 5000})
    assert missing.status_code == 400 and missing.get_json()["error"]["code"] == "payout_account_missing"
    account = client.put("/api/v1/creator/payout-account", headers=creator_h,
                         json={"holder_name": "李老师", "bank_name": "招商银行", "account_number": "6225 8812 3456 7890"})
    assert account.status_code == 200 and account.get_json()["display"] == "招商银行 •••• 7890"
    with ctx.db.transaction(write=False) as session:
        stored = session.scalars(select(PayoutAccount.details_encrypted)).one()
        assert "7890" not in stored and "招商" not in stored and stored.startswith("kpe1:")

    too_much = client.post("/api/v1/payouts", headers=creator_h, json={"amount": 8911})
    assert too_much.status_code == 409 and too_much.get_json()["error"]["code"] == "payout_exceeds_available"
    payout = client.post("/api/v1/payouts", headers=creator_h, json={"amount": 5000}).get_json()
    assert payout["status"] == "requested" and payout["destination"] == "招商银行 •••• 7890"
    assert _earnings(client, creator_h) == {"pending": 0, "available": 3910, "in_payout": 5000, "paid_out": 0,
                                            "currency": "cny"}
    not_admin = client.post(f"/api/v1/payouts/{payout['id']}/approve", headers=creator_h)
    assert not_admin.status_code == 403
    early = client.post(f"/api/v1/payouts/{payout['id']}/mark-paid", headers=admin_h, json={})
    assert early.status_code == 409
    assert client.post(f"/api/v1/payouts/{payout['id']}/approve", headers=admin_h).get_json()["status"] == "approved"
    paid = client.post(f"/api/v1/payouts/{payout['id']}/mark-paid", headers=admin_h, json={"reference": "TX-1"})
    assert paid.get_json()["status"] == "paid"
    assert _earnings(client, creator_h) == {"pending": 0, "available": 3910, "in_payout": 0, "paid_out": 5000,
                                            "currency": "cny"}
    with ctx.db.transaction(write=False) as session:
        assert verify_ledger(session).ok


def test_a_rejected_payout_returns_to_available(client, ctx, buyer, creator, admin, published_product,
                                                fake_channel):
    _sell(client, buyer, published_product["id"], fake_channel)
    ctx.clock = _Later(ctx.clock, timedelta(days=8))
    settle_due_earnings(ctx)
    creator_h, admin_h = _fresh_headers(client, creator), _fresh_headers(client, admin)
    client.put("/api/v1/creator/payout-account", headers=creator_h,
               json={"holder_name": "A", "bank_name": "B", "account_number": "12345678"})
    payout = client.post("/api/v1/payouts", headers=creator_h, json={"amount": 8910}).get_json()
    no_reason = client.post(f"/api/v1/payouts/{payout['id']}/reject", headers=admin_h, json={"reason": ""})
    assert no_reason.status_code == 400
    rejected = client.post(f"/api/v1/payouts/{payout['id']}/reject", headers=admin_h,
                           json={"reason": "account name does not match"})
    assert rejected.get_json()["status"] == "rejected"
    assert _earnings(client, creator_h)["available"] == 8910


def test_a_refund_after_settlement_may_take_available_below_zero_and_says_so(client, ctx, buyer, creator, admin,
                                                                              published_product, fake_channel):
    payment = _sell(client, buyer, published_product["id"], fake_channel)
    ctx.clock = _Later(ctx.clock, timedelta(days=8))
    settle_due_earnings(ctx)
    creator_h, support_h = _fresh_headers(client, creator), _fresh_headers(client, admin)
    client.put("/api/v1/creator/payout-account", headers=creator_h,
               json={"holder_name": "A", "bank_name": "B", "account_number": "12345678"})
    client.post("/api/v1/payouts", headers=creator_h, json={"amount": 8910})
    refund = client.post("/api/v1/refunds", headers=support_h,
                         json={"payment_id": payment["id"], "reason": "chargeback"})
    assert refund.status_code == 201 and refund.get_json()["status"] == "succeeded"
    assert _earnings(client, creator_h)["available"] == -8910  # recovered from later earnings
    with ctx.db.transaction(write=False) as session:
        assert verify_ledger(session).ok


def test_a_refund_inside_the_period_reduces_pending_and_settlement_moves_only_the_rest(
        client, ctx, buyer, creator, published_product, fake_channel):
    payment = _sell(client, buyer, published_product["id"], fake_channel)
    client.post("/api/v1/refunds", headers=buyer.headers, json={"payment_id": payment["id"], "amount": 990})
    assert _earnings(client, creator.headers)["pending"] == 8910 - 891
    ctx.clock = _Later(ctx.clock, timedelta(days=8))
    settle_due_earnings(ctx)
    earned = _earnings(client, _fresh_headers(client, creator))
    assert (earned["pending"], earned["available"]) == (0, 8019)
