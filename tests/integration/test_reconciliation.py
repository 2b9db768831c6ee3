"""Reconciliation finds exactly the discrepancies planted in a bill, and nothing else."""

from __future__ import annotations

from sqlalchemy import select

from knowpay.reconciliation.models import ReconciliationItem, ReconciliationRun
from knowpay.reconciliation.service import day_bounds, items_of, local_day, reconcile
from tests.fakes import buy


def _line(payment: dict, **changes) -> dict:
    return {"kind": "payment", "payment_id": payment["id"], "channel_trade_no": payment["channel_trade_no"],
            "amount": payment["amount"], "currency": "cny", "status": "SUCCESS", "occurred_at": None, **changes}


def test_planted_discrepancies_are_found_and_nothing_else(client, ctx, buyer, published_product, fake_channel):
    sold = [buy(client, buyer, published_product["id"], fake_channel) for _ in range(5)]
    refund = client.post("/api/v1/refunds", headers=buyer.headers,
                         json={"payment_id": sold[0]["id"], "amount": 1000}).get_json()
    pending_order = client.post("/api/v1/orders", headers=buyer.headers,
                                json={"items": [{"product_id": published_product["id"]}]}).get_json()
    unpaid = client.post(f"/api/v1/orders/{pending_order['id']}/payments", headers=buyer.headers,
                         json={"channel": "sandbox"}).get_json()
    fake_channel.trades[unpaid["id"]]["status"] = "succeeded"  # paid at the channel, notification lost
    day = local_day(ctx.clock.now(), ctx.settings.timezone)
    fake_channel.bills[day.isoformat()] = [
        _line(sold[0]), _line(sold[1]),
        _line(sold[2], amount=9800),                                   # amount mismatch
        # sold[3] missing from the bill                                 # with us, not at the channel
        _line(sold[4]),
        _line({"id": "pay_unknownunknownunknown0", "channel_trade_no": "TX", "amount": 500}),  # not with us
        _line(unpaid),                                                 # status mismatch → queried, captured
        {"kind": "refund", "payment_id": sold[0]["id"], "refund_id": refund["id"], "channel_trade_no": None,
         "amount": 1000, "currency": "cny", "status": "REFUND_SUCCESS", "occurred_at": None},
    ]
    progress: list[tuple[int, int]] = []
    run = reconcile(ctx, channel="sandbox", day=day, progress=lambda n, total: progress.append((n, total)))
    assert run.status == "completed"
    assert run.counts == {"matched": 4, "amount_mismatch": 1, "missing_channel": 1, "missing_internal": 1,
                          "status_mismatch": 1}
    found = {(i.result, i.payment_id) for i in items_of(ctx, run.id) if i.result != "matched"}
    assert found == {("amount_mismatch", sold[2]["id"]), ("missing_channel", sold[3]["id"]),
                     ("missing_internal", "pay_unknownunknownunknown0"), ("status_mismatch", unpaid["id"])}
    assert progress[-1] == (7, 7)
    # the status mismatch made us ask the channel, which completed the lost payment
    assert client.get(f"/api/v1/payments/{unpaid['id']}", headers=buyer.headers).get_json()["status"] == "succeeded"

    again = reconcile(ctx, channel="sandbox", day=day)
    assert again.id == run.id and again.runs == 2
    with ctx.db.transaction(write=False) as session:
        assert len(list(session.scalars(select(ReconciliationRun)))) == 1
        assert len(list(session.scalars(select(ReconciliationItem)))) == 8


def test_a_clean_day_matches_everything(client, ctx, buyer, published_product, fake_channel):
    sold = [buy(client, buyer, published_product["id"], fake_channel) for _ in range(3)]
    day = local_day(ctx.clock.now(), ctx.settings.timezone)
    start, end = day_bounds(day, ctx.settings.timezone)
    assert start <= ctx.clock.now() < end
    fake_channel.bills[day.isoformat()] = [_line(p) for p in sold]
    run = reconcile(ctx, channel="sandbox", day=day)
    assert run.counts == {"matched": 3}


def test_admins_see_runs_and_export_them_as_csv(client, ctx, buyer, admin, published_product, fake_channel):
    sold = buy(client, buyer, published_product["id"], fake_channel)
    day = local_day(ctx.clock.now(), ctx.settings.timezone)
    fake_channel.bills[day.isoformat()] = [_line(sold, amount=1)]
    run = reconcile(ctx, channel="sandbox", day=day)
    assert client.get("/api/v1/reconciliation/runs", headers=buyer.headers).status_code == 403
    listed = client.get("/api/v1/reconciliation/runs", headers=admin.headers).get_json()
    assert [r["id"] for r in listed["data"]] == [run.id]
    assert listed["data"][0]["counts"] == {"amount_mismatch": 1}
    csv_text = client.get(f"/api/v1/reconciliation/runs/{run.id}/items?format=csv", headers=admin.headers)
    assert csv_text.mimetype == "text/csv"
    lines = csv_text.get_data(as_text=True).strip().splitlines()
    assert lines[0].startswith("kind,result,payment_id")
    assert lines[1].startswith(f"payment,amount_mismatch,{sold['id']}")
