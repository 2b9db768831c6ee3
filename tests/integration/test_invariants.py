"""`check_invariants` is clean after real activity and names what is wrong after tampering."""

from __future__ import annotations

from sqlalchemy import select, text, update

from knowpay.access.models import Entitlement
from knowpay.invariants import check_invariants
from knowpay.outbox.models import OutboxEvent
from tests.fakes import buy


def test_clean_after_sales_and_refunds(client, ctx, buyer, published_product, fake_channel):
    paid = [buy(client, buyer, published_product["id"], fake_channel) for _ in range(3)]
    client.post("/api/v1/refunds", headers=buyer.headers, json={"payment_id": paid[0]["id"], "amount": 100})
    client.post("/api/v1/refunds", headers=buyer.headers, json={"payment_id": paid[1]["id"]})
    report = check_invariants(ctx)
    assert report.ok, report.as_dict()
    assert report.checked["orders"] == 3 and report.checked["entitlements"] == 3


def test_tampering_is_reported_with_the_offending_ids_and_an_event(client, ctx, buyer, published_product,
                                                                   fake_channel):
    paid = buy(client, buyer, published_product["id"], fake_channel)
    with ctx.db.transaction() as session:
        session.execute(update(Entitlement).where(Entitlement.order_id == paid["order_id"]).values(status="revoked"))
        txn_id, account_id = session.execute(text(
            "SELECT p.transaction_id, p.account_id FROM postings p JOIN ledger_accounts a ON a.id = p.account_id "
            "WHERE a.code = 'platform:fees:cny'")).one()
        session.execute(text("INSERT INTO postings (id, transaction_id, position, account_id, amount, currency) "
                             "VALUES ('pst_stray', :t, 99, :a, -1, 'cny')"), {"t": txn_id, "a": account_id})
    report = check_invariants(ctx)
    checks = {v.check: v.ids for v in report.violations}
    assert checks["ledger_balanced"] == [txn_id]
    assert len(checks["access"]) == 1
    with ctx.db.transaction(write=False) as session:
        assert session.scalars(select(OutboxEvent.type).where(OutboxEvent.type == "invariant.violated")).one()
