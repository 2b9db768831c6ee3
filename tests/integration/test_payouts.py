"""Settlement and payouts: pending → available after the period, payouts held, approved, paid, rejected."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from knowpay.accounts import totp
from knowpay.ledger.service import verify_ledger
from knowpay.payouts.models import PayoutAccount
from knowpay.payouts.settlement import settle_due_earnings
from knowpay.risk.models import RiskDecision
from knowpay.security.audit import verify_chain
from knowpay.security.models import AuditEntry
from tests.fakes import LaterClock, buy


def _fresh_headers(client, who, clock) -> dict:
    """Sign in again (the first token has expired by now), with the second factor when `who` has one."""
    login = {"email": who.email, "password": "correct-horse-9"}
    if who.totp_secret:
        login["otp"] = totp.current_code(who.totp_secret, clock)
    token = client.post("/api/v1/auth/token", json=login).get_json()
    return {"Authorization": f"Bearer {token['access_token']}"}


def _earnings(client, headers) -> dict:
    return client.get("/api/v1/creator/earnings", headers=headers).get_json()


def test_earnings_settle_after_the_period_and_a_payout_goes_through(client, ctx, buyer, creator, admin,
                                                                   published_product, fake_channel):
    buy(client, buyer, published_product["id"], fake_channel)
    assert _earnings(client, creator.headers) == {"pending": 8910, "available": 0, "in_payout": 0, "paid_out": 0,
                                                  "currency": "cny"}
    assert settle_due_earnings(ctx) == 0  # still inside the 7-day period
    ctx.clock = LaterClock(ctx.clock, timedelta(days=7, seconds=1))
    assert settle_due_earnings(ctx) == 1
    assert settle_due_earnings(ctx) == 0
    creator_h, admin_h = _fresh_headers(client, creator, ctx.clock), _fresh_headers(client, admin, ctx.clock)
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
    buy(client, buyer, published_product["id"], fake_channel)
    ctx.clock = LaterClock(ctx.clock, timedelta(days=8))
    settle_due_earnings(ctx)
    creator_h, admin_h = _fresh_headers(client, creator, ctx.clock), _fresh_headers(client, admin, ctx.clock)
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
    payment = buy(client, buyer, published_product["id"], fake_channel)
    ctx.clock = LaterClock(ctx.clock, timedelta(days=8))
    settle_due_earnings(ctx)
    creator_h, support_h = _fresh_headers(client, creator, ctx.clock), _fresh_headers(client, admin, ctx.clock)
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
    payment = buy(client, buyer, published_product["id"], fake_channel)
    client.post("/api/v1/refunds", headers=buyer.headers, json={"payment_id": payment["id"], "amount": 990})
    assert _earnings(client, creator.headers)["pending"] == 8910 - 891
    ctx.clock = LaterClock(ctx.clock, timedelta(days=8))
    settle_due_earnings(ctx)
    earned = _earnings(client, _fresh_headers(client, creator, ctx.clock))
    assert (earned["pending"], earned["available"]) == (0, 8019)


def _requested_payout(client, ctx, buyer, creator, product_id, fake_channel) -> dict:
    buy(client, buyer, product_id, fake_channel)
    ctx.clock = LaterClock(ctx.clock, timedelta(days=8))
    settle_due_earnings(ctx)
    creator_h = _fresh_headers(client, creator, ctx.clock)
    client.put("/api/v1/creator/payout-account", headers=creator_h,
               json={"holder_name": "A", "bank_name": "B", "account_number": "12345678"})
    return client.post("/api/v1/payouts", headers=creator_h, json={"amount": 8910}).get_json()


def test_payout_decisions_need_a_recent_second_factor(client, ctx, buyer, creator, make_user, published_product,
                                                      fake_channel):
    payout = _requested_payout(client, ctx, buyer, creator, published_product["id"], fake_channel)
    approve = f"/api/v1/payouts/{payout['id']}/approve"
    without = make_user("admin")
    refused = client.post(approve, headers=_fresh_headers(client, without, ctx.clock))
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "two_factor_not_enabled"

    admin = make_user("admin", second_factor=True)
    ctx.clock = LaterClock(ctx.clock, timedelta(seconds=ctx.settings.step_up_seconds + 60))
    stale = _fresh_headers(client, admin, ctx.clock)  # signed in with the code, then time passes
    ctx.clock = LaterClock(ctx.clock, timedelta(seconds=ctx.settings.step_up_seconds + 60))
    for path, body in ((approve, None), (f"/api/v1/payouts/{payout['id']}/reject", {"reason": "x"}),
                       (f"/api/v1/payouts/{payout['id']}/mark-paid", {})):
        answer = client.post(path, headers=stale, json=body)
        assert answer.status_code == 403 and answer.get_json()["error"]["code"] == "second_factor_required", path
    wrong = client.post(approve, headers={**stale, "KnowPay-OTP": "000000"})
    assert wrong.status_code == 401 and wrong.get_json()["error"]["code"] == "invalid_otp"
    code = totp.current_code(admin.totp_secret, ctx.clock)
    approved = client.post(approve, headers={**stale, "KnowPay-OTP": code})
    assert approved.status_code == 200 and approved.get_json()["status"] == "approved"
    # The code counted as a step-up for this token: the next decision needs no code.
    paid = client.post(f"/api/v1/payouts/{payout['id']}/mark-paid", headers=stale, json={"reference": "TX-9"})
    assert paid.status_code == 200 and paid.get_json()["status"] == "paid"


def test_payout_steps_are_in_the_audit_log(client, ctx, buyer, creator, admin, published_product, fake_channel):
    payout = _requested_payout(client, ctx, buyer, creator, published_product["id"], fake_channel)
    admin_h = _fresh_headers(client, admin, ctx.clock)
    client.post(f"/api/v1/payouts/{payout['id']}/approve", headers=admin_h)
    client.post(f"/api/v1/payouts/{payout['id']}/mark-paid", headers=admin_h, json={"reference": "TX-2"})
    with ctx.db.transaction(write=False) as session:
        entries = session.execute(select(AuditEntry.actor_id, AuditEntry.action).where(
            AuditEntry.action.like("payout.%")).order_by(AuditEntry.seq)).all()
        assert verify_chain(session).ok
    assert entries == [(creator.id, "payout.account_set"), (creator.id, "payout.requested"),
                       (admin.id, "payout.approved"), (admin.id, "payout.marked_paid")]


def test_a_payout_in_risk_review_cannot_be_approved_until_the_review_is_decided(client, ctx, buyer, creator, admin,
                                                                                published_product, fake_channel):
    payout = _requested_payout(client, ctx, buyer, creator, published_product["id"], fake_channel)
    with ctx.db.transaction() as session:
        session.add(RiskDecision(subject="payout", user_id=creator.id, payout_id=payout["id"], amount=8910,
                                 currency="cny", outcome="review", shadow_outcome="review", inputs={}, features={},
                                 fired=[], shadow_scores=[], faults=[], review_status="pending",
                                 created_at=ctx.clock.now()))
    admin_h = _fresh_headers(client, admin, ctx.clock)
    held = client.post(f"/api/v1/payouts/{payout['id']}/approve", headers=admin_h)
    assert held.status_code == 409 and held.get_json()["error"]["code"] == "payout_in_review"
    with ctx.db.transaction() as session:
        session.execute(update(RiskDecision).where(RiskDecision.payout_id == payout["id"])
                        .values(review_status="approved"))
    assert client.post(f"/api/v1/payouts/{payout['id']}/approve", headers=admin_h).get_json()["status"] == "approved"
