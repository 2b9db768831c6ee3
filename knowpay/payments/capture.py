"""Apply a channel's verdict on a payment, once: capture into the ledger, or mark it failed.

Capture is ONE transaction: payment succeeded (compare-and-set), order paid, ledger posted,
entitlements granted, events written. A second success for an order that is no longer payable
(already paid by another attempt, expired, cancelled) is recorded and queued for refund.
"""

from __future__ import annotations

import enum

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from knowpay.access.service import grant_for_order
from knowpay.catalog.models import Product
from knowpay.context import Context
from knowpay.domain.capture import SaleLine, plan_capture
from knowpay.domain.states import OrderStatus, PaymentStatus
from knowpay.ledger import chart
from knowpay.ledger.service import AccountSpec, Leg, post_transaction
from knowpay.orders.models import Order
from knowpay.outbox.service import record_event
from knowpay.payments.models import Payment
from knowpay.refunds.models import Refund
from knowpay.representations import OrderOut, PaymentOut, RefundOut, as_json
from knowpay.risk.service import note_payment_failure

OPEN = (PaymentStatus.REQUIRES_ACTION, PaymentStatus.PROCESSING)
# A channel that reports money received is believed even after we gave up on the attempt:
# the money is real, so it is captured and, the order being closed, refunded.
LATE = (PaymentStatus.EXPIRED, PaymentStatus.CANCELLED, PaymentStatus.FAILED)
# Failures that say nothing about the buyer: the channel could not be reached.
NOT_THE_BUYERS = frozenset({"channel_unavailable"})


# An UPDATE ... RETURNING of a whole row replaces the session's copy of it with the row returned.
_RETURNED = {"populate_existing": True, "synchronize_session": False}


class Outcome(enum.StrEnum):
    CAPTURED = "captured"
    ALREADY_DONE = "already_done"
    REFUND_SCHEDULED = "refund_scheduled"
    FAILED = "failed"


def _source(payment: Payment) -> AccountSpec:
    if payment.channel == "wallet":
        return chart.wallet(payment.buyer_id, payment.currency)
    return chart.clearing(payment.channel, payment.currency)


def payment_event(session: Session, payment: Payment, type_: str, ctx: Context) -> None:
    record_event(session, type=type_, object_type="payment", object_id=payment.id, sequence=payment.version,
                 payload=as_json(PaymentOut, payment), clock=ctx.clock)


def _sale_lines(session: Session, order: Order) -> list[SaleLine]:
    pack_ids = [i.product_id for i in order.items if i.kind == "coin_pack"]
    coin_packs = {row.id: row for row in session.execute(select(Product.id, Product.coins, Product.bonus_coins)
                                                         .where(Product.id.in_(pack_ids)))} if pack_ids else {}
    lines = []
    for item in order.items:
        pack = coin_packs.get(item.product_id)
        lines.append(SaleLine(
            creator_id=item.creator_id, kind=item.kind, net=item.amount_net,
            coins=(pack.coins or 0) * item.quantity if pack else 0,
            bonus_coins=pack.bonus_coins * item.quantity if pack else 0))
    return lines


def _post_capture(session: Session, payment: Payment, order: Order, ctx: Context) -> None:
    if payment.amount == 0:
        return
    channel_fee_bps = 0
    if payment.channel in ctx.channels:
        channel_fee_bps = getattr(ctx.channels.get(payment.channel), "fee_bps", 0)
    plan = plan_capture(source=_source(payment), buyer_id=payment.buyer_id, currency=payment.currency,
                        total=payment.amount, lines=_sale_lines(session, order),
                        platform_fee_bps=ctx.settings.platform_fee_bps, channel=payment.channel,
                        channel_fee_bps=channel_fee_bps)
    post_transaction(session, key=f"payment:{payment.id}:captured", kind="capture", legs=plan.legs,
                     accounts=plan.accounts, description=f"capture {payment.id} for {order.id}",
                     meta={"payment_id": payment.id, "order_id": order.id}, clock=ctx.clock)


def _hold_for_refund(session: Session, payment: Payment, order: Order, ctx: Context) -> Refund:
    """Record money received for an order that no longer needs it, and queue giving it back."""
    source = _source(payment)
    due = chart.refunds_due(payment.currency)
    post_transaction(session, key=f"payment:{payment.id}:captured", kind="capture_unneeded",
                     legs=[Leg(source.code, payment.amount, payment.currency),
                           Leg(due.code, -payment.amount, payment.currency)],
                     accounts=[source, due], description=f"unneeded payment {payment.id} for {order.id}",
                     meta={"payment_id": payment.id, "order_id": order.id}, clock=ctx.clock)
    refund = Refund(payment_id=payment.id, order_id=order.id, amount=payment.amount, currency=payment.currency,
                    status="pending", kind="duplicate_payment", created_at=ctx.clock.now(), version=1,
                    reason=f"order {order.id} is {order.status}: payment not needed")
    session.add(refund)
    session.flush()
    record_event(session, type="refund.created", object_type="refund", object_id=refund.id, sequence=1,
                 payload=as_json(RefundOut, refund), clock=ctx.clock)
    return refund


def capture_payment(session: Session, payment_id: str, *, channel_trade_no: str | None, ctx: Context) -> Outcome:
    """Mark the payment succeeded and settle its order, exactly once however often it is called."""
    now = ctx.clock.now()
    # Each move is a compare-and-set that hands back the row as it now is (RETURNING), so the
    # payment and the order are not read again after they change.
    payment = session.scalar(
        update(Payment).where(Payment.id == payment_id, Payment.status.in_([*OPEN, *LATE]))
        .values(status=PaymentStatus.SUCCEEDED, succeeded_at=now, updated_at=now, next_query_at=None,
                channel_trade_no=func.coalesce(Payment.channel_trade_no, channel_trade_no),
                failure_code=None, failure_message=None, version=Payment.version + 1)
        .returning(Payment), execution_options=_RETURNED)
    if payment is None:
        return Outcome.ALREADY_DONE
    payment_event(session, payment, "payment.succeeded", ctx)
    order = session.scalar(
        update(Order).where(Order.id == payment.order_id, Order.status == OrderStatus.PENDING)
        .values(status=OrderStatus.PAID, paid_at=now, version=Order.version + 1)
        .returning(Order), execution_options=_RETURNED)
    if order is None:
        order = session.get(Order, payment.order_id, populate_existing=True)
        _hold_for_refund(session, payment, order, ctx)
        return Outcome.REFUND_SCHEDULED
    _post_capture(session, payment, order, ctx)
    grant_for_order(session, order, clock=ctx.clock)
    record_event(session, type="order.paid", object_type="order", object_id=order.id, sequence=order.version,
                 payload=as_json(OrderOut, order), clock=ctx.clock)
    return Outcome.CAPTURED


def fail_payment(session: Session, payment_id: str, *, code: str, message: str, ctx: Context) -> Outcome:
    """An open payment the channel declined becomes failed; anything else is left alone."""
    now = ctx.clock.now()
    payment = session.scalar(
        update(Payment).where(Payment.id == payment_id, Payment.status.in_(OPEN))
        .values(status=PaymentStatus.FAILED, failure_code=code, failure_message=message[:300], updated_at=now,
                next_query_at=None, version=Payment.version + 1)
        .returning(Payment), execution_options=_RETURNED)
    if payment is None:
        return Outcome.ALREADY_DONE
    payment_event(session, payment, "payment.failed", ctx)
    if code not in NOT_THE_BUYERS:
        # Declines feed the velocity rules (card testing); replay counts the same failures offline.
        note_payment_failure(session, payment, ctx)
    return Outcome.FAILED
