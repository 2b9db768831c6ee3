"""Request refunds: who may, how much is left, within which window. The channel is asked afterwards."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from knowpay.accounts.models import User
from knowpay.context import Context
from knowpay.domain.errors import Conflict, InvalidRequest, NotFound
from knowpay.domain.money import check_amount
from knowpay.domain.states import PaymentStatus, RefundStatus
from knowpay.orders.models import Order
from knowpay.outbox.service import record_event
from knowpay.payments.models import Payment
from knowpay.refunds.models import Refund
from knowpay.refunds.processing import push_refund
from knowpay.representations import RefundOut, as_json
from knowpay.risk import service as risk
from knowpay.security import audit

STAFF = ("support", "admin")


def refundable_left(session: Session, payment: Payment) -> int:
    """What may still be refunded: the payment less every refund not failed (pending ones count)."""
    taken = session.scalar(select(func.coalesce(func.sum(Refund.amount), 0)).where(
        Refund.payment_id == payment.id, Refund.status != RefundStatus.FAILED)) or 0
    return payment.amount - int(taken)


def refund_window_days(order: Order, session: Session) -> int:
    from knowpay.catalog.models import Product

    windows = session.scalars(select(Product.refund_window_days).where(
        Product.id.in_([item.product_id for item in order.items])))
    return min(windows, default=0)


def open_refund(ctx: Context, session: Session, *, actor: User, payment_id: str, amount: int | None,
                reason: str | None) -> Refund:
    """Check and record a refund request (pending) in the caller's transaction."""
    payment = session.get(Payment, payment_id, with_for_update=True)
    is_staff = actor.has_any_role(*STAFF)
    if payment is None or (payment.buyer_id != actor.id and not is_staff):
        raise NotFound("No such payment.", param="payment_id")
    if payment.status != PaymentStatus.SUCCEEDED:
        raise Conflict(f"A {payment.status} payment cannot be refunded.", code="payment_not_refundable",
                       param="payment_id")
    order = session.get(Order, payment.order_id)
    left = refundable_left(session, payment)
    if amount is None:
        amount = left
    check_amount(amount)
    if amount > left:
        raise Conflict(f"Only {left} of this payment is left to refund.", code="refund_exceeds_payment",
                       param="amount")
    if not is_staff:
        window = refund_window_days(order, session)
        if payment.succeeded_at is None or ctx.clock.now() > payment.succeeded_at + timedelta(days=window):
            raise Conflict(f"The {window}-day refund window of this purchase has closed; support can help.",
                           code="refund_window_closed")
    elif not (reason and reason.strip()):
        raise InvalidRequest("Staff refunds need a reason.", code="parameter_missing", param="reason")
    refund = Refund(payment_id=payment.id, order_id=order.id, amount=amount, currency=payment.currency,
                    status=RefundStatus.PENDING, kind="requested", reason=(reason or "").strip()[:300] or None,
                    requested_by=actor.id, created_at=ctx.clock.now(), version=1)
    session.add(refund)
    session.flush()
    record_event(session, type="refund.created", object_type="refund", object_id=refund.id, sequence=1,
                 payload=as_json(RefundOut, refund), clock=ctx.clock)
    audit.record(session, actor.id, audit.REFUND_OPENED, refund.id,
                 {"payment_id": payment.id, "amount": amount, "currency": payment.currency, "staff": is_staff,
                  "reason": refund.reason}, ctx.clock)
    return refund


def request_refund(ctx: Context, *, actor: User, payment_id: str, amount: int | None, reason: str | None) -> Refund:
    """Record the request, then ask the channel at once; the worker retries if it cannot be reached.

    A buyer's request is assessed by risk first: refused when blocked, held when it needs review."""
    assessment = None
    if not actor.has_any_role(*STAFF):
        assessment = risk.check_refund(ctx, actor=actor, payment_id=payment_id, amount=amount, reason=reason)
    with ctx.db.transaction() as session:
        refund = open_refund(ctx, session, actor=actor, payment_id=payment_id, amount=amount, reason=reason)
        risk.attach_refund(session, ctx, assessment, refund)
        refund_id = refund.id
    push_refund(ctx, refund_id)
    with ctx.db.transaction(write=False) as session:
        return session.get(Refund, refund_id)


def get_refund_for(session: Session, refund_id: str, user: User) -> Refund:
    refund = session.get(Refund, refund_id)
    if refund is None:
        raise NotFound("No such refund.", param="id")
    if not user.has_any_role(*STAFF):
        owner = session.scalar(select(Payment.buyer_id).where(Payment.id == refund.payment_id))
        if owner != user.id:
            raise NotFound("No such refund.", param="id")
    return refund


def refunds_query(user: User, payment_id: str | None):
    stmt = select(Refund)
    if payment_id:
        stmt = stmt.where(Refund.payment_id == payment_id)
    if not user.has_any_role(*STAFF):
        stmt = stmt.where(Refund.payment_id.in_(select(Payment.id).where(Payment.buyer_id == user.id)))
    return stmt
