"""Refunds through the API: partial and repeated, never more than paid, within the policy, exact ledger."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import select

from knowpay.ledger.service import balance_of, verify_ledger
from knowpay.refunds.models import Refund
from tests.fakes import buy


def test_partial_refunds_reverse_the_ledger_exactly_and_a_full_one_revokes_access(
        client, ctx, buyer, creator, published_product, fake_channel):
    payment = buy(client, buyer, published_product["id"], fake_channel)
    first = client.post("/api/v1/refunds", headers=buyer.headers,
                        json={"payment_id": payment["id"], "amount": 3333, "reason": "changed my mind"})
    assert first.status_code == 201, first.get_json()
    assert (first.get_json()["status"], first.get_json()["amount"]) == ("succeeded", 3333)
    order = client.get(f"/api/v1/orders/{payment['order_id']}", headers=buyer.headers).get_json()
    assert (order["status"], order["amount_refunded"]) == ("partially_refunded", 3333)
    assert client.get("/api/v1/entitlements", headers=buyer.headers).get_json()["data"][0]["status"] == "active"

    rest = client.post("/api/v1/refunds", headers=buyer.headers, json={"payment_id": payment["id"]})
    assert rest.status_code == 201 and rest.get_json()["amount"] == 9900 - 3333
    order = client.get(f"/api/v1/orders/{payment['order_id']}", headers=buyer.headers).get_json()
    assert (order["status"], order["amount_refunded"]) == ("refunded", 9900)
    assert client.get("/api/v1/entitlements", headers=buyer.headers).get_json()["data"][0]["status"] == "revoked"
    with ctx.db.transaction(write=False) as session:
        # fully refunded: every capture account is back to zero, to the fen
        for code in ("clearing:sandbox:cny", f"creator:{creator.id}:pending:cny", "platform:fees:cny",
                     "channel_fees:sandbox:cny"):
            assert balance_of(session, code) == 0, code
        assert verify_ledger(session).ok
    over = client.post("/api/v1/refunds", headers=buyer.headers, json={"payment_id": payment["id"], "amount": 1})
    assert over.status_code == 409 and over.get_json()["error"]["code"] == "refund_exceeds_payment"


def test_the_first_partial_refund_splits_by_the_capture(client, ctx, buyer, creator, published_product,
                                                        fake_channel):
    payment = buy(client, buyer, published_product["id"], fake_channel)
    client.post("/api/v1/refunds", headers=buyer.headers, json={"payment_id": payment["id"], "amount": 990})
    with ctx.db.transaction(write=False) as session:
        # 990 of 9900 is 10%: creator 8910 → 8019, platform 990 → 891, channel fee 59 → 54 (floor 5.9 → 5)
        assert balance_of(session, f"creator:{creator.id}:pending:cny") == 8910 - 891
        assert balance_of(session, "platform:fees:cny") == 990 - 99
        assert balance_of(session, "channel_fees:sandbox:cny") == 59 - 5
        assert balance_of(session, "clearing:sandbox:cny") == 9841 - 985


def test_buyer_cannot_refund_after_the_window_but_support_can_with_a_reason(client, ctx, buyer, make_user,
                                                                           published_product, fake_channel):
    payment = buy(client, buyer, published_product["id"], fake_channel)
    base = ctx.clock
    ctx.clock = type("Later", (), {"now": lambda self: base.now() + timedelta(days=8)})()
    token = client.post("/api/v1/auth/token", json={"email": buyer.email, "password": "correct-horse-9"})
    headers = {"Authorization": f"Bearer {token.get_json()['access_token']}"}
    late = client.post("/api/v1/refunds", headers=headers, json={"payment_id": payment["id"]})
    assert late.status_code == 409 and late.get_json()["error"]["code"] == "refund_window_closed"
    support = make_user("support", second_factor=True)
    no_reason = client.post("/api/v1/refunds", headers=support.headers, json={"payment_id": payment["id"]})
    assert no_reason.status_code == 400 and no_reason.get_json()["error"]["param"] == "reason"
    done = client.post("/api/v1/refunds", headers=support.headers,
                       json={"payment_id": payment["id"], "reason": "course was broken"})
    assert done.status_code == 201 and done.get_json()["status"] == "succeeded"


def test_refunds_of_a_wallet_payment_return_coins(client, ctx, buyer, creator, admin, fake_channel):
    def product(who, **fields):
        made = client.post("/api/v1/products", headers=who.headers, json={"currency": "cny", **fields}).get_json()
        return client.post(f"/api/v1/products/{made['id']}/publish", headers=who.headers).get_json()

    pack = product(admin, title="coins", kind="coin_pack", amount=5000, coins=5000)
    course = product(creator, title="course", kind="course", amount=3000)
    buy(client, buyer, pack["id"], fake_channel)
    payment = buy(client, buyer, course["id"], fake_channel, channel="wallet")
    assert client.get("/api/v1/wallet", headers=buyer.headers).get_json()["balance"] == 2000
    done = client.post("/api/v1/refunds", headers=buyer.headers, json={"payment_id": payment["id"]})
    assert done.status_code == 201 and done.get_json()["status"] == "succeeded"
    assert client.get("/api/v1/wallet", headers=buyer.headers).get_json()["balance"] == 5000


def test_someone_elses_payment_cannot_be_refunded_or_seen(client, make_user, buyer, published_product,
                                                          fake_channel):
    payment = buy(client, buyer, published_product["id"], fake_channel)
    stranger = make_user("buyer")
    answer = client.post("/api/v1/refunds", headers=stranger.headers, json={"payment_id": payment["id"]})
    assert answer.status_code == 404
    mine = client.post("/api/v1/refunds", headers=buyer.headers, json={"payment_id": payment["id"], "amount": 100})
    assert client.get(f"/api/v1/refunds/{mine.get_json()['id']}", headers=stranger.headers).status_code == 404
    listed = client.get(f"/api/v1/refunds?payment_id={payment['id']}", headers=stranger.headers).get_json()
    assert listed["data"] == []


def test_eight_concurrent_refunds_of_2000_on_9900_at_most_four_succeed(app, client, ctx, buyer,
                                                                        published_product, fake_channel):
    payment = buy(client, buyer, published_product["id"], fake_channel)
    statuses: list[int] = []
    barrier = threading.Barrier(8)

    def ask() -> None:
        own = app.test_client()
        barrier.wait()
        answer = own.post("/api/v1/refunds", headers=buyer.headers,
                          json={"payment_id": payment["id"], "amount": 2000})
        statuses.append(answer.status_code)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201] * 4 + [409] * 4
    with ctx.db.transaction(write=False) as session:
        assert sum(session.scalars(select(Refund.amount))) == 8000
        assert verify_ledger(session).ok


def test_a_refund_made_in_the_channels_dashboard_is_recorded_not_lost(client, ctx, buyer, published_product,
                                                                      fake_channel):
    from knowpay.invariants import check_invariants

    payment = buy(client, buyer, published_product["id"], fake_channel)
    body = fake_channel.notification_body(payment["id"], 9900, kind="refund", refund_id="dashboard-refund-1",
                                          event_id="evt_dash_1")
    first = client.post("/notify/sandbox", data=body, content_type="application/json")
    again = client.post("/notify/sandbox", data=body, content_type="application/json")
    assert first.status_code == again.status_code == 200
    with ctx.db.transaction(write=False) as session:
        refunds = list(session.scalars(select(Refund)))
    assert [(r.kind, r.amount, r.status) for r in refunds] == [("external", 9900, "succeeded")]
    order = client.get(f"/api/v1/orders/{payment['order_id']}", headers=buyer.headers).get_json()
    assert order["status"] == "refunded"
    assert client.get("/api/v1/entitlements", headers=buyer.headers).get_json()["data"][0]["status"] == "revoked"
    assert check_invariants(ctx).ok


def test_a_pending_refund_notification_changes_nothing(client, ctx, buyer, published_product, fake_channel):
    payment = buy(client, buyer, published_product["id"], fake_channel)
    refund = client.post("/api/v1/refunds", headers=buyer.headers,
                         json={"payment_id": payment["id"], "amount": 100}).get_json()
    body = fake_channel.notification_body(payment["id"], 100, kind="refund", refund_id=refund["id"],
                                          status="pending")
    assert client.post("/notify/sandbox", data=body, content_type="application/json").status_code == 200
    assert client.get(f"/api/v1/refunds/{refund['id']}", headers=buyer.headers).get_json()["status"] == "succeeded"


def test_a_staff_refund_needs_a_second_factor(client, buyer, make_user, published_product, fake_channel):
    payment = buy(client, buyer, published_product["id"], fake_channel)
    body = {"payment_id": payment["id"], "reason": "duplicate purchase"}
    refused = client.post("/api/v1/refunds", headers=make_user("support").headers, json=body)
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "two_factor_not_enabled"
    assert client.post("/api/v1/refunds", headers=make_user("support", second_factor=True).headers,
                       json=body).status_code == 201
