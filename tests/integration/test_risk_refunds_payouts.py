"""Risk in front of refund requests and payout requests."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from knowpay.accounts.models import User
from knowpay.domain.errors import RiskBlocked
from knowpay.payouts import service as payouts
from knowpay.payouts.models import Payout
from knowpay.payouts.settlement import settle_due_earnings
from knowpay.refunds.models import Refund
from knowpay.risk.models import RiskDecision
from knowpay.risk.service import add_list_entry, reject_review, update_rule
from tests.fakes import buy


class _Later:
    def __init__(self, base, delta) -> None:
        self.base, self.delta = base, delta

    def now(self):
        return self.base.now() + self.delta


def _user(ctx, caller) -> User:
    with ctx.db.transaction(write=False) as session:
        user = session.get(User, caller.id)
        _ = user.roles
        return user


def test_a_refund_request_held_for_review_is_sent_only_when_approved(client, ctx, admin, buyer, published_product,
                                                                     fake_channel):
    payment = buy(client, buyer, published_product["id"], fake_channel)
    client.patch("/api/v1/risk/rules/refund_abuse", headers=admin.headers,
                 json={"params": {"min_refunds": 1, "max_rate_percent": 0}})

    held = client.post("/api/v1/refunds", headers=buyer.headers,
                       json={"payment_id": payment["id"], "amount": 5000, "reason": "not what I expected"})

    assert held.status_code == 403
    assert (held.get_json()["error"]["type"], held.get_json()["error"]["code"]) == ("risk_blocked", "risk_review")
    assert fake_channel.count("refund") == 0
    with ctx.db.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(Refund)) == 0
    [review] = client.get("/api/v1/risk/reviews", headers=admin.headers).get_json()["data"]
    assert (review["subject"], review["payment_id"], review["request"]["amount"]) == ("refund", payment["id"], 5000)
    assert review["fired"][0]["reason"] == "1 refunded of 1 paid (max 0%)"

    approved = client.post(f"/api/v1/risk/reviews/{review['id']}/approve", headers=admin.headers, json={})

    assert approved.status_code == 200, approved.get_json()
    assert approved.get_json()["refund_id"]
    assert fake_channel.count("refund") == 1
    refund = client.get(f"/api/v1/refunds/{approved.get_json()['refund_id']}", headers=buyer.headers).get_json()
    assert (refund["status"], refund["amount"]) == ("succeeded", 5000)


def test_a_blocked_refund_request_records_nothing_and_staff_refunds_are_not_assessed(client, ctx, admin, buyer,
                                                                                     published_product,
                                                                                     fake_channel):
    payment = buy(client, buyer, published_product["id"], fake_channel)
    client.post("/api/v1/risk/lists/email/entries", headers=admin.headers, json={"value": buyer.email})
    refused = client.post("/api/v1/refunds", headers=buyer.headers, json={"payment_id": payment["id"]})
    assert (refused.status_code, refused.get_json()["error"]["code"]) == (403, "risk_blocked")
    assert fake_channel.count("refund") == 0
    by_staff = client.post("/api/v1/refunds", headers=admin.headers,
                           json={"payment_id": payment["id"], "reason": "goodwill"})
    assert by_staff.status_code == 201 and fake_channel.count("refund") == 1
    with ctx.db.transaction(write=False) as session:
        outcomes = [(d.subject, d.outcome) for d in session.scalars(select(RiskDecision).order_by(
            RiskDecision.created_at))]
    assert outcomes == [("payment", "allow"), ("refund", "block")]


@pytest.fixture
def creator_with_earnings(client, ctx, creator, buyer, published_product, fake_channel):
    buy(client, buyer, published_product["id"], fake_channel)
    ctx.clock = _Later(ctx.clock, timedelta(days=8))
    assert settle_due_earnings(ctx) == 1
    user = _user(ctx, creator)
    with ctx.db.transaction() as session:
        payouts.set_payout_account(session, ctx, creator=user, holder_name="Li", bank_name="Bank",
                                   account_number="6225 0000 1111")
    return user


def test_a_blocked_payout_request_holds_no_money(ctx, creator_with_earnings):
    creator = creator_with_earnings
    add_list_entry(ctx, kind="email", value=creator.email, reason="mule account", actor_id=None)
    with pytest.raises(RiskBlocked), ctx.db.transaction() as session:
        payouts.request_payout(session, ctx, creator=creator, amount=5000)
    with ctx.db.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(Payout)) == 0
        assert payouts.earnings(session, creator.id, "cny").available == 8910
        assert session.scalars(select(RiskDecision.outcome).where(RiskDecision.subject == "payout")).all() == [
            "block"]


def test_a_payout_in_review_is_held_and_a_rejected_review_gives_the_money_back(ctx, creator_with_earnings,
                                                                               make_user):
    creator = creator_with_earnings
    update_rule(ctx, "amount", actor_id=None, params={"max_amount": 1000})
    with ctx.db.transaction() as session:
        payout_id = payouts.request_payout(session, ctx, creator=creator, amount=5000).id
    with ctx.db.transaction(write=False) as session:
        decision = session.scalars(select(RiskDecision).where(RiskDecision.subject == "payout")).one()
        assert (decision.outcome, decision.payout_id, decision.review_status) == ("review", payout_id, "pending")
        assert payouts.earnings(session, creator.id, "cny").in_payout == 5000
    admin_caller = make_user("admin", second_factor=True)
    admin = _user(ctx, admin_caller)

    reject_review(ctx, decision_id=decision.id, admin=admin, note="bank account reported")

    with ctx.db.transaction(write=False) as session:
        assert session.get(Payout, payout_id).status == "rejected"
        found = payouts.earnings(session, creator.id, "cny")
        assert (found.available, found.in_payout) == (8910, 0)
