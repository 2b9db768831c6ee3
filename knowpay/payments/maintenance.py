"""Sweeps the worker runs: expire unpaid orders, and ask channels about payments we heard nothing of."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select, update

from knowpay.channels.base import ChannelStatus, Notification
from knowpay.context import Context
from knowpay.domain.errors import ChannelUnavailable
from knowpay.domain.states import OrderStatus, PaymentStatus
from knowpay.orders.models import Order
from knowpay.orders.service import release_coupon
from knowpay.outbox.service import record_event
from knowpay.payments.capture import OPEN, payment_event
from knowpay.payments.models import Payment
from knowpay.payments.notifications import apply_payment_notification
from knowpay.representations import OrderOut, as_json

log = logging.getLogger(__name__)
BATCH = 100
# 主动查单 backoff: quick at first (the buyer may be paying right now), then ever further apart.
QUERY_BACKOFF = (30, 60, 120, 300, 600, 1200, 1800)
UNQUERIED = ("wallet", "bank_transfer")


def _apply_channel_status(ctx: Context, payment: Payment, status: ChannelStatus) -> str:
    """Treat a query/close answer like a notification, through the same checks and capture."""
    if status.status not in ("succeeded", "failed", "closed"):
        return status.status
    verdict = Notification(kind="payment", payment_id=payment.id,
                           status="succeeded" if status.status == "succeeded" else "failed",
                           amount=status.amount if status.amount is not None else payment.amount,
                           currency=status.currency or payment.currency, channel_trade_no=status.channel_trade_no,
                           details={"code": f"channel_{status.status}",
                                    "message": f"The channel reports the trade {status.status}."})
    with ctx.db.transaction() as session:
        outcome, reason = apply_payment_notification(session, verdict, ctx)
    if outcome == "rejected":
        log.error("payment %s: channel answer does not match our record: %s", payment.id, reason)
    return status.status


def _close_open_payments(ctx: Context, order_id: str) -> bool:
    """Close the order's open trades at their channels; False if one was paid or could not be closed."""
    with ctx.db.transaction(write=False) as session:
        payments = list(session.scalars(select(Payment).where(
            Payment.order_id == order_id, Payment.status.in_(OPEN))))
    for payment in payments:
        if payment.channel in UNQUERIED or payment.channel not in ctx.channels:
            continue
        try:
            status = ctx.channels.get(payment.channel).close(payment.id)
        except ChannelUnavailable as exc:
            log.warning("order %s: cannot close %s yet (%s)", order_id, payment.id, exc.message)
            return False
        if status.status == "succeeded":
            _apply_channel_status(ctx, payment, status)
            return False  # the payment wins: the order is paid, not expired
    return True


def expire_order(ctx: Context, order_id: str) -> bool:
    """Close the channel trades first, then expire the order and its open payments (compare-and-set)."""
    if not _close_open_payments(ctx, order_id):
        return False
    now = ctx.clock.now()
    with ctx.db.transaction() as session:
        # Lock payments before the order, in the same order capture does, so the two never deadlock.
        open_payments = list(session.scalars(select(Payment).where(
            Payment.order_id == order_id, Payment.status.in_(OPEN)).order_by(Payment.id).with_for_update()))
        moved = session.execute(update(Order).where(
            Order.id == order_id, Order.status == OrderStatus.PENDING, Order.expires_at <= now)
            .values(status=OrderStatus.EXPIRED, closed_at=now, version=Order.version + 1))
        if moved.rowcount != 1:
            return False
        order = session.get(Order, order_id, populate_existing=True)
        release_coupon(session, order)
        for payment in open_payments:
            done = session.execute(update(Payment).where(Payment.id == payment.id, Payment.status.in_(OPEN))
                                   .values(status=PaymentStatus.EXPIRED, updated_at=now, next_query_at=None,
                                           version=Payment.version + 1))
            if done.rowcount == 1:
                session.refresh(payment)
                payment_event(session, payment, "payment.expired", ctx)
        record_event(session, type="order.expired", object_type="order", object_id=order.id,
                     sequence=order.version, payload=as_json(OrderOut, order), clock=ctx.clock)
    return True


def expire_due_orders(ctx: Context) -> int:
    """Expire every pending order past its `expires_at`; returns how many were expired."""
    with ctx.db.transaction(write=False) as session:
        due = list(session.scalars(select(Order.id).where(
            Order.status == OrderStatus.PENDING, Order.expires_at <= ctx.clock.now())
            .order_by(Order.expires_at).limit(BATCH)))
    return sum(expire_order(ctx, order_id) for order_id in due)


def query_payment(ctx: Context, payment: Payment) -> str:
    """Ask the channel about one open payment and act on the answer; schedule the next ask if open."""
    try:
        status = ctx.channels.get(payment.channel).query(payment.id)
        result = _apply_channel_status(ctx, payment, status)
    except ChannelUnavailable as exc:
        log.warning("query %s: channel unavailable (%s)", payment.id, exc.message)
        result = "unavailable"
    if result not in ("succeeded", "failed", "closed"):
        delay = QUERY_BACKOFF[min(payment.query_attempts, len(QUERY_BACKOFF) - 1)]
        with ctx.db.transaction() as session:
            session.execute(update(Payment).where(Payment.id == payment.id, Payment.status.in_(OPEN)).values(
                query_attempts=Payment.query_attempts + 1,
                next_query_at=ctx.clock.now() + timedelta(seconds=delay)))
    return result


def query_pending_payments(ctx: Context) -> int:
    """主动查单: ask channels about open payments whose next query is due; returns how many settled."""
    with ctx.db.transaction(write=False) as session:
        due = list(session.scalars(select(Payment).where(
            Payment.status.in_(OPEN), Payment.next_query_at <= ctx.clock.now(),
            Payment.channel.not_in(UNQUERIED)).order_by(Payment.next_query_at).limit(BATCH)))
    return sum(query_payment(ctx, p) in ("succeeded", "failed", "closed") for p in due
               if p.channel in ctx.channels)
