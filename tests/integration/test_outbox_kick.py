"""A commit that writes outbox events wakes a worker through the queue; other commits do not."""

from __future__ import annotations

from knowpay.jobs.queue import make_huey
from knowpay.jobs.tasks import register_tasks


def test_a_capture_enqueues_one_outbox_kick_and_a_plain_order_none(client, ctx, buyer, published_product,
                                                                    fake_channel):
    huey = make_huey(ctx.settings)
    register_tasks(huey, lambda: ctx)  # so the queued task can be read back by name
    huey.flush()
    order = client.post("/api/v1/orders", headers=buyer.headers,
                        json={"items": [{"product_id": published_product["id"]}]}).get_json()
    assert huey.pending_count() == 0
    payment = client.post(f"/api/v1/orders/{order['id']}/payments", headers=buyer.headers,
                          json={"channel": "sandbox"}).get_json()
    body = fake_channel.notification_body(payment["id"], payment["amount"])
    client.post("/notify/sandbox", data=body, content_type="application/json")
    assert [task.name for task in huey.pending()] == ["kick_outbox"]
    client.post("/notify/sandbox", data=body, content_type="application/json")  # duplicate: writes no event
    assert huey.pending_count() == 1
