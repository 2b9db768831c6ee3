"""Carry pending refunds through their channel and complete them in the ledger, exactly once."""

from __future__ import annotations

import logging

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from knowpay.access.service import revoke_for_order
from knowpay.channels.base import Notification, RefundRequest
from knowpay.context import Context
from knowpay.domain.errors import ChannelUnavailable
from knowpay.domain.reversal import reversal_step
from knowpay.domain.states import OrderStatus, RefundStatus
from knowpay.ledger import chart
from knowpay.ledger.models import JournalTransaction, LedgerAccount, Posting
from knowpay.ledger.service import Leg, post_transaction
from knowpay.orders.models import Order
from knowpay.outbox.service import record_event
from knowpay.payments.models import Payment
from knowpay.refunds.models import Refund
from knowpay.representations import RefundOut, as_json

log = logging.getLogger(__name__)
BATCH = 100


def _capture_legs(session: Session, payment: Payment) -> dict[str, int]:
    rows = session.execute(
        select(LedgerAccount.code, Posting.amount).join(Posting, Posting.account_id == LedgerAccount.id)
        .join(JournalTransaction, JournalTransaction.id == Posting.transaction_id)
        .where(JournalTransaction.idempotency_key == f"payment:{payment.id}:captured")).all()
    legs: dict[str, int] = {}
    for code, amount in rows:
        legs[code] = legs.get(code, 0) + amount
    return legs


def _post_refund_ledger(session: Session, refund: Refund, payment: Payment, ctx: Context) -> None:
    source = (chart.wallet(payment.buyer_id, payment.currency) if payment.channel == "wallet"
              else chart.clearing(payment.channel, payment.currency))
    if refund.kind == "duplicate_payment":
        due = chart.refunds_due(refund.currency)
        post_transaction(session, key=f"refund:{refund.id}:succeeded", kind="refund_unneeded",
                         legs=[Leg(due.code, refund.amount, refund.currency),
                               Leg(source.code, -refund.amount, refund.currency)],
                         accounts=[due, source], description=f"refund {refund.id} of unneeded {payment.id}",
                         meta={"refund_id": refund.id, "payment_id": payment.id}, clock=ctx.clock)
        return
    legs = _capture_legs(session, payment)
    before = payment.amount_refunded
    step = reversal_step(legs, captured=payment.amount, before=before, after=before + refund.amount,
                         debit_remainder=source.code, credit_remainder=chart.platform_fees(payment.currency).code)
    if payment.settled_at is not None:
        # Earnings already available: the refund comes out of them, even below zero (recovered later).
        step = {code.replace(":pending:", ":available:") if code.startswith("creator:") else code: amount
                for code, amount in step.items()}
    specs = [chart.creator_available(code.split(":")[1], payment.currency)
             for code in step if code.startswith("creator:") and ":available:" in code]
    post_transaction(session, key=f"refund:{refund.id}:succeeded", kind="refund",
                     legs=[Leg(code, amount, refund.currency) for code, amount in step.items()],
                     accounts=specs, description=f"refund {refund.id} of {payment.id}",
                     meta={"refund_id": refund.id, "payment_id": payment.id}, clock=ctx.clock)
    _mark_order_refunded(session, refund, ctx)


def _mark_order_refunded(session: Session, refund: Refund, ctx: Context) -> None:
    order = session.get(Order, refund.order_id, with_for_update=True)
    refunded = order.amount_refunded + refund.amount
    status = OrderStatus.REFUNDED if refunded >= order.amount_total else OrderStatus.PARTIALLY_REFUNDED
    session.execute(update(Order).where(
        Order.id == order.id, Order.status.in_([OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED]))
        .values(amount_refunded=refunded, status=status, version=Order.version + 1))
    if status == OrderStatus.REFUNDED:
        revoke_for_order(session, order.id, clock=ctx.clock)


def complete_refund(session: Session, refund_id: str, *, channel_refund_no: str | None, ctx: Context) -> bool:
    """pending → succeeded once: ledger posted, payment's refunded amount raised, event written."""
    moved = session.execute(update(Refund).where(Refund.id == refund_id, Refund.status == RefundStatus.PENDING)
                            .values(status=RefundStatus.SUCCEEDED, succeeded_at=ctx.clock.now(),
                                    channel_refund_no=channel_refund_no, version=Refund.version + 1))
    if moved.rowcount != 1:
        return False
    refund = session.get(Refund, refund_id, populate_existing=True)
    payment = session.get(Payment, refund.payment_id, with_for_update=True, populate_existing=True)
    _post_refund_ledger(session, refund, payment, ctx)  # reads the refunded amount before this refund
    session.execute(update(Payment).where(Payment.id == payment.id)
                    .values(amount_refunded=Payment.amount_refunded + refund.amount))
    record_event(session, type="refund.succeeded", object_type="refund", object_id=refund.id,
                 sequence=refund.version, payload=as_json(RefundOut, refund), clock=ctx.clock)
    return True


def fail_refund(session: Session, refund_id: str, *, code: str, ctx: Context) -> bool:
    moved = session.execute(update(Refund).where(Refund.id == refund_id, Refund.status == RefundStatus.PENDING)
                            .values(status=RefundStatus.FAILED, failure_code=code, version=Refund.version + 1))
    if moved.rowcount == 1:
        refund = session.get(Refund, refund_id, populate_existing=True)
        record_event(session, type="refund.failed", object_type="refund", object_id=refund.id,
                     sequence=refund.version, payload=as_json(RefundOut, refund), clock=ctx.clock)
    return moved.rowcount == 1


def refund_request(refund: Refund, payment: Payment, ctx: Context) -> RefundRequest:
    return RefundRequest(refund_id=refund.id, payment_id=payment.id, channel_trade_no=payment.channel_trade_no,
                         amount=refund.amount, payment_amount=payment.amount, currency=refund.currency,
                         reason=refund.reason, notify_url=f"{ctx.settings.base_url}/notify/{payment.channel}")


def push_refund(ctx: Context, refund_id: str) -> str:
    """Ask the channel to refund (idempotent by our refund id) and record its answer → the refund's status."""
    with ctx.db.transaction(write=False) as session:
        refund = session.get(Refund, refund_id)
        payment = session.get(Payment, refund.payment_id)
        if refund.status != RefundStatus.PENDING:
            return refund.status
        request = refund_request(refund, payment, ctx)
    if payment.channel == "wallet":
        with ctx.db.transaction() as session:
            complete_refund(session, refund_id, channel_refund_no=None, ctx=ctx)
        return RefundStatus.SUCCEEDED
    channel = ctx.channels.get(payment.channel)
    with ctx.db.transaction() as session:
        session.execute(update(Refund).where(Refund.id == refund_id).values(attempts=Refund.attempts + 1))
    try:
        answer = channel.refund(request)
    except ChannelUnavailable as exc:
        log.warning("refund %s: channel %s unavailable (%s); will retry", refund_id, payment.channel, exc.message)
        return RefundStatus.PENDING
    with ctx.db.transaction() as session:
        if answer.status == "succeeded":
            complete_refund(session, refund_id, channel_refund_no=answer.channel_refund_no, ctx=ctx)
        elif answer.status == "failed":
            fail_refund(session, refund_id, code=answer.failure_code or "channel_refused", ctx=ctx)
        return session.scalar(select(Refund.status).where(Refund.id == refund_id))


def process_pending_refunds(ctx: Context) -> int:
    """The worker's sweep: push every pending refund to its channel; returns how many completed."""
    with ctx.db.transaction(write=False) as session:
        ids = list(session.scalars(select(Refund.id).where(Refund.status == RefundStatus.PENDING)
                                   .order_by(Refund.created_at).limit(BATCH)))
    return sum(push_refund(ctx, refund_id) != RefundStatus.PENDING for refund_id in ids)


def apply_refund_notification(session: Session, notification: Notification, ctx: Context) -> tuple[str, str | None]:
    """A channel telling us a refund finished. One made outside KnowPay (in the channel's merchant
    dashboard) is recorded as an external refund, with its ledger reversal and access change."""
    if notification.status not in ("succeeded", "failed"):
        return "ignored", f"refund status {notification.status} needs no action"
    refund = session.get(Refund, notification.refund_id) if notification.refund_id else None
    if refund is None:
        if notification.status != "succeeded":
            return "ignored", "a failed refund we never asked for"
        return record_external_refund(session, notification, ctx)
    if refund.payment_id != notification.payment_id:
        return "rejected", f"refund {refund.id} belongs to another payment"
    if notification.amount != refund.amount or notification.currency != refund.currency:
        return "rejected", "refund amount or currency does not match"
    if notification.status == "succeeded":
        done = complete_refund(session, refund.id, channel_refund_no=notification.details.get("refund_no"),
                               ctx=ctx)
    else:
        done = fail_refund(session, refund.id, code=notification.details.get("code", "channel_refused"), ctx=ctx)
    return ("processed" if done else "duplicate"), None


def record_external_refund(session: Session, notification: Notification, ctx: Context) -> tuple[str, str | None]:
    payment = session.get(Payment, notification.payment_id, with_for_update=True)
    if payment is None or payment.status != "succeeded" or notification.currency != payment.currency:
        return "rejected", f"refund for unknown or unpaid payment {notification.payment_id!r}"
    channel_no = notification.details.get("refund_no") or notification.refund_id or notification.event_id
    if channel_no and session.scalar(select(Refund.id).where(Refund.payment_id == payment.id,
                                                             Refund.channel_refund_no == channel_no)):
        return "duplicate", "external refund already recorded"
    taken = session.scalar(select(func.coalesce(func.sum(Refund.amount), 0)).where(
        Refund.payment_id == payment.id, Refund.status != RefundStatus.FAILED)) or 0
    if notification.amount <= 0 or notification.amount > payment.amount - int(taken):
        return "rejected", "external refund larger than what is left of the payment"
    refund = Refund(payment_id=payment.id, order_id=payment.order_id, amount=notification.amount,
                    currency=payment.currency, status=RefundStatus.PENDING, kind="external",
                    reason="refunded at the channel, outside KnowPay", created_at=ctx.clock.now(), version=1)
    session.add(refund)
    session.flush()
    log.warning("recording refund %s of %s made outside KnowPay", refund.id, payment.id)
    complete_refund(session, refund.id, channel_refund_no=channel_no, ctx=ctx)
    return "processed", f"external refund recorded as {refund.id}"
