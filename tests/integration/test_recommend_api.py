"""Recommendations over the API on a small hand-made history whose answers are worked out below."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from knowpay.catalog.models import Product
from knowpay.orders.models import Order, OrderItem
from knowpay.recommend.models import RecommendItem, RecommendPair
from knowpay.recommend.service import refresh_recommendations
from tests.integration.test_support_tickets import buy


def make_product(ctx, creator_id: str, title: str, kind: str = "course", *, minutes: int = 0) -> str:
    """A published product, created `minutes` after the others (the newest come last in the fallback)."""
    now = ctx.clock.now() + timedelta(minutes=minutes)
    with ctx.db.transaction() as session:
        product = Product(creator_id=creator_id, title=title, description="", kind=kind, amount=9900, currency="cny",
                          status="published", refund_window_days=7, bonus_coins=0, created_at=now, updated_at=now)
        session.add(product)
        session.flush()
        return product.id


def sell(ctx, buyer_id: str, *product_ids: str, status: str = "paid") -> str:
    """A paid order of these products, written straight to the tables (the payment flow is tested elsewhere)."""
    now = ctx.clock.now()
    with ctx.db.transaction() as session:
        products = [session.get(Product, pid) for pid in product_ids]
        total = sum(p.amount for p in products)
        order = Order(buyer_id=buyer_id, status=status, currency="cny", amount_subtotal=total, amount_discount=0,
                      amount_total=total, amount_refunded=0, expires_at=now, paid_at=now, created_at=now, version=1)
        order.items = [OrderItem(position=i, product_id=p.id, creator_id=p.creator_id, title=p.title, kind=p.kind,
                                 amount=p.amount, quantity=1, amount_discount=0) for i, p in enumerate(products)]
        session.add(order)
        session.flush()
        return order.id


@pytest.fixture
def shop(ctx, make_user, creator):
    """Courses A–D and an unsold e-book E; seven buyers:

        u1: A B   u2: A B   u3: A C   u4: D   u5: D   u6: D   u7: A

    so A has 4 buyers, D 3, B 2, C 1. Buyers of A also bought B (2 of them) and C (1):
    B scores 2/√(4·2) · 2/(2+2) ≈ 0.35, C scores 1/√(4·1) · 1/(1+2) ≈ 0.17.
    """
    ids = {name: make_product(ctx, creator.id, f"Course {name}", minutes=i) for i, name in enumerate("ABCD")}
    ids["E"] = make_product(ctx, creator.id, "Ebook E", "ebook", minutes=4)
    users = {n: make_user("buyer") for n in range(1, 8)}
    for n, products in {1: "AB", 2: "AB", 3: "AC", 4: "D", 5: "D", 6: "D", 7: "A"}.items():
        sell(ctx, users[n].id, *(ids[p] for p in products))
    refresh_recommendations(ctx)
    return ids, users


def titles(response, ids: dict) -> list[str]:
    assert response.status_code == 200, response.get_json()
    names = {pid: name for name, pid in ids.items()}
    return [names[p["id"]] for p in response.get_json()["data"]]


def test_buyers_also_bought_ranks_co_purchases_then_popular_of_the_kind_then_the_rest(client, shop):
    ids, _ = shop
    answer = client.get(f"/api/v1/products/{ids['A']}/recommendations")
    assert titles(answer, ids) == ["B", "C", "D", "E"]
    assert set(answer.get_json()["data"][0]) >= {"id", "title", "kind", "amount", "currency", "status"}
    assert titles(client.get(f"/api/v1/products/{ids['A']}/recommendations?limit=1"), ids) == ["B"]


def test_a_signed_in_viewer_never_sees_what_they_own(client, shop):
    ids, users = shop
    assert titles(client.get(f"/api/v1/products/{ids['A']}/recommendations", headers=users[3].headers), ids) == [
        "B", "D", "E"]
    # for you, u3 (holds A and C): B through A, then the popular and the newest they do not own
    assert titles(client.get("/api/v1/me/recommendations", headers=users[3].headers), ids) == ["B", "D", "E"]


def test_a_buyer_with_no_history_gets_popular_products_then_the_newest(client, shop, make_user):
    ids, _ = shop
    newcomer = make_user("buyer")
    assert titles(client.get("/api/v1/me/recommendations", headers=newcomer.headers), ids) == [
        "A", "D", "B", "C", "E"]


def test_an_unknown_or_unpublished_product_is_404(client, ctx, creator, shop):
    assert client.get("/api/v1/products/prd_doesnotexist00000000000/recommendations").status_code == 404
    draft = client.post("/api/v1/products", headers=creator.headers,
                        json={"title": "Draft", "kind": "course", "amount": 100, "currency": "cny"}).get_json()
    refused = client.get(f"/api/v1/products/{draft['id']}/recommendations")
    assert refused.status_code == 404 and refused.get_json()["error"]["type"] == "not_found"
    assert client.get("/api/v1/me/recommendations").status_code == 401
    assert client.get(f"/api/v1/products/{draft['id']}/recommendations?limit=0").status_code in (400, 404)


def test_an_archived_product_is_no_longer_recommended(client, creator, shop):
    ids, _ = shop
    assert client.post(f"/api/v1/products/{ids['B']}/archive", headers=creator.headers).status_code == 200
    assert titles(client.get(f"/api/v1/products/{ids['A']}/recommendations"), ids) == ["C", "D", "E"]


def pairs(ctx) -> dict[tuple[str, str], int]:
    with ctx.db.transaction(write=False) as session:
        return {(r.product_id, r.other_id): r.buyers for r in session.scalars(select(RecommendPair))}


def items(ctx) -> dict[str, int]:
    with ctx.db.transaction(write=False) as session:
        return {r.product_id: r.buyers for r in session.scalars(select(RecommendItem))}


def test_the_refresh_is_incremental_and_counting_twice_changes_nothing(ctx, shop):
    ids, users = shop
    before = pairs(ctx), items(ctx)
    assert before[0][(ids["A"], ids["B"])] == before[0][(ids["B"], ids["A"])] == 2
    assert before[1] == {ids["A"]: 4, ids["B"]: 2, ids["C"]: 1, ids["D"]: 3}
    assert refresh_recommendations(ctx) == 7  # everyone bought within the overlap: recounted, unchanged
    assert (pairs(ctx), items(ctx)) == before
    assert refresh_recommendations(ctx, full=True) == 7
    assert (pairs(ctx), items(ctx)) == before
    sell(ctx, users[4].id, ids["A"])  # u4 now holds D and A
    assert refresh_recommendations(ctx) == 7
    assert pairs(ctx)[(ids["D"], ids["A"])] == 1 and items(ctx)[ids["A"]] == 5


def test_a_full_refund_takes_a_purchase_out_of_the_counts(client, ctx, fake_channel, buyer, creator):
    first = make_product(ctx, creator.id, "First")
    second = make_product(ctx, creator.id, "Second", minutes=1)
    buy(client, fake_channel, buyer, first)
    paid = buy(client, fake_channel, buyer, second)
    refresh_recommendations(ctx)
    assert pairs(ctx) == {(first, second): 1, (second, first): 1}
    refunded = client.post("/api/v1/refunds", headers=buyer.headers, json={"payment_id": paid["id"]})
    assert refunded.status_code == 201 and refunded.get_json()["status"] == "succeeded"
    refresh_recommendations(ctx)
    assert pairs(ctx) == {} and items(ctx) == {first: 1}
    # and a refunded product is still not offered back to the buyer who returned it
    answer = client.get(f"/api/v1/products/{first}/recommendations", headers=buyer.headers).get_json()
    assert [p["id"] for p in answer["data"]] == []


def test_pending_and_coin_pack_orders_do_not_count(ctx, make_user, creator):
    course = make_product(ctx, creator.id, "Course")
    pack = make_product(ctx, creator.id, "Coins", "coin_pack")
    other = make_product(ctx, creator.id, "Other")
    buyer = make_user("buyer")
    sell(ctx, buyer.id, course, pack)
    sell(ctx, buyer.id, other, status="pending")
    refresh_recommendations(ctx)
    assert items(ctx) == {course: 1} and pairs(ctx) == {}
