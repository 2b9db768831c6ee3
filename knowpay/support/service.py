"""Tickets: a buyer opens one on their own order or payment; support replies, changes its status, and
refunds or grants access from it through the refund and access services, each step on the timeline
and in the audit log. The buyer is mailed after each commit that concerns them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from sqlalchemy import func, inspect, select, update
from sqlalchemy.orm import Session

from knowpay.access.models import Entitlement
from knowpay.access.service import grant_for_order, restore_for_order
from knowpay.accounts.models import User
from knowpay.context import Context
from knowpay.domain.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from knowpay.domain.money import Money
from knowpay.domain.states import OrderStatus, PaymentStatus
from knowpay.orders.models import Order
from knowpay.payments.capture import OPEN
from knowpay.payments.maintenance import UNQUERIED, query_payment
from knowpay.payments.models import ChannelNotification, Payment
from knowpay.refunds.models import Refund
from knowpay.refunds.processing import push_refund
from knowpay.refunds.service import STAFF, open_refund
from knowpay.support import audit
from knowpay.support.models import Ticket, TicketEntry
from knowpay.support.notify import send_mail

log = logging.getLogger(__name__)

MAX_SUBJECT = 200
MAX_MESSAGE = 2000
CATEGORIES = ("paid_no_access", "payment_stuck", "wrong_amount", "refund", "receipt", "other")


class TicketStatus(StrEnum):
    OPEN = "open"
    WAITING_ON_BUYER = "waiting_on_buyer"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class TicketRequest:
    """What a buyer asked for in POST /tickets."""

    subject: str
    body: str
    order_id: str | None = None
    payment_id: str | None = None
    category: str = "other"


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    body: str


@dataclass
class TicketCase:
    """Everything support needs on one screen to decide a ticket."""

    ticket: Ticket
    buyer: User
    entries: list[TicketEntry]
    order: Order | None
    payments: list[Payment]
    notifications: list[ChannelNotification]
    refunds: list[Refund]
    entitlements: list[Entitlement]
    risk_decisions: list[dict] = field(default_factory=list)


def is_staff(user: User) -> bool:
    return user.has_any_role(*STAFF)


def check_text(text: str, *, param: str, limit: int) -> str:
    """Plain text as given, refused when blank or longer than `limit` characters."""
    if not text.strip():
        raise InvalidRequest(f"`{param}` must not be empty.", code="parameter_empty", param=param)
    if len(text) > limit:
        raise InvalidRequest(f"`{param}` is longer than {limit} characters.", code="parameter_too_long",
                             param=param)
    return text


def _mail_all(ctx: Context, mails: list[Mail]) -> None:
    for mail in mails:
        try:
            send_mail(ctx, mail.to, mail.subject, mail.body)
        except OSError:  # the change is committed; a lost notice must not turn it into an error
            log.exception("could not mail %s about %r", mail.to, mail.subject)


def _buyer_mail(session: Session, ticket: Ticket, zh: str, en: str) -> Mail:
    email = session.scalar(select(User.email).where(User.id == ticket.buyer_id))
    # The subject is the buyer's own text: one line, so it can never add a mail header.
    subject = " ".join(ticket.subject.split())[:80]
    return Mail(to=email, subject=f"[KnowPay] {subject} ({ticket.id})",
                body=f"{zh}\n\n{en}\n\n— KnowPay 客服 / KnowPay support")


def _subject_of(session: Session, buyer: User, order_id: str | None, payment_id: str | None) -> tuple[str | None, str | None]:
    """The order and payment a ticket is about, both the buyer's own; anything else is not found."""
    if order_id is not None:
        order = session.get(Order, order_id)
        if order is None or order.buyer_id != buyer.id:
            raise NotFound("No such order.", param="order_id")
    if payment_id is not None:
        payment = session.get(Payment, payment_id)
        if payment is None or payment.buyer_id != buyer.id:
            raise NotFound("No such payment.", param="payment_id")
        if order_id is not None and payment.order_id != order_id:
            raise InvalidRequest("This payment is not one of that order's.", code="payment_not_of_order",
                                 param="payment_id")
        order_id = payment.order_id
    return order_id, payment_id


def _append(session: Session, ticket: Ticket, *, kind: str, author_id: str | None, author_role: str,
            now: datetime, body: str = "", data: dict | None = None, unless_resolved: bool = False,
            changes: dict | None = None) -> TicketEntry:
    """Add a timeline entry, taking the next `seq` under the ticket's row lock, with `changes` to the ticket."""
    stmt = update(Ticket).where(Ticket.id == ticket.id)
    if unless_resolved:
        stmt = stmt.where(Ticket.status != TicketStatus.RESOLVED)
    moved = session.execute(stmt.values(entries=Ticket.entries + 1, updated_at=now, **(changes or {})))
    if moved.rowcount != 1:
        raise Conflict("This ticket is resolved; open a new one to ask again.", code="ticket_resolved")
    session.refresh(ticket)
    entry = TicketEntry(ticket_id=ticket.id, seq=ticket.entries, kind=kind, author_id=author_id,
                        author_role=author_role, body=body, data=data or {}, created_at=now)
    session.add(entry)
    session.flush()
    return entry


def open_ticket(ctx: Context, *, buyer: User, request: TicketRequest) -> Ticket:
    """A new open ticket with the buyer's first message; the buyer gets a receipt by mail."""
    check_text(request.subject, param="subject", limit=MAX_SUBJECT)
    check_text(request.body, param="body", limit=MAX_MESSAGE)
    if request.category not in CATEGORIES:
        raise InvalidRequest(f"category must be one of {', '.join(CATEGORIES)}.", code="invalid_category",
                             param="category")
    now = ctx.clock.now()
    with ctx.db.transaction() as session:
        order_id, payment_id = _subject_of(session, buyer, request.order_id, request.payment_id)
        ticket = Ticket(buyer_id=buyer.id, order_id=order_id, payment_id=payment_id, subject=request.subject,
                        category=request.category, status=TicketStatus.OPEN, entries=0, created_at=now,
                        updated_at=now)
        session.add(ticket)
        session.flush()
        _append(session, ticket, kind="message", author_id=buyer.id, author_role="buyer", body=request.body,
                now=now)
        mail = _buyer_mail(session, ticket,
                           f"我们已收到您的工单 {ticket.id}，客服会尽快回复。",
                           f"We have received your ticket {ticket.id}; support will answer soon.")
    _mail_all(ctx, [mail])
    return ticket


def get_ticket_for(session: Session, ticket_id: str, user: User) -> Ticket:
    """The ticket if `user` opened it (or is staff); otherwise NotFound, never a hint that it exists."""
    ticket = session.get(Ticket, ticket_id)
    if ticket is None or (ticket.buyer_id != user.id and not is_staff(user)):
        raise NotFound("No such ticket.", param="id")
    return ticket


def visible_entries(session: Session, ticket: Ticket, user: User) -> list[TicketEntry]:
    """The timeline as `user` may see it: buyers see messages and status changes, staff see everything."""
    stmt = select(TicketEntry).where(TicketEntry.ticket_id == ticket.id).order_by(TicketEntry.seq)
    if not is_staff(user):
        stmt = stmt.where(TicketEntry.kind.in_(("message", "status_changed")))
    return list(session.scalars(stmt))


def reply(ctx: Context, *, ticket_id: str, author: User, body: str, internal: bool = False) -> TicketEntry:
    """Add a message (or a staff-only note). A buyer's reply reopens the ticket; support's first public
    reply stamps the time to first reply and waits on the buyer, who is mailed. Resolved: 409."""
    check_text(body, param="body", limit=MAX_MESSAGE)
    now = ctx.clock.now()
    mails: list[Mail] = []
    with ctx.db.transaction() as session:
        ticket = get_ticket_for(session, ticket_id, author)
        as_support = is_staff(author) and ticket.buyer_id != author.id
        if internal and not as_support:
            raise InvalidRequest("Only support writes internal notes.", code="internal_not_allowed",
                                 param="internal")
        if internal:
            changes: dict = {}
        elif as_support:
            changes = {"status": TicketStatus.WAITING_ON_BUYER,
                       "first_response_at": func.coalesce(Ticket.first_response_at, now)}
        else:
            changes = {"status": TicketStatus.OPEN}
        entry = _append(session, ticket, kind="note" if internal else "message", author_id=author.id,
                        author_role="support" if as_support else "buyer", body=body, now=now,
                        unless_resolved=True, changes=changes)
        if as_support and not internal:
            mails.append(_buyer_mail(session, ticket, f"客服回复了您的工单：\n\n{body}",
                                     f"Support replied to your ticket:\n\n{body}"))
    _mail_all(ctx, mails)
    return entry


def change_status(ctx: Context, *, ticket_id: str, actor: User, status: str) -> Ticket:
    """Staff move a ticket between any statuses; a buyer may only mark their own ticket resolved."""
    try:
        target = TicketStatus(status)
    except ValueError:
        raise InvalidRequest("status must be open, waiting_on_buyer or resolved.", code="invalid_status",
                             param="status") from None
    now = ctx.clock.now()
    mails: list[Mail] = []
    with ctx.db.transaction() as session:
        ticket = get_ticket_for(session, ticket_id, actor)
        as_support = is_staff(actor) and ticket.buyer_id != actor.id
        if not as_support and target != TicketStatus.RESOLVED:
            raise PermissionDenied("Only support can reopen a ticket or set it waiting.", code="role_required")
        if ticket.status == target:
            return ticket
        before = ticket.status
        moved = session.execute(update(Ticket).where(Ticket.id == ticket.id, Ticket.status == before)
                                .values(status=target, resolved_at=now if target == TicketStatus.RESOLVED else None))
        if moved.rowcount != 1:
            raise Conflict("The ticket changed meanwhile; reload it.", code="ticket_changed")
        data = {"from": before, "to": target.value}
        _append(session, ticket, kind="status_changed", author_id=actor.id,
                author_role="support" if as_support else "buyer", data=data, now=now)
        if as_support:
            audit.record_staff_action(session, ctx, actor_id=actor.id, action=audit.TICKET_STATUS_CHANGED,
                                target=ticket.id, ticket_id=ticket.id, details=data)
            if target == TicketStatus.RESOLVED:
                mails.append(_buyer_mail(session, ticket, "您的工单已解决。如仍有问题，请新建工单。",
                                         "Your ticket is resolved. If anything is still wrong, open a new one."))
    _mail_all(ctx, mails)
    return ticket


def _ticket_order(session: Session, ticket: Ticket) -> Order:
    if ticket.order_id is None:
        raise InvalidRequest("This ticket is not about an order.", code="ticket_without_order")
    return session.get(Order, ticket.order_id)


def _ticket_payment(session: Session, ticket: Ticket, payment_id: str | None) -> Payment:
    """The payment a staff refund applies to: named, the ticket's own, or the order's only succeeded one."""
    order = _ticket_order(session, ticket)
    payment_id = payment_id or ticket.payment_id
    if payment_id is not None:
        payment = session.get(Payment, payment_id)
        if payment is None or payment.order_id != order.id:
            raise NotFound("No such payment on this ticket's order.", param="payment_id")
        return payment
    succeeded = list(session.scalars(select(Payment).where(
        Payment.order_id == order.id, Payment.status == PaymentStatus.SUCCEEDED)))
    if len(succeeded) != 1:
        raise InvalidRequest("Name the payment to refund: the order has "
                             f"{len(succeeded)} succeeded payments.", code="parameter_missing", param="payment_id")
    return succeeded[0]


def refund_from_ticket(ctx: Context, *, ticket_id: str, staff: User, payment_id: str | None, amount: int | None,
                       reason: str) -> Refund:
    """File a refund through the refund service (staff rules: any time, with a reason), on the record."""
    now = ctx.clock.now()
    with ctx.db.transaction() as session:
        ticket = get_ticket_for(session, ticket_id, staff)
        payment = _ticket_payment(session, ticket, payment_id)
        refund = open_refund(ctx, session, actor=staff, payment_id=payment.id, amount=amount, reason=reason)
        data = {"refund_id": refund.id, "payment_id": payment.id, "amount": refund.amount,
                "currency": refund.currency, "reason": refund.reason}
        _append(session, ticket, kind="refund_requested", author_id=staff.id, author_role="support", data=data,
                now=now)
        audit.record_staff_action(session, ctx, actor_id=staff.id, action=audit.REFUND_REQUESTED, target=refund.id,
                            ticket_id=ticket.id, details=data)
        money = Money(refund.amount, refund.currency).format()
        mail = _buyer_mail(session, ticket, f"客服已为您发起 {money} 的退款（{refund.id}），款项将原路退回。",
                           f"Support has filed a refund of {money} ({refund.id}); it goes back the way you paid.")
        refund_id = refund.id
    _mail_all(ctx, [mail])
    push_refund(ctx, refund_id)
    with ctx.db.transaction(write=False) as session:
        return session.get(Refund, refund_id)


def regrant_from_ticket(ctx: Context, *, ticket_id: str, staff: User) -> list[Entitlement]:
    """Grant what a paid order gives through the access service: missing entitlements are granted and
    revoked ones (a mistaken fraud mark) restored; a replay grants nothing twice.

    Returns the order's active entitlements afterwards.
    """
    now = ctx.clock.now()
    mails: list[Mail] = []
    with ctx.db.transaction() as session:
        ticket = get_ticket_for(session, ticket_id, staff)
        order = _ticket_order(session, ticket)
        if order.status not in (OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED):
            raise Conflict(f"The order is {order.status}; only a paid order gives access.", code="order_not_paid")
        granted = grant_for_order(session, order, clock=ctx.clock)
        restored = restore_for_order(session, order.id, clock=ctx.clock)
        active = list(session.scalars(select(Entitlement).where(Entitlement.order_id == order.id,
                                                                Entitlement.status == "active")))
        data = {"order_id": order.id, "granted": [e.id for e in granted], "restored": [e.id for e in restored],
                "active": [e.id for e in active]}
        _append(session, ticket, kind="access_granted", author_id=staff.id, author_role="support", data=data,
                now=now)
        audit.record_staff_action(session, ctx, actor_id=staff.id, action=audit.ACCESS_GRANTED, target=order.id,
                            ticket_id=ticket.id, details=data)
        if granted or restored:
            mails.append(_buyer_mail(session, ticket, "您购买的内容已开通，请在“我的内容”中查看。",
                                     "Your purchase is now available in your library."))
    _mail_all(ctx, mails)
    return active


@dataclass(frozen=True)
class PaymentCheck:
    """What asking the channel about one open payment found."""

    payment_id: str
    channel: str
    before: str
    after: str


def check_open_payments(ctx: Context, payments: list[Payment]) -> list[PaymentCheck]:
    """主动查单 for each open payment a channel can be asked about; completes those the channel says are paid."""
    checks = []
    for payment in payments:
        if payment.status not in OPEN or payment.channel in UNQUERIED or payment.channel not in ctx.channels:
            continue
        query_payment(ctx, payment)
        with ctx.db.transaction(write=False) as session:
            after = session.scalar(select(Payment.status).where(Payment.id == payment.id))
        checks.append(PaymentCheck(payment.id, payment.channel, payment.status, after))
    return checks


def check_payments_from_ticket(ctx: Context, *, ticket_id: str, staff: User) -> list[PaymentCheck]:
    """Support asks the channels about the ticket's open payments, on the record."""
    with ctx.db.transaction(write=False) as session:
        ticket = get_ticket_for(session, ticket_id, staff)
        order = _ticket_order(session, ticket)
        payments = list(session.scalars(select(Payment).where(Payment.order_id == order.id)))
    checks = check_open_payments(ctx, payments)
    with ctx.db.transaction() as session:
        ticket = session.get(Ticket, ticket_id)
        data = {"checked": [c.__dict__ for c in checks]}
        _append(session, ticket, kind="payments_checked", author_id=staff.id, author_role="support", data=data,
                now=ctx.clock.now())
        audit.record_staff_action(session, ctx, actor_id=staff.id, action=audit.PAYMENTS_CHECKED,
                            target=ticket.order_id, ticket_id=ticket.id, details=data)
    return checks


def _risk_decisions(session: Session, payment_ids: list[str]) -> list[dict]:
    """The risk decisions on these payments when the risk module and its table are there; its shape is its own."""
    try:
        from knowpay.risk.models import RiskDecision as model
    except ImportError:
        return []
    if not payment_ids or not inspect(session.connection()).has_table(model.__tablename__):
        return []
    columns = [attr.key for attr in inspect(model).column_attrs]
    rows = session.scalars(select(model).where(model.payment_id.in_(payment_ids)))
    return [{key: getattr(row, key) for key in columns} for row in rows]


def ticket_case(session: Session, ticket: Ticket) -> TicketCase:
    """The ticket with its buyer, full timeline, order, payments, raw notifications, refunds, access and risk."""
    order = session.get(Order, ticket.order_id) if ticket.order_id else None
    payments: list[Payment] = []
    notifications: list[ChannelNotification] = []
    refunds: list[Refund] = []
    entitlements: list[Entitlement] = []
    if order is not None:
        payments = list(session.scalars(select(Payment).where(Payment.order_id == order.id)
                                        .order_by(Payment.created_at)))
        ids = [p.id for p in payments]
        if ids:
            notifications = list(session.scalars(select(ChannelNotification).where(
                ChannelNotification.payment_id.in_(ids)).order_by(ChannelNotification.received_at)))
        refunds = list(session.scalars(select(Refund).where(Refund.order_id == order.id)
                                       .order_by(Refund.created_at)))
        entitlements = list(session.scalars(select(Entitlement).where(Entitlement.order_id == order.id)))
    entries = list(session.scalars(select(TicketEntry).where(TicketEntry.ticket_id == ticket.id)
                                   .order_by(TicketEntry.seq)))
    return TicketCase(ticket=ticket, buyer=session.get(User, ticket.buyer_id), entries=entries, order=order,
                      payments=payments, notifications=notifications, refunds=refunds, entitlements=entitlements,
                      risk_decisions=_risk_decisions(session, [p.id for p in payments]))


def tickets_of_query(buyer_id: str):
    return select(Ticket).where(Ticket.buyer_id == buyer_id)


def queue_query(*, status: str | None = None, category: str | None = None):
    """Every ticket for support, filtered by status and category."""
    stmt = select(Ticket)
    if status:
        stmt = stmt.where(Ticket.status == status)
    if category:
        stmt = stmt.where(Ticket.category == category)
    return stmt


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def support_stats(session: Session, *, since: datetime, now: datetime) -> dict:
    """Ticket counts by status and time to first reply for tickets opened since `since`."""
    counts = dict(session.execute(select(Ticket.status, func.count()).where(Ticket.created_at >= since)
                                  .group_by(Ticket.status)).all())
    rows = session.execute(select(Ticket.created_at, Ticket.first_response_at).where(
        Ticket.created_at >= since)).all()
    waits = [(answered - opened).total_seconds() for opened, answered in rows if answered is not None]
    unanswered = [(now - opened).total_seconds() for opened, answered in rows if answered is None]
    return {
        "tickets": {status.value: counts.get(status.value, 0) for status in TicketStatus},
        "first_reply": {"answered": len(waits), "unanswered": len(unanswered),
                        "p50_seconds": _percentile(waits, 0.5), "p90_seconds": _percentile(waits, 0.9),
                        "oldest_unanswered_seconds": max(unanswered, default=None)},
    }
