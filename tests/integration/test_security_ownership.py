"""The ownership sweep: on every object-scoped route of the API (every route with an `<id>`, found in
the running app, so a new route is swept the day it is added), a second buyer and a second creator get
nothing of someone else's object: 404 wherever their role may use the route, and the very same
answer for a real id as for a made-up one, so ids cannot be probed.

A new kind of object route fails here until OBJECTS below says which object its `<id>` names.
"""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from knowpay.domain.ids import new_id
from knowpay.payouts.models import Payout

# Which object of the world an `<id>` names, by the route's path up to that `<id>`.
OBJECTS = {
    "/api/v1/orders/<id>": "order",
    "/api/v1/payments/<id>": "payment",
    "/api/v1/refunds/<id>": "refund",
    "/api/v1/tickets/<id>": "ticket",
    "/api/v1/support/tickets/<id>": "ticket",
    "/api/v1/products/<id>": "draft_product",
    "/api/v1/payouts/<id>": "payout",
    "/api/v1/users/<id>": "buyer",
    "/api/v1/webhook-endpoints/<id>": "webhook_endpoint",
    "/api/v1/webhook-deliveries/<id>": None,  # admin-only: a made-up id is enough
    "/api/v1/reconciliation/runs/<id>": None,
    "/api/v1/risk/decisions/<id>": None,
    "/api/v1/risk/reviews/<id>": None,
    "/api/v1/risk/payments/<id>": "payment",
    "/api/v1/risk/lists/<kind>/entries/<id>": None,
    "/api/v1/support/faq/<int:id>": None,
}
# Values for the other parts of an object route's path.
OTHER_ARGUMENTS = {"kind": "email"}
# Bodies where the schema's first choice would be refused for another reason (this app has only `sandbox`).
BODIES = {"payments.create_payment": {"channel": "sandbox"}}


@pytest.fixture
def database_url(sqlite_url):
    # Ownership is decided in code, the same on both databases; one world is built once per run.
    return sqlite_url


def _paid_payment(client, buyer, product_id, fake_channel) -> dict:
    order = client.post("/api/v1/orders", headers=buyer.headers, json={"items": [{"product_id": product_id}]})
    assert order.status_code == 201, order.get_json()
    payment = client.post(f"/api/v1/orders/{order.get_json()['id']}/payments", headers=buyer.headers,
                          json={"channel": "sandbox"}).get_json()
    body = fake_channel.notification_body(payment["id"], payment["amount"])
    assert client.post("/notify/sandbox", data=body, content_type="application/json").status_code == 200
    return payment


@pytest.fixture
def world(app, client, ctx, make_user, creator, published_product, fake_channel) -> dict:
    """One of everything, owned by a first buyer, a first creator and an admin."""
    buyer, admin = make_user("buyer"), make_user("admin", second_factor=True)
    payment = _paid_payment(client, buyer, published_product["id"], fake_channel)
    refund = client.post("/api/v1/refunds", headers=buyer.headers, json={"payment_id": payment["id"], "amount": 100})
    assert refund.status_code == 201, refund.get_json()
    draft = client.post("/api/v1/products", headers=creator.headers,
                        json={"title": "Draft", "kind": "ebook", "amount": 500, "currency": "cny"})
    endpoint = client.post("/api/v1/webhook-endpoints", headers=admin.headers,
                           json={"url": "https://hooks.example.com/k", "events": ["order.paid"]})
    assert endpoint.status_code == 201, endpoint.get_json()
    with ctx.db.transaction() as session:  # a payout as the payouts service leaves it, without settling first
        payout = Payout(creator_id=creator.id, amount=100, currency="cny", status="requested",
                        destination_encrypted="-", destination_display="Bank ****1234",
                        created_at=datetime(2026, 11, 25, 4, 0))
        session.add(payout)
        session.flush()
        payout_id = payout.id
    objects = {"order": payment["order_id"], "payment": payment["id"], "refund": refund.get_json()["id"],
               "draft_product": draft.get_json()["id"], "payout": payout_id, "buyer": buyer.id,
               "webhook_endpoint": endpoint.get_json()["id"]}
    if "support.get_ticket" in app.view_functions:
        ticket = client.post("/api/v1/tickets", headers=buyer.headers,
                             json={"subject": "Where is my course", "body": "Paid, no access.",
                                   "order_id": payment["order_id"]})
        assert ticket.status_code == 201, ticket.get_json()
        objects["ticket"] = ticket.get_json()["id"]
    return {"objects": objects, "owners": {"buyer": buyer, "creator": creator},
            "others": [make_user("buyer"), make_user("creator")]}


def object_routes(app) -> list[tuple[str, str, str]]:
    """(rule, method, endpoint) of every API route whose path names an object by `<id>`."""
    found = []
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/") and "id" in rule.arguments:
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                found.append((rule.rule, method, rule.endpoint))
    return sorted(found)


def object_key(rule: str) -> str | None:
    prefix = rule[: rule.index("id>") + 3]
    assert prefix in OBJECTS, f"{rule}: add which object its <id> names to OBJECTS in {__file__}"
    return OBJECTS[prefix]


def made_up(real: str | None) -> str:
    if real is None or "_" not in real:
        return new_id("ord")
    return new_id(real.split("_", 1)[0])


def fill(rule: str, id_value: str | int) -> str:
    def value(match: re.Match) -> str:
        converter, name = match.group(1), match.group(2)
        if name == "id":
            return str(987654 if converter == "int" else id_value)
        return OTHER_ARGUMENTS[name]

    return re.sub(r"<(?:(\w+):)?(\w+)>", value, rule)


def minimal_body(app, rule: str, method: str) -> dict | None:
    """The smallest body the route's schema accepts, so that only ownership decides the answer."""
    doc = app.api_doc
    path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)
    operation = doc["paths"].get(path, {}).get(method.lower(), {})
    schema = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if schema is None:
        return None
    return example(doc, schema)


def example(doc: dict, schema: dict):
    if "$ref" in schema:
        return example(doc, doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]])
    if "anyOf" in schema:
        return example(doc, next(s for s in schema["anyOf"] if s.get("type") != "null"))
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: example(doc, props[name]) for name in schema.get("required", [])}
    if kind == "array":
        return [example(doc, schema.get("items", {"type": "string"}))] * max(schema.get("minItems", 0), 1)
    if kind == "integer":
        return max(schema.get("minimum", 1), schema.get("exclusiveMinimum", 0) + 1)
    if kind == "boolean":
        return False
    return "sweep"


def call(client, method: str, url: str, headers: dict, body):
    return client.open(url, method=method, headers=headers, json=body if body is not None else None)


def answer(response) -> tuple[int, str | None]:
    return response.status_code, (response.get_json(silent=True) or {}).get("error", {}).get("code")


def test_owners_can_read_their_objects(app, client, world):
    """The sweep's ids are real: each object's owner reads it on every GET route (streams aside)."""
    owners = world["owners"]
    for rule, method, endpoint in object_routes(app):
        key = object_key(rule)
        if method != "GET" or key not in ("order", "payment", "refund", "ticket", "draft_product", "payout") \
                or rule.endswith("/stream") or rule.startswith("/api/v1/support/"):
            continue
        owner = owners["creator"] if key in ("draft_product", "payout") else owners["buyer"]
        response = client.get(fill(rule, world["objects"][key]), headers=owner.headers)
        assert response.status_code == 200, (rule, response.get_json())


def test_a_second_user_gets_404_on_every_object_route(app, client, world):
    routes = object_routes(app)
    assert len(routes) >= 20, routes
    checked = 0
    for rule, method, endpoint in routes:
        key = object_key(rule)
        real = world["objects"].get(key) if key else None
        body = BODIES.get(endpoint) or minimal_body(app, rule, method)
        for other in world["others"]:
            theirs = call(client, method, fill(rule, real or made_up(None)), other.headers, body)
            nobodys = call(client, method, fill(rule, made_up(real)), other.headers, body)
            where = f"{method} {rule} as another {other.email.split('@')[0].rstrip('0123456789')}"
            assert theirs.status_code < 500, (where, theirs.get_data(as_text=True))
            # Someone else's object and no object at all look exactly the same ...
            assert answer(theirs) == answer(nobodys), (where, theirs.get_json(), nobodys.get_json())
            # ... and are 404, unless the route is closed to this role altogether.
            status, code = answer(theirs)
            assert status == 404 or (status == 403 and code == "role_required"), (where, theirs.get_json())
            checked += 1
    assert checked == 2 * len(routes)
