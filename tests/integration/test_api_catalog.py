"""The catalog over the API: creators draft, publish and archive; everyone lists what is on sale."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from knowpay.catalog.models import Product
from knowpay.domain.ids import has_prefix

COURSE = {"title": "Python for payments", "kind": "course", "amount": 9900, "currency": "cny"}


def create(client, caller, **changes):
    return client.post("/api/v1/products", headers=caller.headers, json={**COURSE, **changes})


def created(client, caller, **changes) -> dict:
    response = create(client, caller, **changes)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def published(client, caller, **changes) -> dict:
    product = created(client, caller, **changes)
    response = client.post(f"/api/v1/products/{product['id']}/publish", headers=caller.headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def status_of(client, caller, product_id: str) -> str:
    return client.get(f"/api/v1/products/{product_id}", headers=caller.headers).get_json()["status"]


def assert_error(response, status: int, type_: str, code: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["type"] == type_
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def count_products(db) -> int:
    with db.transaction(write=False) as session:
        return session.scalar(select(func.count()).select_from(Product))


def test_a_creator_creates_a_draft_with_the_product_shape(client, creator):
    response = create(client, creator, description="Learn it", refund_window_days=3)
    assert response.status_code == 201, response.get_json()
    product = response.get_json()
    assert has_prefix(product["id"], "prd")
    assert product["status"] == "draft"
    assert product["creator_id"] == creator.id
    assert (product["title"], product["kind"], product["amount"], product["currency"]) == (
        "Python for payments", "course", 9900, "cny")
    assert product["description"] == "Learn it"
    assert product["refund_window_days"] == 3
    assert product["plan"] is None
    assert product["created_at"].endswith("Z")


def test_an_admin_may_create_a_product(client, admin):
    assert created(client, admin)["creator_id"] == admin.id


def test_a_buyer_cannot_create_a_product(client, buyer, db):
    assert_error(create(client, buyer), 403, "permission")
    assert count_products(db) == 0


def test_creating_without_a_token_is_401(client, db):
    assert_error(client.post("/api/v1/products", json=COURSE), 401, "authentication")
    assert count_products(db) == 0


def test_publish_then_archive_moves_the_status(client, creator):
    product = created(client, creator)
    pub = client.post(f"/api/v1/products/{product['id']}/publish", headers=creator.headers)
    assert pub.status_code == 200
    assert pub.get_json()["status"] == "published"
    arc = client.post(f"/api/v1/products/{product['id']}/archive", headers=creator.headers)
    assert arc.status_code == 200
    assert arc.get_json()["status"] == "archived"
    assert status_of(client, creator, product["id"]) == "archived"


def test_an_archived_product_can_be_published_again(client, creator):
    product = published(client, creator)
    client.post(f"/api/v1/products/{product['id']}/archive", headers=creator.headers)
    again = client.post(f"/api/v1/products/{product['id']}/publish", headers=creator.headers)
    assert again.status_code == 200
    assert again.get_json()["status"] == "published"


def test_publishing_twice_is_harmless(client, creator):
    product = published(client, creator)
    again = client.post(f"/api/v1/products/{product['id']}/publish", headers=creator.headers)
    assert again.status_code == 200
    assert again.get_json()["status"] == "published"


def test_another_creator_gets_404_publishing_someone_elses_product(client, creator, make_user):
    product = created(client, creator)
    other = make_user("creator")
    assert_error(client.post(f"/api/v1/products/{product['id']}/publish", headers=other.headers),
                 404, "not_found")
    assert_error(client.post(f"/api/v1/products/{product['id']}/archive", headers=other.headers),
                 404, "not_found")
    assert status_of(client, creator, product["id"]) == "draft"


def test_an_admin_may_publish_any_product(client, creator, admin):
    product = created(client, creator)
    response = client.post(f"/api/v1/products/{product['id']}/publish", headers=admin.headers)
    assert response.status_code == 200
    assert response.get_json()["status"] == "published"


def test_a_buyer_cannot_publish(client, creator, buyer):
    product = created(client, creator)
    assert_error(client.post(f"/api/v1/products/{product['id']}/publish", headers=buyer.headers),
                 403, "permission")


def test_publishing_an_unknown_product_is_404(client, creator):
    assert_error(client.post("/api/v1/products/prd_doesnotexist/publish", headers=creator.headers),
                 404, "not_found")


def test_the_list_shows_only_published_products(client, creator):
    shown = published(client, creator, title="On sale")
    created(client, creator, title="Still a draft")
    gone = published(client, creator, title="Withdrawn")
    client.post(f"/api/v1/products/{gone['id']}/archive", headers=creator.headers)
    response = client.get("/api/v1/products")
    assert response.status_code == 200
    page = response.get_json()
    assert [p["id"] for p in page["data"]] == [shown["id"]]
    assert page["has_more"] is False
    assert page["next_cursor"] is None


def test_the_list_filters_by_kind(client, creator):
    course = published(client, creator, title="A course")
    ebook = published(client, creator, title="An ebook", kind="ebook")
    by_kind = {k: [p["id"] for p in client.get(f"/api/v1/products?kind={k}").get_json()["data"]]
               for k in ("course", "ebook", "audio")}
    assert by_kind == {"course": [course["id"]], "ebook": [ebook["id"]], "audio": []}


def test_the_list_refuses_an_unknown_kind(client):
    error = assert_error(client.get("/api/v1/products?kind=spaceship"), 400, "invalid_request")
    assert error["param"] == "kind"


def test_the_list_pages_with_a_cursor(client, creator):
    ids = {published(client, creator, title=f"Course {n}")["id"] for n in range(5)}
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        url = "/api/v1/products?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url).get_json()
        seen += [p["id"] for p in page["data"]]
        cursor = page["next_cursor"]
        assert page["has_more"] is (cursor is not None)
        if not page["has_more"]:
            break
    assert len(seen) == 5
    assert set(seen) == ids


@pytest.mark.parametrize("limit", ["0", "101", "-1", "two"])
def test_the_list_refuses_a_limit_outside_1_to_100(client, limit):
    error = assert_error(client.get(f"/api/v1/products?limit={limit}"), 400, "invalid_request")
    assert error["param"] == "limit"


def test_the_list_refuses_a_garbled_cursor(client):
    error = assert_error(client.get("/api/v1/products?cursor=not-a-cursor"), 400, "invalid_request")
    assert error["param"] == "cursor"


def test_anyone_can_get_a_published_product(client, published_product):
    response = client.get(f"/api/v1/products/{published_product['id']}")
    assert response.status_code == 200
    assert response.get_json() == published_product


def test_a_draft_is_hidden_from_everyone_but_its_creator(client, creator, buyer, make_user):
    draft = created(client, creator)
    assert client.get(f"/api/v1/products/{draft['id']}", headers=creator.headers).status_code == 200
    assert_error(client.get(f"/api/v1/products/{draft['id']}"), 404, "not_found")
    assert_error(client.get(f"/api/v1/products/{draft['id']}", headers=buyer.headers), 404, "not_found")
    assert_error(client.get(f"/api/v1/products/{draft['id']}", headers=make_user("creator").headers),
                 404, "not_found")


def test_an_unknown_product_is_404_with_the_error_json(client):
    assert_error(client.get("/api/v1/products/prd_nope"), 404, "not_found")


def test_a_coin_pack_needs_coins(client, creator, db):
    error = assert_error(create(client, creator, kind="coin_pack"), 400, "invalid_request")
    assert error["param"] == "coins"
    assert count_products(db) == 0


def test_a_coin_pack_with_coins_is_created(client, creator):
    pack = created(client, creator, kind="coin_pack", title="100 coins", amount=1000, coins=100,
                   bonus_coins=10)
    assert (pack["kind"], pack["coins"], pack["bonus_coins"]) == ("coin_pack", 100, 10)


def test_only_a_coin_pack_carries_coins(client, creator):
    error = assert_error(create(client, creator, coins=100), 400, "invalid_request")
    assert error["param"] == "coins"


@pytest.mark.parametrize("coins", [0, -5, 1.5, "100"])
def test_a_coin_pack_refuses_bad_coins(client, creator, coins):
    error = assert_error(create(client, creator, kind="coin_pack", coins=coins), 400, "invalid_request")
    assert error["param"] == "coins"


def test_a_membership_gets_a_monthly_plan_by_default(client, creator):
    product = created(client, creator, kind="membership", title="Club")
    assert product["plan"] == {"interval": "month", "interval_count": 1}


def test_a_membership_keeps_its_plan(client, creator):
    product = created(client, creator, kind="membership", title="Club",
                      plan={"interval": "year", "interval_count": 2})
    assert product["plan"] == {"interval": "year", "interval_count": 2}


@pytest.mark.parametrize("plan, param", [
    ({"interval": "fortnight"}, "plan.interval"),
    ({"interval": "month", "interval_count": 0}, "plan.interval_count"),
    ({"interval": "month", "interval_count": 37}, "plan.interval_count"),
    ({"interval": "month", "interval_count": "2"}, "plan.interval_count"),
    ({"interval_count": 1}, "plan.interval"),
    ({"interval": "month", "extra": 1}, "plan.extra"),
    ("monthly", "plan"),
])
def test_a_membership_plan_is_validated(client, creator, db, plan, param):
    error = assert_error(create(client, creator, kind="membership", plan=plan), 400, "invalid_request")
    assert error["param"] == param
    assert count_products(db) == 0


def test_only_a_membership_has_a_plan(client, creator):
    error = assert_error(create(client, creator, plan={"interval": "month"}), 400, "invalid_request")
    assert error["param"] == "plan"


@pytest.mark.parametrize("currency", ["CNY", "xyz", "coin", "yuan"])
def test_an_unsupported_currency_is_refused(client, creator, db, currency):
    error = assert_error(create(client, creator, currency=currency), 400, "invalid_request")
    assert error["param"] == "currency"
    assert count_products(db) == 0


def test_a_blank_title_is_refused(client, creator):
    error = assert_error(create(client, creator, title="   "), 400, "invalid_request")
    assert error["param"] == "title"


def test_every_kind_of_the_contract_can_be_created(client, creator):
    extra = {"coin_pack": {"coins": 100}}
    for kind in ("course", "ebook", "audio", "video", "membership", "consulting", "coin_pack"):
        assert created(client, creator, kind=kind, **extra.get(kind, {}))["kind"] == kind


# -- editing (PATCH /products/{id}) ----------------------------------------------------------------------

def patch(client, caller, product_id: str, **changes):
    return client.patch(f"/api/v1/products/{product_id}", headers=caller.headers, json=changes)


def test_a_creator_edits_title_description_price_and_refund_window(client, creator):
    product = published(client, creator)
    response = patch(client, creator, product["id"], title="Python for payments, 2nd edition",
                     description="Now with refunds", amount=12900, refund_window_days=14)
    assert response.status_code == 200, response.get_json()
    edited = response.get_json()
    assert (edited["title"], edited["description"], edited["amount"], edited["refund_window_days"]) == (
        "Python for payments, 2nd edition", "Now with refunds", 12900, 14)
    assert (edited["status"], edited["currency"], edited["kind"]) == ("published", "cny", "course")
    assert client.get(f"/api/v1/products/{product['id']}").get_json() == edited


def test_a_new_price_leaves_existing_orders_at_the_price_they_were_made_with(client, creator, buyer):
    product = published(client, creator)
    order = client.post("/api/v1/orders", headers=buyer.headers,
                        json={"items": [{"product_id": product["id"]}]}).get_json()
    assert patch(client, creator, product["id"], amount=19900).status_code == 200
    again = client.get(f"/api/v1/orders/{order['id']}", headers=buyer.headers).get_json()
    assert (again["amount_total"], again["items"][0]["amount"]) == (9900, 9900)
    newer = client.post("/api/v1/orders", headers=buyer.headers,
                        json={"items": [{"product_id": product["id"]}]}).get_json()
    assert newer["amount_total"] == 19900


def test_a_draft_may_change_its_kind_and_terms(client, creator):
    draft = created(client, creator)
    pack = patch(client, creator, draft["id"], kind="coin_pack", coins=1000, bonus_coins=100)
    assert pack.status_code == 200, pack.get_json()
    assert (pack.get_json()["kind"], pack.get_json()["coins"], pack.get_json()["bonus_coins"]) == (
        "coin_pack", 1000, 100)
    club = patch(client, creator, draft["id"], kind="membership",
                 plan={"interval": "year", "interval_count": 1})
    assert club.status_code == 200, club.get_json()
    assert (club.get_json()["coins"], club.get_json()["bonus_coins"], club.get_json()["plan"]) == (
        None, 0, {"interval": "year", "interval_count": 1})
    shorter = patch(client, creator, draft["id"], refund_window_days=0)
    assert shorter.get_json()["refund_window_days"] == 0


@pytest.mark.parametrize("changes, param", [
    ({"kind": "ebook"}, "kind"),
    ({"plan": {"interval": "year"}}, "plan"),
    ({"refund_window_days": 3}, "refund_window_days"),
])
def test_a_product_that_has_been_on_sale_keeps_what_buyers_paid_for(client, creator, changes, param):
    product = published(client, creator, kind="membership", title="Club")
    error = assert_error(patch(client, creator, product["id"], **changes), 409, "conflict")
    assert error["param"] == param
    assert client.get(f"/api/v1/products/{product['id']}").get_json() == product


def test_sending_unchanged_terms_of_a_published_product_is_no_conflict(client, creator):
    product = published(client, creator, refund_window_days=7)
    response = patch(client, creator, product["id"], kind="course", refund_window_days=30,
                     title="Longer refunds")
    assert response.status_code == 200, response.get_json()
    assert (response.get_json()["refund_window_days"], response.get_json()["title"]) == (30, "Longer refunds")


def test_only_the_creator_or_an_admin_edits_a_product(client, creator, buyer, admin, make_user):
    product = created(client, creator)
    assert_error(patch(client, make_user("creator"), product["id"], title="Mine now"), 404, "not_found")
    assert_error(patch(client, buyer, product["id"], title="Mine now"), 403, "permission")
    assert_error(client.patch(f"/api/v1/products/{product['id']}", json={"title": "x"}),
                 401, "authentication")
    assert patch(client, admin, product["id"], title="Fixed typo").get_json()["title"] == "Fixed typo"
    assert_error(patch(client, creator, "prd_doesnotexist", title="x"), 404, "not_found")


@pytest.mark.parametrize("changes, param", [
    ({"title": ""}, "title"),
    ({"title": "   "}, "title"),
    ({"amount": 0}, "amount"),
    ({"amount": 99.5}, "amount"),
    ({"refund_window_days": 400}, "refund_window_days"),
    ({"currency": "usd"}, "currency"),
    ({"coins": 100}, "coins"),
])
def test_an_edit_is_validated_and_names_the_field(client, creator, changes, param):
    product = created(client, creator)
    error = assert_error(patch(client, creator, product["id"], **changes), 400, "invalid_request")
    assert error["param"] == param
    assert client.get(f"/api/v1/products/{product['id']}", headers=creator.headers).get_json() == product


def test_an_edit_replays_with_its_idempotency_key(client, creator):
    product = created(client, creator)
    headers = {**creator.headers, "Idempotency-Key": "edit-1"}
    first = client.patch(f"/api/v1/products/{product['id']}", headers=headers, json={"amount": 4900})
    again = client.patch(f"/api/v1/products/{product['id']}", headers=headers, json={"amount": 4900})
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.get_json() == first.get_json()
