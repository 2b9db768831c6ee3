"""Bad input (issue 2): a 4xx with the API.md error JSON naming the bad `param`, and nothing written."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from knowpay.accounts.models import User
from knowpay.catalog.models import Product
from knowpay.idempotency.models import IdempotencyKey
from knowpay.orders.models import Order, OrderItem

ERROR_TYPES = {"invalid_request", "authentication", "permission", "not_found", "conflict", "rate_limited",
               "payment_declined", "risk_blocked", "internal"}
COURSE = {"title": "Course", "kind": "course", "amount": 9900, "currency": "cny"}
MIB = 1024 * 1024
WHERE = ("products", "orders", "register")


def rows(db) -> dict[str, int]:
    with db.transaction(write=False) as session:
        return {model.__tablename__: session.scalar(select(func.count()).select_from(model))
                for model in (User, Product, Order, OrderItem, IdempotencyKey)}


def assert_api_error(response, status: int | tuple[int, ...], *, code: str | None = None,
                     param: str | None = None) -> dict:
    """The API.md error JSON: a 4xx, JSON, `{"error": {type, code, message, param?}}` and nothing else."""
    statuses = (status,) if isinstance(status, int) else status
    text = response.get_data(as_text=True)
    assert response.status_code in statuses, text
    assert response.mimetype == "application/json", text
    assert "<html" not in text.lower()
    body = response.get_json()
    assert set(body) == {"error"}
    error = body["error"]
    assert {"type", "code", "message"} <= set(error) <= {"type", "code", "message", "param"}
    assert error["type"] in ERROR_TYPES
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error.get("param") == param, error
    return error


@pytest.fixture
def post(client, creator, buyer):
    """post("products" | "orders" | "register", ...) as the caller who may do it."""
    paths = {"products": ("/api/v1/products", creator.headers), "orders": ("/api/v1/orders", buyer.headers),
             "register": ("/api/v1/auth/register", {})}

    def _post(where: str, **kwargs):
        path, headers = paths[where]
        return client.post(path, headers={**headers, **kwargs.pop("headers", {})}, **kwargs)

    return _post


def test_malformed_json_is_400_invalid_json(post, db):
    before = rows(db)
    for where in WHERE:
        for raw in ['{"title": ', "{'title': 'x'}", '{"a": 1,}', "not json", '{"a": 1} trailing',
                    b'\xff\xfe{"a": 1}']:
            assert_api_error(post(where, data=raw, content_type="application/json"), 400, code="invalid_json")
    assert rows(db) == before


def test_a_body_that_is_not_json_is_refused(post, db):
    before = rows(db)
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "application/xml"]:
        response = post("products", data=json.dumps(COURSE), content_type=content_type)
        assert_api_error(response, (400, 415), code="unsupported_media_type")
    assert_api_error(post("products", data={k: str(v) for k, v in COURSE.items()}), (400, 415))
    assert rows(db) == before


def test_a_body_that_is_not_a_json_object_is_refused(post, db):
    before = rows(db)
    for where in WHERE:
        for raw in ["[1, 2]", "null", "5", "true", '"text"', json.dumps(json.dumps(COURSE))]:
            assert_api_error(post(where, data=raw, content_type="application/json"), 400, code="invalid_json")
    assert rows(db) == before


def test_a_missing_body_is_refused(post, db):
    before = rows(db)
    for where in WHERE:
        assert_api_error(post(where), 400)
        assert_api_error(post(where, content_type="application/json"), 400)
    assert rows(db) == before


def test_a_product_field_of_the_wrong_type_is_named(post, db):
    before = rows(db)
    for field, value in [("title", 5), ("title", None), ("title", ["Course"]), ("kind", 1), ("currency", 156),
                         ("description", {"text": "x"}), ("refund_window_days", "7"),
                         ("refund_window_days", 7.5), ("plan", [])]:
        assert_api_error(post("products", json={**COURSE, field: value}), 400, param=field)
    assert rows(db) == before


def test_an_amount_that_is_not_an_integer_is_refused(post, db):
    before = rows(db)
    for amount in [9.9, 99.0, 0.5, "99", "9900", "99.00", True, [9900], {"value": 9900}]:
        assert_api_error(post("products", json={**COURSE, "amount": amount}), 400, code="invalid_amount",
                         param="amount")
    assert_api_error(post("products", json={**COURSE, "amount": None}), 400, param="amount")
    assert rows(db) == before


def test_non_integer_json_numbers_for_amount_are_refused(post, db):
    before = rows(db)
    for raw_amount in ["NaN", "Infinity", "-Infinity", "1e400", "9.9e3", "1E2", "9900.0"]:
        raw = '{"title": "Course", "kind": "course", "currency": "cny", "amount": %s}' % raw_amount
        assert_api_error(post("products", data=raw, content_type="application/json"), 400, param="amount")
    assert rows(db) == before


def test_an_amount_outside_the_allowed_range_is_refused(post, db):
    before = rows(db)
    for amount in [0, -1, -9900, 10**13 + 1, 2**63, 10**40]:
        assert_api_error(post("products", json={**COURSE, "amount": amount}), 400, param="amount")
    assert rows(db) == before


def test_a_missing_product_field_is_named(post, db):
    for field in ["title", "kind", "amount", "currency"]:
        body = dict(COURSE)
        del body[field]
        assert_api_error(post("products", json=body), 400, code="parameter_missing", param=field)
    assert rows(db)["products"] == 0


def test_unknown_product_fields_are_refused_by_name(post, db):
    before = rows(db)
    for name, value in [("status", "published"), ("creator_id", "usr_x"), ("id", "prd_mine"), ("price", 1)]:
        assert_api_error(post("products", json={**COURSE, name: value}), 400, code="unknown_parameter",
                         param=name)
    assert rows(db) == before


def test_an_order_cannot_set_its_own_price_or_buyer(post, db, published_product):
    before = rows(db)
    pid = published_product["id"]
    for body, param in [
        ({"items": [{"product_id": pid, "amount": 1}]}, "items[0].amount"),
        ({"items": [{"product_id": pid, "title": "free"}]}, "items[0].title"),
        ({"items": [{"product_id": pid}], "amount_total": 1}, "amount_total"),
        ({"items": [{"product_id": pid}], "buyer_id": "usr_other"}, "buyer_id"),
    ]:
        assert_api_error(post("orders", json=body), 400, code="unknown_parameter", param=param)
    assert rows(db) == before


def test_a_quantity_that_is_not_1_to_100_is_refused(post, db, published_product):
    before = rows(db)
    for quantity in [0, -1, -100, 101, 1.0, 1.5, "1", True, None]:
        body = {"items": [{"product_id": published_product["id"], "quantity": quantity}]}
        assert_api_error(post("orders", json=body), 400, param="items[0].quantity")
    assert rows(db) == before


def test_malformed_order_items_are_named(post, db):
    before = rows(db)
    for items, param in [
        (None, "items"), ({"product_id": "x"}, "items"), ([], "items"), (["prd_x"], "items[0]"),
        ([{"product_id": 5}], "items[0].product_id"), ([{}], "items[0].product_id"),
        ([{"product_id": "p" * 65}], "items[0].product_id"),
    ]:
        assert_api_error(post("orders", json={"items": items}), 400, param=param)
    assert rows(db) == before


def test_a_missing_items_field_is_named(post, db):
    assert_api_error(post("orders", json={}), 400, code="parameter_missing", param="items")
    assert rows(db)["orders"] == 0


def test_an_order_for_an_unknown_product_writes_nothing(post, db, published_product):
    before = rows(db)
    body = {"items": [{"product_id": published_product["id"]}, {"product_id": "prd_0000000000000000000000"}]}
    assert_api_error(post("orders", json=body), 400, code="product_unavailable", param="items[1].product_id")
    assert rows(db) == before


def test_an_order_for_another_creators_draft_is_refused(client, post, db, make_user):
    someone = make_user("creator")
    draft = client.post("/api/v1/products", headers=someone.headers, json=COURSE).get_json()
    before = rows(db)
    assert_api_error(post("orders", json={"items": [{"product_id": draft["id"]}]}), 400,
                     param="items[0].product_id")
    assert rows(db) == before


def test_a_body_over_1_mib_is_413_with_the_error_json(post, db):
    before = rows(db)
    body = {**COURSE, "description": "x" * (MIB + 1)}
    for where in WHERE:
        error = assert_api_error(post(where, json=body, headers={"Idempotency-Key": "big"}), 413)
        assert error["type"] == "invalid_request"
    assert rows(db) == before


def test_a_body_just_under_1_mib_is_read(post, db):
    padding = MIB - len(json.dumps({**COURSE, "description": ""})) - 100
    response = post("products", json={**COURSE, "description": "x" * padding})
    # Read and validated: the description is longer than a product allows, which is a 400, not a 413.
    assert_api_error(response, 400, param="description")


def test_nul_characters_in_text_are_refused_on_every_backend(client, post, db, buyer, published_product):
    # PostgreSQL cannot hold NUL in text: refused as bad input rather than failing in the database.
    before = rows(db)
    for field in ["title", "description"]:
        assert_api_error(post("products", json={**COURSE, field: "Cour\u0000se"}), 400, param=field)
    assert_api_error(post("orders", json={"items": [{"product_id": "prd_\u0000"}]}), 400,
                     param="items[0].product_id")
    login = {"email": "a\u0000@example.com", "password": "x"}
    assert_api_error(client.post("/api/v1/auth/token", json=login), 400, param="email")
    for path in ["/api/v1/products/prd_%00", "/api/v1/products?creator_id=%00", "/api/v1/products?cursor=%00",
                 "/api/v1/orders/ord_%00"]:
        assert_api_error(client.get(path, headers=buyer.headers), 400)
    assert rows(db) == before
    response = post("orders", json={"items": [{"product_id": published_product["id"]}]},
                    headers={"Idempotency-Key": "a\u0000b"})
    assert_api_error(response, 400, param="Idempotency-Key")
    assert rows(db) == before


def test_a_forged_cursor_is_400_naming_cursor(client, buyer):
    for cursor in ["WyIyMDIwLTAxLTAxVDAwOjAwOjAwKzA1OjAwIiwgImFiIl0",  # a time with an offset
                   "WyIyMDIwLTAxLTAxVDAwOjAwOjAwIiwgImFcdTAwMDBiIl0",  # an id with NUL
                   "WyI5OTk5OS0wMS0wMSIsICJhYiJd", "__4", "bm90IGpzb24", "WzEsIDIsIDNd", "e30"]:
        assert_api_error(client.get(f"/api/v1/orders?cursor={cursor}", headers=buyer.headers), 400,
                         code="invalid_cursor", param="cursor")


def test_an_overlong_id_in_the_path_is_refused(client):
    assert_api_error(client.get("/api/v1/products/" + "p" * 65), 400, param="id")


def test_an_unknown_api_path_is_a_json_404(client):
    assert_api_error(client.get("/api/v1/nowhere"), 404)
    assert_api_error(client.post("/api/v1/nowhere", json={}), 404)


def test_a_wrong_method_is_a_json_405(client, buyer):
    assert_api_error(client.delete("/api/v1/products", headers=buyer.headers), 405)
    assert_api_error(client.post("/api/v1/me", headers=buyer.headers, json={}), 405)


def test_a_refused_body_with_an_idempotency_key_leaves_the_key_free(post, db, published_product):
    assert_api_error(post("orders", json={"items": [{"product_id": published_product["id"], "quantity": 0}]},
                          headers={"Idempotency-Key": "fix-and-retry"}), 400)
    response = post("orders", json={"items": [{"product_id": published_product["id"]}]},
                    headers={"Idempotency-Key": "fix-and-retry"})
    assert response.status_code == 201, response.get_json()
    assert rows(db)["orders"] == 1


def test_deeply_nested_json_is_400_not_500(post, db):
    before = rows(db)
    assert_api_error(post("orders", data="[" * 100_000 + "]" * 100_000, content_type="application/json"), 400)
    assert rows(db) == before
