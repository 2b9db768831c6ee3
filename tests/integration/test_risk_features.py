"""Features computed online (checkout) and offline (replayed history) by the same code agree."""

from __future__ import annotations

import math

from sqlalchemy import select

from knowpay.risk.models import RiskDecision
from knowpay.risk.replay import replay

TIME_DEPENDENT = {"account_age_seconds", "hour"}


def _pay(client, buyer, product_id, fake_channel, *, notify: bool = True, **body) -> dict:
    order = client.post("/api/v1/orders", headers=buyer.headers, json={"items": [{"product_id": product_id}]})
    payment = client.post(f"/api/v1/orders/{order.get_json()['id']}/payments", headers=buyer.headers,
                          json={"channel": "sandbox", **body}).get_json()
    if notify:
        note = fake_channel.notification_body(payment["id"], payment["amount"])
        assert client.post("/notify/sandbox", data=note, content_type="application/json").status_code == 200
    return payment


def test_the_signals_a_payment_was_decided_on_are_the_ones_replay_computes(client, ctx, buyer, make_user,
                                                                            published_product, fake_channel):
    first = _pay(client, buyer, published_product["id"], fake_channel, device_id="tab-1")
    _pay(client, buyer, published_product["id"], fake_channel, device_id="tab-1")
    refund = client.post("/api/v1/refunds", headers=buyer.headers,
                         json={"payment_id": first["id"], "amount": 4000, "reason": "half"})
    assert refund.status_code == 201, refund.get_json()
    friend = make_user("buyer")
    _pay(client, friend, published_product["id"], fake_channel, device_id="tab-1")
    last = _pay(client, buyer, published_product["id"], fake_channel, notify=False, device_id="tab-1")

    with ctx.db.transaction(write=False) as session:
        online = session.scalars(select(RiskDecision).where(RiskDecision.payment_id == last["id"])).one()
    [(attempt, offline, row)] = [found for found in replay(ctx, with_vectors=True)
                                 if found[0].payment_id == last["id"]]

    signals = online.inputs["signals"]
    assert (signals["history_count"], signals["history_total"], signals["refunded_payments"],
            signals["refunded_amount"], signals["attempts_user_600"], signals["accounts_device_2592000"]) == (
        2, 19800, 1, 4000, 3, 2)
    assert {k: v for k, v in offline.items() if k not in TIME_DEPENDENT} == {
        k: v for k, v in signals.items() if k not in TIME_DEPENDENT}
    assert abs(offline["account_age_seconds"] - signals["account_age_seconds"]) <= 1
    for name, value in zip(online.features, row, strict=True):
        assert math.isclose(online.features[name], value, abs_tol=1e-4) or name.startswith("hour"), name
