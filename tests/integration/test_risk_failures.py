"""Failed payments feed the velocity counters: a channel's decline and a rejected review count as failed
attempts of the buyer, their IP and their device; a channel that cannot be reached does not."""

from __future__ import annotations

from sqlalchemy import select

from knowpay.risk.models import RiskCounterEvent, RiskDecision

IP = "36.112.0.7"
DEVICE = "phone-7"


def pay(client, buyer, product_id):  # type: ignore[no-untyped-def]
    order = client.post("/api/v1/orders", headers=buyer.headers, json={"items": [{"product_id": product_id}]})
    assert order.status_code == 201, order.get_json()
    return client.post(f"/api/v1/orders/{order.get_json()['id']}/payments", headers=buyer.headers,
                       json={"channel": "sandbox", "device_id": DEVICE}, environ_base={"REMOTE_ADDR": IP})


def decline(client, fake_channel, payment: dict) -> None:
    body = fake_channel.notification_body(payment["id"], payment["amount"], status="failed")
    assert client.post("/notify/sandbox", data=body, content_type="application/json").status_code == 200


def failures_seen_by_last_decision(ctx) -> dict:
    with ctx.db.transaction(write=False) as session:
        last = session.scalars(select(RiskDecision).order_by(RiskDecision.created_at.desc())).first()
        signals = last.inputs["signals"]
    return {name: signals[f"failures_{name}_600"] for name in ("user", "ip", "device")}


def failure_rows(ctx) -> list[tuple[str, str]]:
    with ctx.db.transaction(write=False) as session:
        return sorted(tuple(row) for row in session.execute(select(RiskCounterEvent.key, RiskCounterEvent.member)
                      .where(RiskCounterEvent.key.like("fail:%"))))


def test_a_declined_payment_counts_as_a_failure_of_the_buyer_ip_and_device(client, ctx, buyer, published_product,
                                                                           fake_channel):
    first = pay(client, buyer, published_product["id"]).get_json()
    decline(client, fake_channel, first)
    decline(client, fake_channel, first)  # a repeated notification changes nothing, nor counts twice

    assert failure_rows(ctx) == [(f"fail:pay:device:{DEVICE}", first["id"]), (f"fail:pay:ip:{IP}", first["id"]),
                                  (f"fail:pay:user:{buyer.id}", first["id"])]
    second = pay(client, buyer, published_product["id"])
    assert second.status_code == 201, second.get_json()
    assert failures_seen_by_last_decision(ctx) == {"user": 1, "ip": 1, "device": 1}


def test_a_channel_that_cannot_be_reached_is_not_the_buyers_failure(client, ctx, buyer, published_product,
                                                                     fake_channel):
    fake_channel.unavailable = True
    down = pay(client, buyer, published_product["id"])
    assert down.status_code == 503, down.get_json()
    fake_channel.unavailable = False

    assert failure_rows(ctx) == []
    assert pay(client, buyer, published_product["id"]).status_code == 201
    assert failures_seen_by_last_decision(ctx) == {"user": 0, "ip": 0, "device": 0}


def test_a_rejected_review_counts_once_as_a_failure(client, ctx, admin, buyer, published_product, fake_channel):
    changed = client.patch("/api/v1/risk/rules/amount", headers=admin.headers, json={"params": {"max_amount": 5000}})
    assert changed.status_code == 200, changed.get_json()
    held = pay(client, buyer, published_product["id"]).get_json()
    [review] = client.get("/api/v1/risk/reviews", headers=admin.headers).get_json()["data"]

    assert client.post(f"/api/v1/risk/reviews/{review['id']}/reject", headers=admin.headers,
                       json={}).status_code == 200

    assert {member for _, member in failure_rows(ctx)} == {held["id"]}
    assert len(failure_rows(ctx)) == 3

