"""Match one day of a channel's bill against our payments and refunds; store and summarise the result.

Per line: matched; at the channel but not with us (money received with no record: alerted, and
the channel is queried at once for payments we do know); with us but not at the channel; amount
mismatch; status mismatch. Re-running a day replaces that day's items, so it is idempotent.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from knowpay.channels.base import BillLine
from knowpay.context import Context
from knowpay.domain.states import PaymentStatus, RefundStatus
from knowpay.outbox.service import record_event
from knowpay.payments.models import Payment
from knowpay.reconciliation.models import ReconciliationItem, ReconciliationRun
from knowpay.refunds.models import Refund

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


def local_day(moment: datetime, tz: str) -> date:
    """The platform-time-zone date of a naive UTC moment."""
    return moment.replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(tz)).date()


def day_bounds(day: date, tz: str) -> tuple[datetime, datetime]:
    """The platform-time-zone day as naive UTC [start, end)."""
    zone = ZoneInfo(tz)
    start = datetime.combine(day, time.min, tzinfo=zone).astimezone(ZoneInfo("UTC")).replace(tzinfo=None)
    return start, start + timedelta(days=1)


def _ours(ctx: Context, channel: str, day: date) -> tuple[dict[str, Payment], dict[str, Refund]]:
    start, end = day_bounds(day, ctx.settings.timezone)
    with ctx.db.transaction(write=False) as session:
        payments = {p.id: p for p in session.scalars(select(Payment).where(
            Payment.channel == channel, Payment.succeeded_at >= start, Payment.succeeded_at < end))}
        refunds = {r.id: r for r in session.scalars(
            select(Refund).join(Payment, Payment.id == Refund.payment_id).where(
                Payment.channel == channel, Refund.status == RefundStatus.SUCCEEDED,
                Refund.succeeded_at >= start, Refund.succeeded_at < end))}
    return payments, refunds


def _item(line: BillLine | None, result: str, *, ours: int | None = None, detail: str | None = None,
          payment_id: str | None = None, refund_id: str | None = None) -> dict:
    return {"kind": line.kind if line else ("refund" if refund_id else "payment"), "result": result,
            "payment_id": line.payment_id if line else payment_id,
            "refund_id": (line.refund_id if line else None) or refund_id,
            "channel_trade_no": line.channel_trade_no if line else None,
            "channel_amount": line.amount if line else None, "our_amount": ours,
            "currency": line.currency if line else None, "detail": detail}


def match(ctx: Context, channel: str, day: date, lines: Iterable[BillLine], *,
          progress: Progress | None = None) -> list[dict]:
    """Compare bill lines with our records; returns one item per line and per unmatched record of ours."""
    payments, refunds = _ours(ctx, channel, day)
    lines = list(lines)
    seen_payments, seen_refunds = set(), set()
    items = []
    with ctx.db.transaction(write=False) as session:
        for n, line in enumerate(lines, 1):
            if line.kind == "refund":
                refund = refunds.get(line.refund_id or "") or (
                    session.get(Refund, line.refund_id) if line.refund_id else None)
                if refund is None:
                    items.append(_item(line, "missing_internal", detail="refund at the channel, none with us"))
                else:
                    seen_refunds.add(refund.id)
                    items.append(_compare(line, refund.amount, refund.status == RefundStatus.SUCCEEDED,
                                          refund.status))
            else:
                payment = payments.get(line.payment_id) or session.get(Payment, line.payment_id)
                if payment is None:
                    items.append(_item(line, "missing_internal", detail="money received with no payment of ours"))
                else:
                    seen_payments.add(payment.id)
                    items.append(_compare(line, payment.amount, payment.status == PaymentStatus.SUCCEEDED,
                                          payment.status))
            if progress:
                progress(n, len(lines))
    for payment_id, payment in payments.items():
        if payment_id not in seen_payments:
            items.append(_item(None, "missing_channel", ours=payment.amount, payment_id=payment_id,
                               detail="succeeded with us, absent from the channel's bill"))
    for refund_id, refund in refunds.items():
        if refund_id not in seen_refunds:
            items.append(_item(None, "missing_channel", ours=refund.amount, payment_id=refund.payment_id,
                               refund_id=refund_id, detail="refunded with us, absent from the channel's bill"))
    return items


def _compare(line: BillLine, ours: int, succeeded_with_us: bool, our_status: str) -> dict:
    if line.amount != ours:
        return _item(line, "amount_mismatch", ours=ours, detail=f"channel {line.amount}, ours {ours}")
    if not succeeded_with_us:
        return _item(line, "status_mismatch", ours=ours, detail=f"channel {line.status}, ours {our_status}")
    return _item(line, "matched", ours=ours)


def _start_run(ctx: Context, channel: str, day: date, source: str) -> str:
    now = ctx.clock.now()
    with ctx.db.transaction() as session:
        run = session.scalar(select(ReconciliationRun).where(ReconciliationRun.channel == channel,
                                                             ReconciliationRun.day == day))
        if run is None:
            run = ReconciliationRun(channel=channel, day=day, status="running", source=source, counts={},
                                    runs=1, created_at=now, started_at=now)
            try:
                with session.begin_nested():
                    session.add(run)
                    session.flush()
            except IntegrityError:
                run = session.scalars(select(ReconciliationRun).where(
                    ReconciliationRun.channel == channel, ReconciliationRun.day == day)).one()
        else:
            run.status, run.source, run.started_at, run.finished_at, run.error = "running", source, now, None, None
            run.runs += 1
        return run.id


def reconcile(ctx: Context, *, channel: str, day: date, data: bytes | None = None, source: str = "channel",
              progress: Progress | None = None) -> ReconciliationRun:
    """Fetch (or take) the day's bill, match it, and store the run with its items."""
    adapter = ctx.channels.get(channel)
    run_id = _start_run(ctx, channel, day, source)
    try:
        raw = data if data is not None else adapter.fetch_bill(day.isoformat())
        items = match(ctx, channel, day, adapter.parse_bill(raw), progress=progress)
    except Exception as exc:
        with ctx.db.transaction() as session:
            run = session.get(ReconciliationRun, run_id)
            run.status, run.error, run.finished_at = "failed", str(exc)[:500], ctx.clock.now()
        raise
    counts = dict(Counter(item["result"] for item in items))
    with ctx.db.transaction() as session:
        session.execute(delete(ReconciliationItem).where(ReconciliationItem.run_id == run_id))
        session.add_all(ReconciliationItem(run_id=run_id, **item) for item in items)
        run = session.get(ReconciliationRun, run_id)
        run.status, run.counts, run.finished_at = "completed", counts, ctx.clock.now()
        problems = [i for i in items if i["result"] != "matched"]
        if problems:
            log.error("reconciliation %s %s: %d discrepancies %s", channel, day, len(problems), counts)
            record_event(session, type="reconciliation.discrepancy", object_type="reconciliation_run",
                         object_id=run_id, sequence=run.runs,
                         payload={"id": run_id, "channel": channel, "day": day.isoformat(), "counts": counts,
                                  "items": problems[:100]}, clock=ctx.clock)
    _query_unsettled(ctx, [i for i in items if i["result"] == "status_mismatch" and i["kind"] == "payment"])
    with ctx.db.transaction(write=False) as session:
        return session.get(ReconciliationRun, run_id)


def _query_unsettled(ctx: Context, items: list[dict]) -> None:
    """Money at the channel for a payment we do not show as paid: ask the channel now, which captures it."""
    from knowpay.payments.maintenance import query_payment

    for item in items:
        with ctx.db.transaction(write=False) as session:
            payment = session.get(Payment, item["payment_id"])
        if payment is not None and payment.channel in ctx.channels:
            query_payment(ctx, payment)


def items_of(ctx: Context, run_id: str) -> list[ReconciliationItem]:
    with ctx.db.transaction(write=False) as session:
        return list(session.scalars(select(ReconciliationItem).where(ReconciliationItem.run_id == run_id)
                                    .order_by(ReconciliationItem.id)))
