"""GET /payments/{id}/stream: a `status` event per change, closing after a final status."""

from __future__ import annotations

import json
import threading
import time

from knowpay.web.api import payments as payments_api


def _events(chunks) -> list[dict]:
    text = "".join(c.decode() if isinstance(c, bytes) else c for c in chunks)
    found = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if lines.get("event") == "status":
            found.append(json.loads(lines["data"]))
    return found


def test_stream_sends_each_status_and_closes_after_success(app, client, buyer, published_product, fake_channel,
                                                           monkeypatch):
    monkeypatch.setattr(payments_api, "STREAM_POLL_SECONDS", 0.05)
    order = client.post("/api/v1/orders", headers=buyer.headers,
                        json={"items": [{"product_id": published_product["id"]}]}).get_json()
    payment = client.post(f"/api/v1/orders/{order['id']}/payments", headers=buyer.headers,
                          json={"channel": "sandbox"}).get_json()

    def pay_soon() -> None:
        time.sleep(0.3)
        body = fake_channel.notification_body(payment["id"], payment["amount"])
        app.test_client().post("/notify/sandbox", data=body, content_type="application/json")

    payer = threading.Thread(target=pay_soon)
    payer.start()
    started = time.monotonic()
    response = client.get(f"/api/v1/payments/{payment['id']}/stream", headers=buyer.headers, buffered=False)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    events = _events(response.response)
    payer.join()
    assert [e["status"] for e in events] == ["requires_action", "succeeded"]
    assert events[-1]["id"] == payment["id"]
    assert time.monotonic() - started < 10


def test_stream_of_someone_elses_payment_is_404(client, make_user, buyer, published_product):
    order = client.post("/api/v1/orders", headers=buyer.headers,
                        json={"items": [{"product_id": published_product["id"]}]}).get_json()
    payment = client.post(f"/api/v1/orders/{order['id']}/payments", headers=buyer.headers,
                          json={"channel": "sandbox"}).get_json()
    stranger = make_user("buyer")
    answer = client.get(f"/api/v1/payments/{payment['id']}/stream", headers=stranger.headers)
    assert answer.status_code == 404
    assert answer.get_json()["error"]["type"] == "not_found"
