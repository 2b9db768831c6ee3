"""Support: buyers' tickets, the payment assistant and the FAQ; support staff's queue and the
actions they take from a ticket (reply, status, refund, access, ask the channel).

Messages are plain text: stored exactly as written and returned as JSON strings, never as HTML.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from flask_openapi3 import APIBlueprint
from pydantic import BaseModel, ConfigDict, Field

from knowpay.representations import EntitlementOut, OrderOut, PaymentOut, RefundOut
from knowpay.support import assistant, faq
from knowpay.support import service as support
from knowpay.support.models import Ticket
from knowpay.web.api.schemas import (
    BEARER,
    IdPath,
    Input,
    ListQuery,
    Out,
    Page,
    Strict,
    UtcDateTime,
    errors,
    tag,
)
from knowpay.web.auth import current_user, require_recent_second_factor
from knowpay.web.pagination import paginate
from knowpay.web.runtime import request_session, runtime
from knowpay.web.uow import api_call

bp = APIBlueprint("support", __name__, url_prefix="/api/v1", abp_tags=tag("support"))

STAFF = support.STAFF
Category = Literal["paid_no_access", "payment_stuck", "wrong_amount", "refund", "receipt", "other"]
Status = Literal["open", "waiting_on_buyer", "resolved"]


# The service checks the length (1 to 2000 characters, not blank): web/errors.py names no `param` for a
# field called `body`, so the check is left to the service, which names it; the limits are documented here.
MESSAGE_BODY = Field(..., description="plain text, stored and shown exactly as written",
                     json_schema_extra={"minLength": 1, "maxLength": support.MAX_MESSAGE})


class TicketIn(Strict):
    subject: str = Field(..., min_length=1, max_length=support.MAX_SUBJECT)
    body: str = MESSAGE_BODY
    order_id: str | None = Field(None, max_length=64)
    payment_id: str | None = Field(None, max_length=64)
    category: Category = "other"


class MessageIn(Strict):
    body: str = MESSAGE_BODY
    internal: bool = Field(False, description="support only: a note the buyer does not see")


class StatusIn(Strict):
    status: Status


class TicketRefundIn(Strict):
    payment_id: str | None = Field(None, max_length=64, description="defaults to the ticket's payment")
    amount: int | None = Field(None, gt=0, le=10**13, description="minor units; defaults to what is left")
    reason: str = Field(..., min_length=1, max_length=300)


class EntryOut(Out):
    seq: int
    kind: str = Field(..., description="message, note, status_changed, refund_requested, access_granted, "
                                       "payments_checked")
    author_role: str
    body: str
    data: dict
    created_at: UtcDateTime


class StaffEntryOut(EntryOut):
    author_id: str | None


class TicketSummaryOut(Out):
    id: str
    status: str
    subject: str
    category: str
    order_id: str | None
    payment_id: str | None
    created_at: UtcDateTime
    updated_at: UtcDateTime
    first_response_at: UtcDateTime | None
    resolved_at: UtcDateTime | None


class TicketOut(TicketSummaryOut):
    messages: list[EntryOut]


class QueueItemOut(TicketSummaryOut):
    buyer_id: str


class BuyerOut(Out):
    id: str
    email: str
    username: str | None


class NotificationOut(Out):
    id: str
    channel: str
    received_at: UtcDateTime
    status: str
    reason: str | None
    payment_id: str | None
    event_id: str | None
    headers: dict
    body: str
    processed_at: UtcDateTime | None


class TicketCaseOut(BaseModel):
    ticket: QueueItemOut
    buyer: BuyerOut
    first_reply_seconds: float | None
    entries: list[StaffEntryOut]
    order: OrderOut | None
    payments: list[PaymentOut]
    notifications: list[NotificationOut]
    refunds: list[RefundOut]
    entitlements: list[EntitlementOut]
    risk_decisions: list[dict[str, Any]]


class QueueQuery(ListQuery):
    status: Status | None = None
    category: Category | None = None


class BuyerQuery(ListQuery):
    status: Status | None = None


class EntitlementList(BaseModel):
    data: list[EntitlementOut]


class PaymentCheckOut(BaseModel):
    payment_id: str
    channel: str
    before: str
    after: str


class PaymentCheckList(BaseModel):
    data: list[PaymentCheckOut]


class StatsQuery(Input):
    days: int = Field(30, ge=1, le=365)


class FirstReplyOut(BaseModel):
    answered: int
    unanswered: int
    p50_seconds: float | None
    p90_seconds: float | None
    oldest_unanswered_seconds: float | None


class StatsOut(BaseModel):
    tickets: dict[str, int]
    first_reply: FirstReplyOut


class AssistantIn(Strict):
    message: str = Field(..., min_length=1, max_length=support.MAX_MESSAGE)
    locale: str | None = Field(None, max_length=16, description="zh-CN or en; guessed from the message if absent")


class ActionOut(BaseModel):
    """A button: the request the client sends (with the buyer's token) if the buyer presses it."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(..., description="request_refund, open_ticket, pay_order, view_order, view_entitlements, faq")
    label: str
    method: str | None = None
    path: str | None = None
    body: dict | None = None


class AssistantOut(BaseModel):
    reply: str = Field(..., description="plain text")
    intent: str = Field(..., description="paid_no_access, refund, payment_declined, receipt, how_to_pay, faq, "
                                         "handover")
    actions: list[ActionOut]


class FaqIn(Strict):
    locale: Literal["zh-CN", "en"]
    question: str = Field(..., min_length=1, max_length=faq.MAX_QUESTION)
    answer: str = Field(..., min_length=1, max_length=faq.MAX_ANSWER)
    keywords: str = Field("", max_length=faq.MAX_KEYWORDS)
    topic: str | None = Field(None, max_length=40, pattern=r"^[a-z0-9_.-]+$")
    published: bool = True


class FaqPatch(Strict):
    # Leave a field out to keep it; only `topic` may be set to null (the others are required columns).
    locale: Literal["zh-CN", "en"] = None
    question: str = Field(None, min_length=1, max_length=faq.MAX_QUESTION)
    answer: str = Field(None, min_length=1, max_length=faq.MAX_ANSWER)
    keywords: str = Field(None, max_length=faq.MAX_KEYWORDS)
    topic: str | None = Field(None, max_length=40, pattern=r"^[a-z0-9_.-]+$")
    published: bool = None


class FaqOut(Out):
    id: int
    locale: str
    topic: str | None
    question: str
    answer: str
    keywords: str
    published: bool
    updated_at: UtcDateTime


class FaqList(BaseModel):
    data: list[FaqOut]


class FaqDeletedOut(BaseModel):
    id: int
    deleted: bool


class FaqQuery(Input):
    locale: Literal["zh-CN", "en"] | None = None


class FaqPath(Input):
    id: int = Field(..., ge=1, le=2**31 - 1)


def ticket_out(ticket_id: str) -> TicketOut:
    """The ticket with the timeline its caller may see, read after the service's commit."""
    user = current_user()
    with runtime().db.transaction(write=False) as session:
        ticket = support.get_ticket_for(session, ticket_id, user)
        entries = support.visible_entries(session, ticket, user)
        return TicketOut(**TicketSummaryOut.model_validate(ticket).model_dump(),
                         messages=[EntryOut.model_validate(e) for e in entries])


# Buyers ------------------------------------------------------------------------------------------

@bp.post("/tickets", responses={201: TicketOut, **errors(400, 401, 404)}, security=BEARER)
@api_call
def open_ticket(body: TicketIn):
    """Open a ticket, about one of the caller's orders or payments (someone else's: 404)."""
    ticket = support.open_ticket(runtime(), buyer=current_user(), request=support.TicketRequest(
        subject=body.subject, body=body.body, order_id=body.order_id, payment_id=body.payment_id,
        category=body.category))
    return ticket_out(ticket.id), 201


@bp.get("/tickets", responses={200: Page[TicketSummaryOut], **errors(400, 401)}, security=BEARER)
@api_call
def list_tickets(query: BuyerQuery):
    """The caller's tickets, newest first."""
    stmt = support.tickets_of_query(current_user().id)
    if query.status:
        stmt = stmt.where(Ticket.status == query.status)
    rows, more, cursor = paginate(request_session(), stmt, Ticket, limit=query.limit, cursor=query.cursor)
    return {"data": [TicketSummaryOut.model_validate(t).model_dump(mode="json") for t in rows],
            "has_more": more, "next_cursor": cursor}, 200


@bp.get("/tickets/<id>", responses={200: TicketOut, **errors(401, 404)}, security=BEARER)
@api_call
def get_ticket(path: IdPath):
    """One of the caller's tickets with its messages (support: any ticket, with internal notes)."""
    return ticket_out(path.id), 200


@bp.post("/tickets/<id>/messages", responses={201: EntryOut, **errors(400, 401, 404, 409)}, security=BEARER)
@api_call
def post_message(path: IdPath, body: MessageIn):
    """Reply on a ticket; a resolved ticket takes no more messages (409 ticket_resolved)."""
    entry = support.reply(runtime(), ticket_id=path.id, author=current_user(), body=body.body,
                          internal=body.internal)
    return EntryOut.model_validate(entry), 201


@bp.post("/tickets/<id>/status", responses={200: TicketOut, **errors(400, 401, 403, 404, 409)}, security=BEARER)
@api_call
def set_status(path: IdPath, body: StatusIn):
    """Support sets any status; a buyer may mark their own ticket resolved."""
    support.change_status(runtime(), ticket_id=path.id, actor=current_user(), status=body.status)
    return ticket_out(path.id), 200


@bp.post("/assistant", responses={200: AssistantOut, **errors(400, 401)}, security=BEARER)
@api_call
def ask_assistant(body: AssistantIn):
    """Ask the payment assistant (Chinese or English); it answers from the caller's own data and
    offers buttons (`actions`) for anything that would change something."""
    found = assistant.answer(runtime(), buyer=current_user(), message=body.message, locale=body.locale)
    return AssistantOut(reply=found.reply, intent=found.intent, actions=found.actions), 200


@bp.get("/faq", responses={200: FaqList, **errors(400)})
@api_call
def list_faq(query: FaqQuery):
    """The published FAQ, optionally in one locale."""
    rows = faq.list_entries(request_session(), locale=query.locale)
    return {"data": [FaqOut.model_validate(e).model_dump(mode="json") for e in rows]}, 200


# Support staff -----------------------------------------------------------------------------------

@bp.get("/support/tickets", responses={200: Page[QueueItemOut], **errors(400, 401, 403)}, security=BEARER)
@api_call
def support_queue(query: QueueQuery):
    """Support: every ticket, newest first; `?status=` and `?category=` narrow it."""
    current_user(*STAFF)
    stmt = support.queue_query(status=query.status, category=query.category)
    rows, more, cursor = paginate(request_session(), stmt, Ticket, limit=query.limit, cursor=query.cursor)
    return {"data": [QueueItemOut.model_validate(t).model_dump(mode="json") for t in rows],
            "has_more": more, "next_cursor": cursor}, 200


@bp.get("/support/tickets/<id>", responses={200: TicketCaseOut, **errors(401, 403, 404)}, security=BEARER)
@api_call
def support_case(path: IdPath):
    """Support: the ticket with everything behind it — order, payments, the raw channel notifications,
    refunds, access, risk decisions — and the whole timeline."""
    staff = current_user(*STAFF)
    session = request_session()
    case = support.ticket_case(session, support.get_ticket_for(session, path.id, staff))
    first = case.ticket.first_response_at
    return TicketCaseOut(
        ticket=QueueItemOut.model_validate(case.ticket), buyer=BuyerOut.model_validate(case.buyer),
        first_reply_seconds=(first - case.ticket.created_at).total_seconds() if first else None,
        entries=[StaffEntryOut.model_validate(e) for e in case.entries],
        order=OrderOut.model_validate(case.order) if case.order else None,
        payments=[PaymentOut.model_validate(p) for p in case.payments],
        notifications=[NotificationOut.model_validate(n) for n in case.notifications],
        refunds=[RefundOut.model_validate(r) for r in case.refunds],
        entitlements=[EntitlementOut.model_validate(e) for e in case.entitlements],
        risk_decisions=case.risk_decisions), 200


@bp.post("/tickets/<id>/refund", responses={201: RefundOut, **errors(400, 401, 403, 404, 409, 503)},
         security=BEARER)
@api_call
def refund_from_ticket(path: IdPath, body: TicketRefundIn):
    """Support: refund the ticket's payment through the refund service, on the record and audited.
    Moves money, so it needs a recent second factor (`KnowPay-OTP` header or a step-up), like any staff refund."""
    staff = current_user(*STAFF)
    require_recent_second_factor(staff)
    refund = support.refund_from_ticket(runtime(), ticket_id=path.id, staff=staff,
                                        payment_id=body.payment_id, amount=body.amount, reason=body.reason)
    return RefundOut.model_validate(refund), 201


@bp.post("/tickets/<id>/regrant", responses={200: EntitlementList, **errors(400, 401, 403, 404, 409)},
         security=BEARER)
@api_call
def regrant_from_ticket(path: IdPath):
    """Support: grant what the ticket's paid order gives, through the access service (audited)."""
    active = support.regrant_from_ticket(runtime(), ticket_id=path.id, staff=current_user(*STAFF))
    return EntitlementList(data=[EntitlementOut.model_validate(e) for e in active]), 200


@bp.post("/tickets/<id>/check-payments", responses={200: PaymentCheckList, **errors(400, 401, 403, 404)},
         security=BEARER)
@api_call
def check_payments(path: IdPath):
    """Support: ask the channels about the ticket's open payments (主动查单); paid ones complete."""
    checks = support.check_payments_from_ticket(runtime(), ticket_id=path.id, staff=current_user(*STAFF))
    return PaymentCheckList(data=[PaymentCheckOut(**c.__dict__) for c in checks]), 200


@bp.get("/support/stats", responses={200: StatsOut, **errors(400, 401, 403)}, security=BEARER)
@api_call
def stats(query: StatsQuery):
    """Support: tickets by status and time to first reply, over the last `days`."""
    current_user(*STAFF)
    now = runtime().clock.now()
    return support.support_stats(request_session(), since=now - timedelta(days=query.days), now=now), 200


@bp.get("/support/faq", responses={200: FaqList, **errors(401, 403)}, security=BEARER)
@api_call
def all_faq():
    """Support: every FAQ entry, unpublished ones too."""
    current_user(*STAFF)
    rows = faq.list_entries(request_session(), published_only=False)
    return {"data": [FaqOut.model_validate(e).model_dump(mode="json") for e in rows]}, 200


@bp.post("/support/faq", responses={201: FaqOut, **errors(400, 401, 403)}, security=BEARER)
@api_call
def add_faq(body: FaqIn):
    """Admin: add an FAQ entry; the assistant answers from it at once."""
    admin = current_user("admin")
    entry = faq.add_entry(request_session(), locale=body.locale, question=body.question, answer=body.answer,
                          keywords=body.keywords, topic=body.topic, published=body.published, editor_id=admin.id,
                          clock=runtime().clock)
    return FaqOut.model_validate(entry), 201


@bp.patch("/support/faq/<int:id>", responses={200: FaqOut, **errors(400, 401, 403, 404)}, security=BEARER)
@api_call
def edit_faq(path: FaqPath, body: FaqPatch):
    """Admin: change an FAQ entry."""
    admin = current_user("admin")
    entry = faq.edit_entry(request_session(), path.id, changes=body.model_dump(exclude_unset=True),
                           editor_id=admin.id, clock=runtime().clock)
    return FaqOut.model_validate(entry), 200


@bp.delete("/support/faq/<int:id>", responses={200: FaqDeletedOut, **errors(401, 403, 404)}, security=BEARER)
@api_call
def delete_faq(path: FaqPath):
    """Admin: delete an FAQ entry."""
    current_user("admin")
    faq.delete_entry(request_session(), path.id)
    return FaqDeletedOut(id=path.id, deleted=True), 200
