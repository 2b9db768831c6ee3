"""The OpenAPI document is generated from the code and agrees with API.md; the operations endpoints answer."""

from __future__ import annotations

import re

import pytest

from knowpay.config import load_settings
from knowpay.db import Database
from knowpay.domain.clock import SystemClock
from tests.conftest import FAST_PASSWORDS

# API.md paths implemented so far (foundation), with the success status and the fields it promises.
CONTRACT = {
    ("post", "/api/v1/auth/register"): (201, {"email", "password", "username"},
                                        {"id", "email", "username", "roles", "created_at"}),
    ("post", "/api/v1/auth/token"): (200, {"email", "password", "otp"},
                                     {"access_token", "token_type", "expires_at"}),
    ("get", "/api/v1/me"): (200, None, {"id", "email", "username", "roles", "created_at"}),
    ("get", "/api/v1/products"): (200, None, {"data", "has_more", "next_cursor"}),
    ("get", "/api/v1/products/{id}"): (200, None, {"id", "title", "kind", "amount", "currency", "status",
                                                  "creator_id"}),
    ("post", "/api/v1/products"): (201, {"title", "kind", "amount", "currency", "description",
                                         "refund_window_days", "plan"},
                                   {"id", "title", "kind", "amount", "currency", "status", "creator_id"}),
    ("post", "/api/v1/products/{id}/publish"): (200, None, {"id", "status"}),
    ("post", "/api/v1/products/{id}/archive"): (200, None, {"id", "status"}),
    ("post", "/api/v1/orders"): (201, {"items", "coupon"},
                                 {"id", "status", "buyer_id", "items", "amount_subtotal", "amount_discount",
                                  "amount_total", "currency", "expires_at", "paid_at", "created_at"}),
    ("get", "/api/v1/orders"): (200, None, {"data", "has_more", "next_cursor"}),
    ("get", "/api/v1/orders/{id}"): (200, None, {"id", "status", "items", "amount_total", "expires_at"}),
    ("post", "/api/v1/orders/{id}/cancel"): (200, None, {"id", "status"}),
}
PUBLIC = {("post", "/api/v1/auth/register"), ("post", "/api/v1/auth/token"), ("get", "/api/v1/products"),
          ("get", "/api/v1/products/{id}")}


@pytest.fixture
def doc_app(sqlite_url, tmp_path):
    """An app on SQLite only: the document does not depend on the backend."""
    from knowpay.web import create_app

    settings = load_settings({"KNOWPAY_DATABASE_URL": sqlite_url, "KNOWPAY_INSTANCE_PATH": str(tmp_path)})
    db = Database(sqlite_url, pool_size=1)
    yield create_app(settings, db=db, clock=SystemClock(), config={"TESTING": True, **FAST_PASSWORDS})
    db.dispose()


@pytest.fixture
def doc(doc_app) -> dict:
    """The document as the app generates it from its routes and schemas."""
    return doc_app.api_doc


def resolve(doc: dict, schema: dict) -> dict:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = doc["components"]["schemas"][name]
    return schema


def json_schema(doc: dict, holder: dict) -> dict:
    return resolve(doc, holder["content"]["application/json"]["schema"])


def test_the_document_is_served_at_api_v1_openapi_json(doc_app, doc):
    response = doc_app.test_client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == doc


def test_the_document_is_openapi_3_with_a_bearer_scheme(doc):
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["title"]
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}


@pytest.mark.parametrize("method, path", sorted(CONTRACT))
def test_every_foundation_path_of_api_md_is_documented_with_its_schemas(doc, method, path):
    assert path in doc["paths"], sorted(doc["paths"])
    operation = doc["paths"][path][method]
    status, request_fields, response_fields = CONTRACT[(method, path)]
    response = operation["responses"][str(status)]
    assert response_fields <= set(json_schema(doc, response)["properties"])
    if request_fields is None:
        assert "requestBody" not in operation
    else:
        body = json_schema(doc, operation["requestBody"])
        assert set(body["properties"]) >= request_fields
        assert body.get("additionalProperties") is False  # unknown fields are refused, and documented so
    if (method, path) not in PUBLIC:
        assert operation["security"] == [{"bearer": []}]


@pytest.mark.parametrize("method, path", sorted(CONTRACT))
def test_every_error_response_is_the_api_md_error_json(doc, method, path):
    operation = doc["paths"][path][method]
    failures = {code: r for code, r in operation["responses"].items() if int(code) >= 400}
    assert "400" in failures
    for response in failures.values():
        error = json_schema(doc, response)
        assert set(error["properties"]) == {"error"}
        detail = resolve(doc, error["properties"]["error"])
        assert {"type", "code", "message"} <= set(detail["required"])
        assert "param" in detail["properties"]


def test_money_and_lists_are_typed_as_the_contract_says(doc):
    product_in = json_schema(doc, doc["paths"]["/api/v1/products"]["post"]["requestBody"])
    assert product_in["properties"]["amount"]["type"] == "integer"
    assert set(product_in["required"]) == {"title", "kind", "amount", "currency"}
    assert set(product_in["properties"]["kind"]["enum"]) == {
        "course", "ebook", "audio", "video", "membership", "consulting", "coin_pack"}
    order = json_schema(doc, doc["paths"]["/api/v1/orders"]["post"]["responses"]["201"])
    for field in ("amount_subtotal", "amount_discount", "amount_total"):
        assert order["properties"][field]["type"] == "integer"
    listing = doc["paths"]["/api/v1/orders"]["get"]
    assert {"limit", "cursor"} <= {p["name"] for p in listing["parameters"] if p["in"] == "query"}
    limit = next(p for p in listing["parameters"] if p["name"] == "limit")["schema"]
    assert (limit["minimum"], limit["maximum"]) == (1, 100)


def test_every_api_route_of_the_app_is_in_the_document(doc_app, doc):
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    for rule in doc_app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.rule == "/api/v1/openapi.json":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (method.lower(), path) in documented, (method, path)


def test_healthz_answers_200(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"


def test_readyz_answers_200_when_the_database_answers(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"


def test_readyz_answers_503_with_the_error_json_when_the_database_is_gone(tmp_path):
    from knowpay.web import create_app

    unreachable = Database("postgresql+psycopg://postgres@127.0.0.1:1/nothing?connect_timeout=1", pool_size=1)
    settings = load_settings({"KNOWPAY_DATABASE_URL": unreachable.url,
                              "KNOWPAY_INSTANCE_PATH": str(tmp_path)})
    app = create_app(settings, db=unreachable, clock=SystemClock(),
                     config={"TESTING": True, **FAST_PASSWORDS})
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["error"]["type"] == "internal"
    assert app.test_client().get("/healthz").status_code == 200
    unreachable.dispose()
