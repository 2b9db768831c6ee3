"""Support pages: Help in the buyer centre (the payment assistant, tickets on an order and their
threads) and the ticket queue and case screen in the admin console, where support replies, changes
a ticket's status, refunds, grants access and asks the channel — through the support services.

Messages are plain text: templates escape them and keep their line breaks, nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import Blueprint, redirect, render_template, request, url_for
from flask_babel import get_locale, gettext, lazy_gettext
from sqlalchemy import select

from knowpay.accounts.models import User
from knowpay.domain.errors import KnowPayError, NotFound
from knowpay.domain.states import PaymentStatus
from knowpay.orders.models import Order
from knowpay.payments.models import Payment
from knowpay.refunds import service as refunds
from knowpay.support import assistant
from knowpay.support import service as support
from knowpay.support.models import FaqEntry, Ticket
from knowpay.web.runtime import request_session, runtime
from knowpay.web.views.pages import (
    confirm_second_factor,
    flash_done,
    flash_warning,
    install_error_pages,
    major_to_minor,
    message_for,
    no_store,
    page_user,
    paged,
    roles_required,
    second_factor_fresh,
    signed_in,
)

bp = Blueprint("help", __name__, url_prefix="/me/help")
install_error_pages(bp)
bp.after_request(no_store)

staff_bp = Blueprint("support_pages", __name__, url_prefix="/admin/tickets")
install_error_pages(staff_bp)
staff_bp.after_request(no_store)

STAFF = support.STAFF
STATUS_LABELS = {
    "open": lazy_gettext("Waiting for support"), "waiting_on_buyer": lazy_gettext("Answered"),
    "resolved": lazy_gettext("Resolved"),
}
STAFF_STATUS_LABELS = {"open": lazy_gettext("To answer"), "waiting_on_buyer": lazy_gettext("Waiting on the buyer"),
                       "resolved": lazy_gettext("Resolved")}
STATUS_TONES = {"open": "info", "waiting_on_buyer": "warn", "resolved": "good"}
CATEGORY_LABELS = {
    "paid_no_access": lazy_gettext("Paid but no access"), "payment_stuck": lazy_gettext("Payment stuck"),
    "wrong_amount": lazy_gettext("Wrong amount"), "refund": lazy_gettext("Refund"),
    "receipt": lazy_gettext("Receipt or invoice"), "other": lazy_gettext("Something else"),
}
# Our refusals in the reader's language; the rest are the shared page messages.
ERROR_MESSAGES = {
    "parameter_empty": lazy_gettext("Write something first."),
    "ticket_resolved": lazy_gettext("This ticket is resolved; open a new one to ask again."),
    "ticket_changed": lazy_gettext("The ticket changed meanwhile; have a look and try again."),
    "ticket_without_order": lazy_gettext("This ticket is not about an order."),
    "order_not_paid": lazy_gettext("Only a paid order gives access."),
    "payment_not_refundable": lazy_gettext("This payment cannot be refunded."),
    "parameter_missing": lazy_gettext("Give a reason, and choose the payment when the order has several."),
}
ENTRY_LABELS = {
    "note": lazy_gettext("Internal note"), "status_changed": lazy_gettext("Status changed"),
    "refund_requested": lazy_gettext("Refund filed"), "access_granted": lazy_gettext("Access granted"),
    "payments_checked": lazy_gettext("Asked the channel"),
}


@dataclass(frozen=True)
class PageAction:
    """An assistant's button as a page shows it: a link, a form posted to one of our pages, or an FAQ answer."""

    label: str
    url: str | None = None
    fields: dict = field(default_factory=dict)  # present: a form POSTed to `url` with these hidden fields
    confirm: str | None = None
    answer: str | None = None  # an FAQ entry, unfolded in place


def _labels(staff: bool) -> dict:
    statuses = STAFF_STATUS_LABELS if staff else STATUS_LABELS
    return {"ticket_status": lambda status: str(statuses.get(status, status)),
            "ticket_tone": lambda status: STATUS_TONES.get(status, "muted"),
            "ticket_category": lambda category: str(CATEGORY_LABELS.get(category, category)),
            "entry_label": lambda kind: str(ENTRY_LABELS.get(kind, kind)), "categories": CATEGORY_LABELS}


@bp.context_processor
def _buyer_labels():
    return _labels(staff=False)


@staff_bp.context_processor
def _staff_labels():
    return {**_labels(staff=True), "needs_code": not second_factor_fresh(), "statuses": STAFF_STATUS_LABELS}


# -- the buyer's Help ----------------------------------------------------------------------------------

def _page_locale() -> str:
    return "zh-CN" if str(get_locale()).startswith("zh") else "en"


def _page_actions(actions: list[dict], *, offer_ticket: bool) -> list[PageAction]:
    """The assistant's API actions as this site's links and forms (the buyer is signed in by cookie here);
    without its "ask a person" button where the page's own form sends the ticket."""
    faq_ids = [a["entry_id"] for a in actions if a["type"] == "faq"]
    answers = dict(request_session().execute(select(FaqEntry.id, FaqEntry.answer).where(
        FaqEntry.id.in_(faq_ids)))) if faq_ids else {}
    shown = []
    for action in actions:
        kind, label, body = action["type"], action["label"], action.get("body") or {}
        if kind == "request_refund":
            shown.append(PageAction(label, url_for("help.assistant_refund"), confirm=gettext("File this refund?"),
                                    fields={k: body[k] for k in ("payment_id", "amount", "reason")}))
        elif kind == "open_ticket" and offer_ticket:
            fields = {k: v for k, v in body.items() if k in ("subject", "body", "category", "order_id", "payment_id")}
            shown.append(PageAction(label, url_for("help.new_ticket"), fields={**fields, "step": "send"}))
        elif kind == "view_order":
            shown.append(PageAction(label, url_for("buyer.order_detail", order_id=action["order_id"])))
        elif kind == "view_entitlements":
            shown.append(PageAction(label, url_for("buyer.library")))
        elif kind == "pay_order":
            shown.append(PageAction(label, url_for("checkout.order", order_id=action["order_id"])))
        elif kind == "faq" and action["entry_id"] in answers:
            shown.append(PageAction(label, answer=answers[action["entry_id"]]))
    return shown


def _ask(message: str, about: tuple[str, ...] = (), *,
         offer_ticket: bool = True) -> tuple[assistant.Answer | None, list[PageAction], str | None]:
    """The assistant's answer to `message` for the signed-in buyer, or the reason it could not answer."""
    try:
        found = assistant.answer(runtime(), buyer=page_user(), message=message, locale=_page_locale(), about=about)
    except KnowPayError as error:
        return None, [], _text_error(error)
    return found, _page_actions(found.actions, offer_ticket=offer_ticket), None


def _text_error(error: KnowPayError) -> str:
    if error.code == "parameter_too_long":
        return gettext("Keep it to %(limit)s characters.", limit=support.MAX_MESSAGE)
    known = ERROR_MESSAGES.get(error.code)
    return str(known) if known is not None else message_for(error)


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0].strip()[:80] if lines else ""


def _own_ticket(session, ticket_id: str) -> Ticket:
    """The signed-in buyer's own ticket (staff answer tickets in the admin console, not here)."""
    user = page_user()
    ticket = support.get_ticket_for(session, ticket_id, user)
    if ticket.buyer_id != user.id:
        raise NotFound("No such ticket.", param="id")
    return ticket


def _help_page(*, question: str = "", found=None, actions=(), error: str | None = None, status: int = 200):
    stmt = support.tickets_of_query(page_user().id).order_by(Ticket.updated_at.desc(), Ticket.id.desc())
    return render_template("support/help.html", page=paged(request_session(), stmt), question=question,
                           found=found, actions=actions, error=error, max_message=support.MAX_MESSAGE), status


@bp.get("")
@signed_in
def index():
    return _help_page()


@bp.post("/ask")
@signed_in
def ask():
    """Ask the payment assistant; it may ask the channel about an open payment (主动查单), nothing more."""
    question = request.form.get("message") or ""
    found, actions, error = _ask(question)
    return _help_page(question=question, found=found, actions=actions, error=error, status=400 if error else 200)


def _subject_of_request() -> tuple[str | None, str | None]:
    """The ids of the order (and payment) the new ticket is about, from the query or the form: the buyer's
    own only. Read apart from the request's session, which a POST would open for writing."""
    source = request.form if request.method == "POST" else request.args
    user = page_user()
    payment_id = (source.get("payment_id") or "").strip() or None
    order_id = (source.get("order_id") or "").strip() or None
    with runtime().db.transaction(write=False) as session:
        if payment_id:
            payment = session.get(Payment, payment_id)
            if payment is None or payment.buyer_id != user.id:
                raise NotFound("No such payment.", param="payment_id")
            order_id = payment.order_id
        order = session.get(Order, order_id) if order_id else None
        if order_id and (order is None or order.buyer_id != user.id):
            raise NotFound("No such order.", param="order_id")
    return order_id, payment_id


@bp.route("/new", methods=["GET", "POST"])
@signed_in
def new_ticket():
    """Describe the problem (about an order, when opened from one); `step=ask` shows the assistant's answer
    first, `step=send` opens the ticket."""
    order_id, payment_id = _subject_of_request()
    form = {"subject": "", "body": "", "category": "other"}
    found, actions, errors = None, [], {}
    if request.method == "POST":
        form = {"subject": request.form.get("subject") or "", "body": request.form.get("body") or "",
                "category": request.form.get("category") or "other"}
        if form["category"] not in CATEGORY_LABELS:
            form["category"] = "other"
        if request.form.get("step") == "send":
            try:
                # The body is checked first: an empty message is what to point out, not the subject it would give.
                support.check_text(form["body"], param="body", limit=support.MAX_MESSAGE)
                ticket = support.open_ticket(runtime(), buyer=page_user(), request=support.TicketRequest(
                    subject=form["subject"].strip() or _first_line(form["body"]), body=form["body"],
                    category=form["category"], order_id=None if payment_id else order_id, payment_id=payment_id))
            except KnowPayError as error:
                if error.code == "resource_missing":
                    raise
                errors[error.param or "body"] = _text_error(error)
            else:
                flash_done(gettext("Your ticket was sent. Support will answer here and by e-mail."))
                return redirect(url_for(".ticket", ticket_id=ticket.id), code=303)
        else:
            found, actions, error = _ask(form["body"], tuple(i for i in (order_id, payment_id) if i),
                                         offer_ticket=False)
            if error:
                errors["body"] = error
    session = request_session()
    return render_template("support/new_ticket.html", order=session.get(Order, order_id) if order_id else None,
                           payment=session.get(Payment, payment_id) if payment_id else None, form=form, found=found,
                           actions=actions, errors=errors, max_message=support.MAX_MESSAGE), 400 if errors else 200


@bp.get("/tickets/<ticket_id>")
@signed_in
def ticket(ticket_id: str):
    session = request_session()
    found = _own_ticket(session, ticket_id)
    return render_template("support/ticket.html", ticket=found, order=session.get(Order, found.order_id)
                           if found.order_id else None, entries=support.visible_entries(session, found, page_user()),
                           max_message=support.MAX_MESSAGE)


@bp.post("/tickets/<ticket_id>/messages")
@signed_in
def reply(ticket_id: str):
    with runtime().db.transaction(write=False) as session:
        _own_ticket(session, ticket_id)
    try:
        support.reply(runtime(), ticket_id=ticket_id, author=page_user(), body=request.form.get("body") or "")
    except KnowPayError as error:
        if error.code == "resource_missing":
            raise
        flash_warning(_text_error(error))
    else:
        flash_done(gettext("Your message was sent."))
    return redirect(url_for(".ticket", ticket_id=ticket_id), code=303)


@bp.post("/tickets/<ticket_id>/resolve")
@signed_in
def resolve(ticket_id: str):
    """The buyer closes their own ticket: the problem is solved."""
    with runtime().db.transaction(write=False) as session:
        _own_ticket(session, ticket_id)
    support.change_status(runtime(), ticket_id=ticket_id, actor=page_user(), status="resolved")
    flash_done(gettext("The ticket is closed. Glad it is sorted out."))
    return redirect(url_for(".ticket", ticket_id=ticket_id), code=303)


@bp.post("/refund")
@signed_in
def assistant_refund():
    """The assistant's refund button: files the refund it offered, through the refund service (buyer rules)."""
    user = page_user()
    payment_id = request.form.get("payment_id") or ""
    with runtime().db.transaction(write=False) as session:
        found = session.get(Payment, payment_id)
        if found is None or found.buyer_id != user.id:
            raise NotFound("No such payment.", param="payment_id")
    raw = (request.form.get("amount") or "").strip()
    try:
        refunds.request_refund(runtime(), actor=user, payment_id=payment_id,
                               amount=int(raw) if raw.isascii() and raw.isdigit() else None,
                               reason=(request.form.get("reason") or "").strip()[:300] or None)
    except KnowPayError as error:
        flash_warning(_text_error(error))
        return redirect(url_for("buyer.order_detail", order_id=found.order_id), code=303)
    flash_done(gettext("Your refund request was sent."))
    return redirect(url_for("buyer.refund_list"), code=303)


# -- support's queue and case screen ---------------------------------------------------------------------

@staff_bp.get("")
@roles_required(*STAFF)
def queue():
    status = request.args.get("status", "open")
    status = status if status in STAFF_STATUS_LABELS else None
    category = request.args.get("category")
    category = category if category in CATEGORY_LABELS else None
    stmt = support.queue_query(status=status, category=category).order_by(Ticket.updated_at.desc(), Ticket.id.desc())
    session = request_session()
    page = paged(session, stmt)
    buyers = dict(session.execute(select(User.id, User.email).where(
        User.id.in_({t.buyer_id for t in page.rows}))).all()) if page.rows else {}
    return render_template("support/queue.html", page=page, status=status, category=category, buyers=buyers)


@staff_bp.get("/<ticket_id>")
@roles_required(*STAFF)
def case(ticket_id: str):
    session = request_session()
    found = support.ticket_case(session, support.get_ticket_for(session, ticket_id, page_user()))
    left = {p.id: refunds.refundable_left(session, p) for p in found.payments if p.status == PaymentStatus.SUCCEEDED}
    first = found.ticket.first_response_at
    return render_template("support/case.html", case=found, left=left, max_message=support.MAX_MESSAGE,
                           first_reply=(first - found.ticket.created_at) if first else None)


def _back(ticket_id: str):
    return redirect(url_for(".case", ticket_id=ticket_id), code=303)


def _staff_action(ticket_id: str, action, done: str):
    """Run one staff action; a refusal is shown on the case screen, a missing ticket is a 404 page."""
    try:
        action()
    except KnowPayError as error:
        if error.code == "resource_missing" and error.param == "id":
            raise
        flash_warning(_text_error(error))
    else:
        flash_done(done)
    return _back(ticket_id)


@staff_bp.post("/<ticket_id>/messages")
@roles_required(*STAFF)
def staff_reply(ticket_id: str):
    internal = request.form.get("internal") == "1"
    return _staff_action(ticket_id, lambda: support.reply(runtime(), ticket_id=ticket_id, author=page_user(),
                                                          body=request.form.get("body") or "", internal=internal),
                         gettext("Note saved.") if internal else gettext("Reply sent; the buyer is told by e-mail."))


@staff_bp.post("/<ticket_id>/status")
@roles_required(*STAFF)
def set_status(ticket_id: str):
    return _staff_action(ticket_id, lambda: support.change_status(runtime(), ticket_id=ticket_id, actor=page_user(),
                                                                  status=request.form.get("status") or ""),
                         gettext("Status changed."))


@staff_bp.post("/<ticket_id>/refund")
@roles_required(*STAFF)
def refund(ticket_id: str):
    """A staff refund from the ticket: any time, with a reason; needs a recent second factor like every
    staff refund."""
    staff = page_user()

    def run() -> None:
        payment_id = request.form.get("payment_id") or None
        with runtime().db.transaction(write=False) as session:
            order_id = support.get_ticket_for(session, ticket_id, staff).order_id
            currency = session.get(Order, order_id).currency if order_id else runtime().settings.currency
        confirm_second_factor(staff, request.form.get("otp"), via="page:ticket_refund")
        raw = (request.form.get("amount") or "").strip()
        support.refund_from_ticket(runtime(), ticket_id=ticket_id, staff=staff, payment_id=payment_id,
                                   amount=major_to_minor(raw, currency) if raw else None,
                                   reason=(request.form.get("reason") or "").strip())

    return _staff_action(ticket_id, run, gettext("Refund started."))


@staff_bp.post("/<ticket_id>/regrant")
@roles_required(*STAFF)
def regrant(ticket_id: str):
    return _staff_action(ticket_id, lambda: support.regrant_from_ticket(runtime(), ticket_id=ticket_id,
                                                                        staff=page_user()),
                         gettext("Access is active for what the order bought."))


@staff_bp.post("/<ticket_id>/check-payments")
@roles_required(*STAFF)
def check_payments(ticket_id: str):
    return _staff_action(ticket_id, lambda: support.check_payments_from_ticket(runtime(), ticket_id=ticket_id,
                                                                               staff=page_user()),
                         gettext("Asked the channels; the payments below show what they said."))
