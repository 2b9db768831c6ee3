"""Coins: bought as a coin pack (with bonus from promotion), spent with channel `wallet`, never overdrawn."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from knowpay.ledger.service import balance_of, verify_ledger
from knowpay.payments.models import Payment


def _product(client, creator, **fields) -> dict:
    made = client.post("/api/v1/products", headers=creator.headers, json={"currency": "cny", **fields})
    assert made.status_code == 201, made.get_json()
    return client.post(f"/api/v1/products/{made.get_json()['id']}/publish", headers=creator.headers).get_json()


def _order(client, buyer, product_id) -> dict:
    made = client.post("/api/v1/orders", headers=buyer.headers, json={"items": [{"product_id": product_id}]})
    assert made.status_code == 201, made.get_json()
    return made.get_json()


def _top_up(client, buyer, pack, fake_channel) -> None:
    order = _order(client, buyer, pack["id"])
    payment = client.post(f"/api/v1/orders/{order['id']}/payments", headers=buyer.headers,
                          json={"channel": "sandbox"}).get_json()
    body = fake_channel.notification_body(payment["id"], payment["amount"])
    assert client.post("/notify/sandbox", data=body, content_type="application/json").status_code == 200


def test_a_coin_pack_credits_coins_and_bonus_and_coins_pay_for_a_course(client, ctx, buyer, creator, admin,
                                                                        fake_channel):
    pack = _product(client, admin, title="100 coins + 10", kind="coin_pack", amount=10000, coins=10000,
                    bonus_coins=1000)
    course = _product(client, creator, title="Course", kind="course", amount=9900)
    _top_up(client, buyer, pack, fake_channel)
    assert client.get("/api/v1/wallet", headers=buyer.headers).get_json() == {"balance": 11000, "currency": "coin"}

    order = _order(client, buyer, course["id"])
    paid = client.post(f"/api/v1/orders/{order['id']}/payments", headers=buyer.headers, json={"channel": "wallet"})
    assert paid.status_code == 201, paid.get_json()
    assert paid.get_json()["status"] == "succeeded" and paid.get_json()["action"] is None
    assert client.get("/api/v1/wallet", headers=buyer.headers).get_json()["balance"] == 1100
    with ctx.db.transaction(write=False) as session:
        assert balance_of(session, "promotion:cny") == 1000
        assert balance_of(session, f"creator:{creator.id}:pending:cny") == 8910
        assert verify_ledger(session).ok


def test_too_few_coins_is_declined_with_402_and_writes_nothing(client, ctx, buyer, creator):
    course = _product(client, creator, title="Course", kind="course", amount=9900)
    order = _order(client, buyer, course["id"])
    answer = client.post(f"/api/v1/orders/{order['id']}/payments", headers=buyer.headers, json={"channel": "wallet"})
    assert answer.status_code == 402
    assert answer.get_json()["error"]["type"] == "payment_declined"
    assert answer.get_json()["error"]["code"] == "insufficient_balance"
    with ctx.db.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(Payment)) == 0
    assert client.get(f"/api/v1/orders/{order['id']}", headers=buyer.headers).get_json()["status"] == "pending"


def test_coins_cannot_buy_coins(client, buyer, admin):
    pack = _product(client, admin, title="coins", kind="coin_pack", amount=1000, coins=1000)
    order = _order(client, buyer, pack["id"])
    answer = client.post(f"/api/v1/orders/{order['id']}/payments", headers=buyer.headers, json={"channel": "wallet"})
    assert answer.status_code == 400 and answer.get_json()["error"]["param"] == "channel"


def test_twenty_concurrent_wallet_spends_never_overdraw(app, client, ctx, buyer, creator, admin, fake_channel):
    pack = _product(client, admin, title="coins", kind="coin_pack", amount=10000, coins=10000)
    _top_up(client, buyer, pack, fake_channel)  # 10000 coins: enough for 5 courses of 2000
    course_ids = [_product(client, creator, title=f"C{i}", kind="course", amount=2000)["id"] for i in range(20)]
    orders = [_order(client, buyer, pid)["id"] for pid in course_ids]
    statuses: list[int] = []
    barrier = threading.Barrier(len(orders))

    def spend(order_id: str) -> None:
        own = app.test_client()
        barrier.wait()
        answer = own.post(f"/api/v1/orders/{order_id}/payments", headers=buyer.headers, json={"channel": "wallet"})
        statuses.append(answer.status_code)

    threads = [threading.Thread(target=spend, args=(oid,)) for oid in orders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201] * 5 + [402] * 15
    assert client.get("/api/v1/wallet", headers=buyer.headers).get_json()["balance"] == 0
    with ctx.db.transaction(write=False) as session:
        assert verify_ledger(session).ok
