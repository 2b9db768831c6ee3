"""Create payments and read them back. The channel is called outside any database transaction."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from knowpay.accounts.models import User
from knowpay.channels.base import PaymentRequest
from knowpay.context import Context
from knowpay.domain.errors import ChannelUnavailable, Conflict, InsufficientFunds, InvalidRequest, NotFound, PaymentDeclined
from knowpay.domain.states import OrderStatus, PaymentStatus
from knowpay.orders.models import Order
from knowpay.payments.bank_transfers import hold_order_for_transfer
from knowpay.payments.capture import OPEN, capture_payment, fail_payment
from knowpay.payments.models import Payment
from knowpay.risk import service as risk

log = logging.getLogger(__name__)

CHANNELS = ("alipay", "wechat", "stripe", "wallet", "bank_transfer", "sandbox")
METHODS = {"alipay": ("qr", "page", "wap"), "wechat": ("native", "jsapi", "h5"),
           "stripe": ("checkout",), "sandbox": ("qr", "page", "wap")}
INSTALLMENTS = (3, 6, 12)
FIRST_QUERY_AFTER = timedelta(seconds=30)


@dataclass(frozen=True)
class PaymentAsk:
    """What the buyer asked for in POST /orders/{id}/payments."""

    channel: str
    method: str | None = None
    installments: int | None = None
    openid: str | None = None
    device_id: str | None = None
    client_ip: str | None = None
    # The buyer's second factor, answering a risk `otp_challenge`.
    otp: str | None = None


def _check_ask(ask: PaymentAsk, ctx: Context) -> None:
    if ask.channel not in CHANNELS:
        raise InvalidRequest(f"channel must be one of {', '.join(CHANNELS)}.", code="invalid_channel",
                             param="channel")
    if ask.channel != "wallet" and ask.channel not in ctx.channels:
        raise InvalidRequest(f"The channel {ask.channel!r} is not enabled here.", code="channel_unavailable",
                             param="channel")
    allowed = METHODS.get(ask.channel, ())
    if ask.method is not None and ask.method not in allowed:
        raise InvalidRequest(f"method for {ask.channel} must be one of {', '.join(allowed) or 'nothing'}.",
                             code="invalid_method", param="method")
    if ask.installments is not None and (ask.channel != "alipay" or ask.installments not in INSTALLMENTS):
        raise InvalidRequest("installments (3, 6 or 12) are offered with alipay only.",
                             code="invalid_installments", param="installments")
    if ask.channel == "wechat" and ask.method == "jsapi" and not ask.openid:
        raise InvalidRequest("A JSAPI payment needs the buyer's openid.", code="parameter_missing", param="openid")


def _payable_order(session: Session, order_id: str, buyer: User, ctx: Context) -> Order:
    order = session.get(Order, order_id)
    if order is None or order.buyer_id != buyer.id:
        raise NotFound("No such order.", param="id")
    if order.status != OrderStatus.PENDING or order.expires_at <= ctx.clock.now():
        raise Conflict(f"The order is {order.status if order.status != 'pending' else 'expired'}; "
                       "it cannot be paid.", code="order_not_pending")
    return order


def _new_payment(order: Order, ask: PaymentAsk, ctx: Context) -> Payment:
    now = ctx.clock.now()
    return Payment(order_id=order.id, buyer_id=order.buyer_id, channel=ask.channel,
                   method=ask.method or _default_method(ask.channel), status=PaymentStatus.REQUIRES_ACTION,
                   amount=order.amount_total, currency=order.currency, installments=ask.installments,
                   device_id=ask.device_id, client_ip=ask.client_ip, channel_extra={}, amount_refunded=0,
                   version=1, query_attempts=0, created_at=now, updated_at=now,
                   next_query_at=now + FIRST_QUERY_AFTER)


def _default_method(channel: str) -> str | None:
    return {"alipay": "qr", "wechat": "native", "sandbox": "qr"}.get(channel)


def create_payment(ctx: Context, *, buyer: User, order_id: str, ask: PaymentAsk) -> Payment:
    """Open a payment for a pending order; the wallet pays at once, other channels return an action.

    Risk is assessed before any channel is called: a block refuses it (RiskBlocked), a challenge
    returns the payment with the `otp_challenge` action (the same call with `otp` goes on), a review
    keeps it `processing` until an admin decides (continue_payment).
    """
    _check_ask(ask, ctx)
    with ctx.db.transaction(write=False) as session:
        order = _payable_order(session, order_id, buyer, ctx)
        risk.refuse_if_in_review(session, order.id)
    assessment = risk.assess_payment(ctx, buyer=buyer, order=order, ask=ask)
    if ask.channel == "wallet":
        return _pay_from_wallet(ctx, buyer=buyer, order_id=order_id, ask=ask, assessment=assessment)
    with ctx.db.transaction() as session:
        order = _payable_order(session, order_id, buyer, ctx)
        payment = _open_payment(session, order, ask, ctx)
        if risk.hold_payment(session, ctx, assessment, payment, order):
            return payment
        request = _payment_request(payment, order, ask.openid, ctx)
    return _send_to_channel(ctx, payment.id, request)


def _open_payment(session: Session, order: Order, ask: PaymentAsk, ctx: Context) -> Payment:
    """The payment a challenge left waiting for this order, or a new one."""
    payment = risk.challenged_payment(session, order.id, ask.channel, ask.method or _default_method(ask.channel))
    if payment is None:
        payment = _new_payment(order, ask, ctx)
        if ask.channel == "wallet":
            payment.next_query_at = None
        session.add(payment)
        session.flush()
    return payment


def _payment_request(payment: Payment, order: Order, openid: str | None, ctx: Context) -> PaymentRequest:
    subject = "; ".join(item.title for item in order.items)[:120]
    return PaymentRequest(
        payment_id=payment.id, amount=payment.amount, currency=payment.currency, subject=subject,
        method=payment.method, notify_url=f"{ctx.settings.base_url}/notify/{payment.channel}",
        return_url=f"{ctx.settings.base_url}/checkout/payments/{payment.id}",
        expires_at=order.expires_at, installments=payment.installments, openid=openid,
        client_ip=payment.client_ip)


def _send_to_channel(ctx: Context, payment_id: str, request: PaymentRequest) -> Payment:
    """Call the channel outside any transaction, then record the action it gave for the buyer."""
    with ctx.db.transaction(write=False) as session:
        channel_name = session.scalar(select(Payment.channel).where(Payment.id == payment_id))
    channel = ctx.channels.get(channel_name)
    try:
        created = channel.create(request)
    except ChannelUnavailable as exc:
        with ctx.db.transaction() as session:
            fail_payment(session, payment_id, code="channel_unavailable", message=exc.message, ctx=ctx)
        raise
    with ctx.db.transaction() as session:
        # The notification may already have arrived and captured it: record the action all the same.
        session.execute(update(Payment).where(Payment.id == payment_id).values(
            action=created.action.to_json() if created.action else None,
            channel_trade_no=created.channel_trade_no or Payment.channel_trade_no,
            channel_extra=created.extra, updated_at=ctx.clock.now(), version=Payment.version + 1))
        # A payment risk held (challenge, review) was not queried while the channel had not seen it.
        session.execute(update(Payment).where(Payment.id == payment_id, Payment.status.in_(OPEN),
                                              Payment.next_query_at.is_(None))
                        .values(next_query_at=ctx.clock.now() + FIRST_QUERY_AFTER))
        payment = session.get(Payment, payment_id, populate_existing=True)
        if channel_name == "bank_transfer":
            hold_order_for_transfer(session, payment, days=channel.days, ctx=ctx)
            session.refresh(payment)
        return payment


def continue_payment(ctx: Context, *, payment_id: str, openid: str | None = None) -> Payment:
    """Carry on a payment risk held for review, once an admin approved it: its channel is called now
    (the wallet pays now). An order that is no longer payable fails the payment instead."""
    with ctx.db.transaction() as session:
        payment = session.get(Payment, payment_id, with_for_update=True)
        if payment is None:
            raise NotFound("No such payment.", param="id")
        if payment.status != PaymentStatus.PROCESSING or payment.action is not None or payment.channel_trade_no:
            raise Conflict(f"The payment is {payment.status}, not held for review.", code="payment_not_held")
        order = session.get(Order, payment.order_id, with_for_update=True)
        now = ctx.clock.now()
        if order.status != OrderStatus.PENDING or order.expires_at <= now:
            fail_payment(session, payment.id, code="order_not_pending",
                         message=f"The order is {order.status}; it can no longer be paid.", ctx=ctx)
            return session.get(Payment, payment.id, populate_existing=True)
        # The buyer gets the usual time to pay from the moment of approval.
        until = now + timedelta(seconds=ctx.settings.order_ttl_seconds)
        if order.expires_at < until:
            order.expires_at = until
            session.flush()
        if payment.channel == "wallet":
            try:
                with session.begin_nested():
                    capture_payment(session, payment.id, channel_trade_no=None, ctx=ctx)
            except InsufficientFunds:
                fail_payment(session, payment.id, code="insufficient_balance",
                             message="Your wallet does not hold enough coins for this order.", ctx=ctx)
            return session.get(Payment, payment.id, populate_existing=True)
        request = _payment_request(payment, order, openid, ctx)
    return _send_to_channel(ctx, payment.id, request)


def _pay_from_wallet(ctx: Context, *, buyer: User, order_id: str, ask: PaymentAsk,
                     assessment: risk.Assessment) -> Payment:
    try:
        with ctx.db.transaction() as session:
            order = _payable_order(session, order_id, buyer, ctx)
            if any(item.kind == "coin_pack" for item in order.items):
                raise InvalidRequest("Coins cannot buy coins; choose another channel.", code="invalid_channel",
                                     param="channel")
            if order.currency != ctx.settings.currency:
                raise InvalidRequest(f"Coins pay only {ctx.settings.currency} orders.", code="invalid_channel",
                                     param="channel")
            payment = _open_payment(session, order, ask, ctx)
            if risk.hold_payment(session, ctx, assessment, payment, order):
                return payment
            capture_payment(session, payment.id, channel_trade_no=None, ctx=ctx)
            return session.get(Payment, payment.id, populate_existing=True)
    except InsufficientFunds:
        raise PaymentDeclined("Your wallet does not hold enough coins for this order.",
                              code="insufficient_balance") from None


def get_payment_for(session: Session, payment_id: str, user: User) -> Payment:
    payment = session.get(Payment, payment_id)
    if payment is None or (payment.buyer_id != user.id and not user.has_any_role("admin", "support")):
        raise NotFound("No such payment.", param="id")
    return payment


def payments_of_order(session: Session, order_id: str) -> list[Payment]:
    return list(session.scalars(select(Payment).where(Payment.order_id == order_id).order_by(Payment.created_at)))


