"""Receive a channel's notification: store it raw, verify it, check it against our payment, apply it.

The raw row is committed before anything else, so every notification is on record with what
became of it (processed, duplicate, rejected with a reason, ignored).
"""

from __future__ import annotations

import logging

from sqlalchemy import Row, insert, select, update
from sqlalchemy.orm import Session

from knowpay.channels.base import Acknowledgement, Channel, Notification, NotificationRejected
from knowpay.context import Context
from knowpay.payments.capture import Outcome, capture_payment, fail_payment
from knowpay.payments.models import ChannelNotification, Payment

log = logging.getLogger(__name__)
MAX_STORED_BODY = 64 * 1024
# Headers worth keeping for an investigation; signatures are cut so no log or export leaks them whole.
KEPT_HEADERS = ("content-type", "user-agent", "wechatpay-serial", "wechatpay-timestamp", "wechatpay-nonce",
                "wechatpay-signature", "stripe-signature", "sandbox-merchant", "sandbox-timestamp",
                "sandbox-signature")


def _stored_headers(headers: dict[str, str]) -> dict[str, str]:
    kept = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in KEPT_HEADERS:
            kept[lower] = value[:16] + "…" if "signature" in lower and len(value) > 16 else value
    return kept


def _reject(ctx: Context, note_id: str, reason: str) -> None:
    with ctx.db.transaction() as session:
        session.execute(update(ChannelNotification).where(ChannelNotification.id == note_id).values(
            status="rejected", reason=reason[:300], processed_at=ctx.clock.now()))


def store_raw(ctx: Context, channel_name: str, headers: dict[str, str], body: bytes) -> str:
    with ctx.db.transaction() as session:
        return session.scalar(insert(ChannelNotification).values(
            channel=channel_name, received_at=ctx.clock.now(), headers=_stored_headers(headers),
            body=body[:MAX_STORED_BODY].decode("utf-8", "replace"), status="received")
            .returning(ChannelNotification.id))


def mismatch(payment: Payment | Row | None, notification: Notification) -> str | None:
    """Why a verified notification does not fit our payment, or None when it does."""
    if payment is None:
        return f"unknown payment {notification.payment_id!r}"
    if notification.amount != payment.amount:
        return f"amount {notification.amount} does not match the payment's {payment.amount}"
    if notification.currency != payment.currency:
        return f"currency {notification.currency!r} does not match the payment's {payment.currency!r}"
    if payment.channel_trade_no and notification.channel_trade_no and \
            notification.channel_trade_no != payment.channel_trade_no:
        return "channel trade number does not match the payment's"
    return None


def apply_payment_notification(session: Session, notification: Notification, ctx: Context) -> tuple[str, str | None]:
    """Apply a verified payment notification inside the caller's transaction → (status, reason)."""
    if notification.status not in ("succeeded", "failed"):
        # Nothing to apply (an intermediate status, or an event about something else): keep it on
        # record and acknowledge it, so the channel does not retry it for days.
        return "ignored", f"status {notification.status} needs no action"
    # Locked and only read here (capture reads the row as it moves it): no ORM object needed.
    payment = session.execute(
        select(Payment.id, Payment.amount, Payment.currency, Payment.channel_trade_no)
        .where(Payment.id == notification.payment_id).with_for_update()).first()
    reason = mismatch(payment, notification)
    if reason:
        return "rejected", reason
    if notification.status == "succeeded":
        outcome = capture_payment(session, payment.id, channel_trade_no=notification.channel_trade_no, ctx=ctx)
    else:
        outcome = fail_payment(session, payment.id, code=notification.details.get("code", "declined"),
                               message=notification.details.get("message", "The channel declined the payment."),
                               ctx=ctx)
    return ("duplicate" if outcome == Outcome.ALREADY_DONE else "processed"), outcome.value


def receive_notification(ctx: Context, channel: Channel, headers: dict[str, str], body: bytes) -> Acknowledgement:
    """Everything /notify/<channel> does, returning the exact answer the channel expects."""
    note_id = store_raw(ctx, channel.name, headers, body)
    try:
        notification = channel.parse_notification(headers, body)
    except NotificationRejected as exc:
        log.warning("rejected %s notification %s: %s", channel.name, note_id, exc.message)
        _reject(ctx, note_id, exc.message)
        return channel.acknowledge(False, exc.message)
    if notification.kind == "refund":
        from knowpay.refunds.processing import apply_refund_notification as apply
    else:
        apply = apply_payment_notification
    with ctx.db.transaction() as session:
        status, reason = apply(session, notification, ctx)
        # Recorded in the same transaction as the effect, so the two can never disagree.
        session.execute(update(ChannelNotification).where(ChannelNotification.id == note_id).values(
            status=status, reason=reason[:300] if reason else None, payment_id=notification.payment_id,
            event_id=notification.event_id, processed_at=ctx.clock.now()))
    if status == "rejected":
        log.warning("rejected %s notification %s: %s", channel.name, note_id, reason)
        return channel.acknowledge(False, reason or "rejected")
    return channel.acknowledge(True)
