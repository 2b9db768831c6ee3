"""Orders over the API: price snapshots, expiry, the buyer's own list, cancelling."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import update

from knowpay.catalog.models import Product
from knowpay.config import load_settings
from knowpay.domain.clock import SystemClock
from knowpay.domain.ids import has_prefix
from tests.conftest import FAST_PASSWORDS

ORDER_FIELDS = {"id", "status", "buyer_id", "items", "amount_subtotal", "amount_discount", "amount_total",
                "currency", "expires_at", "paid_at", "created_at"}


def when(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text.removesuffix("Z"))


def order(client, caller, *items, **extra):
    return client.post("/api/v1/orders", headers=caller.headers, json={"items": list(items), **extra})


def ordered(client, caller, product_id: str, quantity: int | None = None) -> dict:
    item: dict = {"product_id": product_id}
    if quantity is not None:
        item["quantity"] = quantity
    response = order(client, caller, item)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def product(client, creator, *, publish=True, **fields) -> dict:
    body = {"title": "Thing", "kind": "course", "amount": 100, "currency": "cny", **fields}
    made = client.post("/api/v1/products", headers=creator.headers, json=body)
    assert made.status_code == 201, made.get_json()
    if not publish:
        return made.get_json()
    pub = client.post(f"/api/v1/products/{made.get_json()['id']}/publish", headers=creator.headers)
    assert pub.status_code == 200
    return pub.get_json()


def assert_error(response, status: int, type_: str, code: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["type"] == type_
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def test_an_order_has_the_contract_shape(client, buyer, published_product):
    body = ordered(client, buyer, published_product["id"])
    assert ORDER_FIELDS <= set(body)
    assert has_prefix(body["id"], "ord")
    assert body["status"] == "pending"
    assert body["buyer_id"] == buyer.id
    assert body["paid_at"] is None
    assert body["currency"] == "cny"
    assert (body["amount_subtotal"], body["amount_discount"], body["amount_total"]) == (9900, 0, 9900)
    item = body["items"][0]
    assert {"product_id", "title", "amount", "quantity"} <= set(item)
    assert (item["product_id"], item["title"], item["amount"], item["quantity"]) == (
        published_product["id"], "Course A", 9900, 1)


def test_amount_total_adds_up_prices_times_quantities(client, buyer, creator):
    course = product(client, creator, title="Course", amount=9900)
    consulting = product(client, creator, title="An hour", kind="consulting", amount=30000)
    response = order(client, buyer, {"product_id": course["id"]},
                     {"product_id": consulting["id"], "quantity": 3})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert [(i["title"], i["amount"], i["quantity"]) for i in body["items"]] == [
        ("Course", 9900, 1), ("An hour", 30000, 3)]
    assert body["amount_subtotal"] == 9900 + 3 * 30000
    assert body["amount_total"] == body["amount_subtotal"] - body["amount_discount"] == 99900


def test_the_order_keeps_the_price_it_was_made_with(client, db, buyer, published_product):
    first = ordered(client, buyer, published_product["id"])
    with db.transaction() as session:
        session.execute(update(Product).where(Product.id == published_product["id"])
                        .values(amount=19900, title="Course A, second edition"))
    again = client.get(f"/api/v1/orders/{first['id']}", headers=buyer.headers).get_json()
    assert again["items"][0]["amount"] == 9900
    assert again["items"][0]["title"] == "Course A"
    assert again["amount_total"] == 9900
    later = ordered(client, buyer, published_product["id"])
    assert later["amount_total"] == 19900
    assert later["items"][0]["title"] == "Course A, second edition"


def test_archiving_the_product_does_not_change_an_existing_order(client, buyer, creator, published_product):
    first = ordered(client, buyer, published_product["id"])
    client.post(f"/api/v1/products/{published_product['id']}/archive", headers=creator.headers)
    again = client.get(f"/api/v1/orders/{first['id']}", headers=buyer.headers).get_json()
    assert again == first


def test_expires_at_is_created_at_plus_the_default_900_seconds(client, buyer, published_product):
    body = ordered(client, buyer, published_product["id"])
    ttl = when(body["expires_at"]) - when(body["created_at"])
    assert abs(ttl - timedelta(seconds=900)) < timedelta(seconds=1)


def test_expires_at_follows_knowpay_order_ttl_seconds(database_url, db, tmp_path):
    from knowpay.accounts import service as accounts
    from knowpay.web import create_app

    settings = load_settings({"KNOWPAY_DATABASE_URL": database_url, "KNOWPAY_INSTANCE_PATH": str(tmp_path),
                              "KNOWPAY_ORDER_TTL_SECONDS": "120"})
    app = create_app(settings, db=db, clock=SystemClock(), config={"TESTING": True, **FAST_PASSWORDS})
    client = app.test_client()
    with app.app_context(), db.transaction() as session:
        user = accounts.register_user(session, email="c@example.com", password="long-enough-1",
                                      username="cleo", roles=("creator",), clock=SystemClock())
        issued = accounts.issue_token(session, user, clock=SystemClock())
        headers = {"Authorization": f"Bearer {issued.token}"}
    made = client.post("/api/v1/products", headers=headers,
                       json={"title": "T", "kind": "course", "amount": 100, "currency": "cny"}).get_json()
    client.post(f"/api/v1/products/{made['id']}/publish", headers=headers)
    response = client.post("/api/v1/orders", headers=headers, json={"items": [{"product_id": made["id"]}]})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    ttl = when(body["expires_at"]) - when(body["created_at"])
    assert abs(ttl - timedelta(seconds=120)) < timedelta(seconds=1)


def test_a_buyer_lists_only_their_own_orders(client, buyer, make_user, published_product):
    mine = ordered(client, buyer, published_product["id"])
    other = make_user("buyer")
    theirs = ordered(client, other, published_product["id"])
    page = client.get("/api/v1/orders", headers=buyer.headers).get_json()
    assert [o["id"] for o in page["data"]] == [mine["id"]]
    assert page["has_more"] is False and page["next_cursor"] is None
    their_page = client.get("/api/v1/orders", headers=other.headers).get_json()
    assert [o["id"] for o in their_page["data"]] == [theirs["id"]]


def test_the_order_list_walks_every_order_once_with_limit_2(client, buyer, make_user, published_product):
    made = [ordered(client, buyer, published_product["id"])["id"] for _ in range(5)]
    ordered(client, make_user("buyer"), published_product["id"])  # someone else's: never listed
    pages = []
    cursor = None
    while True:
        url = "/api/v1/orders?limit=2" + (f"&cursor={cursor}" if cursor else "")
        response = client.get(url, headers=buyer.headers)
        assert response.status_code == 200, response.get_json()
        page = response.get_json()
        pages.append(page)
        cursor = page["next_cursor"]
        if not page["has_more"]:
            assert cursor is None
            break
        assert cursor
        assert len(pages) < 10
    assert [len(p["data"]) for p in pages] == [2, 2, 1]
    assert [p["has_more"] for p in pages] == [True, True, False]
    seen = [o["id"] for p in pages for o in p["data"]]
    assert len(seen) == len(set(seen)) == 5
    assert set(seen) == set(made)
    created = [when(o["created_at"]) for p in pages for o in p["data"]]
    assert created == sorted(created, reverse=True)


def test_a_page_that_ends_exactly_has_no_next_cursor(client, buyer, published_product):
    for _ in range(2):
        ordered(client, buyer, published_product["id"])
    page = client.get("/api/v1/orders?limit=2", headers=buyer.headers).get_json()
    assert len(page["data"]) == 2
    assert page["has_more"] is False
    assert page["next_cursor"] is None


def test_orders_filter_by_status(client, buyer, published_product):
    kept = ordered(client, buyer, published_product["id"])
    dropped = ordered(client, buyer, published_product["id"])
    client.post(f"/api/v1/orders/{dropped['id']}/cancel", headers=buyer.headers)
    pending = client.get("/api/v1/orders?status=pending", headers=buyer.headers).get_json()["data"]
    cancelled = client.get("/api/v1/orders?status=cancelled", headers=buyer.headers).get_json()["data"]
    assert [o["id"] for o in pending] == [kept["id"]]
    assert [o["id"] for o in cancelled] == [dropped["id"]]


def test_listing_orders_needs_a_user(client):
    assert_error(client.get("/api/v1/orders"), 401, "authentication")


def test_a_buyer_gets_their_order(client, buyer, published_product):
    body = ordered(client, buyer, published_product["id"])
    response = client.get(f"/api/v1/orders/{body['id']}", headers=buyer.headers)
    assert response.status_code == 200
    assert response.get_json() == body


def test_another_buyer_gets_404_for_my_order(client, buyer, make_user, published_product):
    body = ordered(client, buyer, published_product["id"])
    other = make_user("buyer")
    assert_error(client.get(f"/api/v1/orders/{body['id']}", headers=other.headers), 404, "not_found")
    assert_error(client.post(f"/api/v1/orders/{body['id']}/cancel", headers=other.headers), 404, "not_found")
    assert client.get(f"/api/v1/orders/{body['id']}", headers=buyer.headers).get_json()["status"] == "pending"


def test_the_creator_of_the_product_cannot_see_the_buyers_order(client, buyer, creator, published_product):
    body = ordered(client, buyer, published_product["id"])
    assert_error(client.get(f"/api/v1/orders/{body['id']}", headers=creator.headers), 404, "not_found")


def test_an_unknown_order_is_404(client, buyer):
    assert_error(client.get("/api/v1/orders/ord_nope", headers=buyer.headers), 404, "not_found")


def test_cancel_pending_then_cancel_again_is_409(client, buyer, published_product):
    body = ordered(client, buyer, published_product["id"])
    cancelled = client.post(f"/api/v1/orders/{body['id']}/cancel", headers=buyer.headers)
    assert cancelled.status_code == 200, cancelled.get_json()
    assert cancelled.get_json()["status"] == "cancelled"
    assert client.get(f"/api/v1/orders/{body['id']}", headers=buyer.headers).get_json()["status"] \
        == "cancelled"
    assert_error(client.post(f"/api/v1/orders/{body['id']}/cancel", headers=buyer.headers),
                 409, "conflict", "order_not_pending")


def test_an_archived_product_cannot_be_ordered(client, db, buyer, creator, published_product):
    client.post(f"/api/v1/products/{published_product['id']}/archive", headers=creator.headers)
    error = assert_error(order(client, buyer, {"product_id": published_product["id"]}),
                         400, "invalid_request")
    assert error["param"] == "items[0].product_id"
    assert client.get("/api/v1/orders", headers=buyer.headers).get_json()["data"] == []


def test_a_draft_cannot_be_ordered_even_by_its_creator(client, creator):
    draft = product(client, creator, publish=False)
    error = assert_error(order(client, creator, {"product_id": draft["id"]}), 400, "invalid_request")
    assert error["param"] == "items[0].product_id"


def test_an_unknown_product_cannot_be_ordered(client, buyer, published_product):
    error = assert_error(order(client, buyer, {"product_id": published_product["id"]},
                               {"product_id": "prd_nope"}), 400, "invalid_request")
    assert error["param"] == "items[1].product_id"
    assert client.get("/api/v1/orders", headers=buyer.headers).get_json()["data"] == []


def test_a_course_is_bought_one_at_a_time(client, buyer, published_product):
    error = assert_error(order(client, buyer, {"product_id": published_product["id"], "quantity": 2}),
                         400, "invalid_request")
    assert error["param"] == "items[0].quantity"


def test_the_same_product_twice_is_refused(client, buyer, published_product):
    error = assert_error(order(client, buyer, {"product_id": published_product["id"]},
                               {"product_id": published_product["id"]}), 400, "invalid_request")
    assert error["param"] == "items[1].product_id"


def test_mixed_currencies_are_refused(client, buyer, creator):
    cny = product(client, creator, title="Yuan", currency="cny")
    usd = product(client, creator, title="Dollar", kind="ebook", currency="usd")
    error = assert_error(order(client, buyer, {"product_id": cny["id"]}, {"product_id": usd["id"]}),
                         400, "invalid_request")
    assert error["param"] == "items"


def test_an_empty_order_is_refused(client, buyer):
    error = assert_error(order(client, buyer), 400, "invalid_request")
    assert error["param"] == "items"


def test_an_unknown_coupon_is_refused_naming_it(client, buyer, published_product):
    error = assert_error(order(client, buyer, {"product_id": published_product["id"]}, coupon="NOPE"),
                         400, "invalid_request")
    assert error["param"] == "coupon"


def test_ordering_needs_a_user(client, published_product):
    assert_error(client.post("/api/v1/orders", json={"items": [{"product_id": published_product["id"]}]}),
                 401, "authentication")


@pytest.mark.parametrize("path", ["/api/v1/orders/ord_x", "/api/v1/orders"])
def test_order_reads_refuse_an_api_key_without_a_user(client, path, db):
    from knowpay.accounts import service as accounts

    with db.transaction() as session:
        key = accounts.create_api_key(session, name="svc", clock=SystemClock()).key
    assert_error(client.get(path, headers={"Authorization": f"Bearer {key}"}), 403, "permission")
