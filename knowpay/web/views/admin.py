"""The admin console: users and roles, order / payment / refund search, bank-transfer confirmation,
payout approval, reconciliation runs, webhook endpoints and deliveries, and the audit log.

Support staff see the search pages and may refund; the rest is for admins. Actions that move money
or change roles ask for a recent second factor, as the API does.
"""

from __future__ import annotations

import csv
import io
import json

from flask import Blueprint, Response, abort, redirect, render_template, request, url_for
from flask_babel import gettext
from sqlalchemy import func, or_, select

from knowpay.accounts import service as accounts
from knowpay.accounts.models import ROLES, Role, User
from knowpay.domain.errors import InvalidRequest, KnowPayError
from knowpay.domain.states import OrderStatus, PaymentStatus, PayoutStatus, RefundStatus
from knowpay.orders.models import Order
from knowpay.orders.service import get_order_for
from knowpay.outbox import webhooks
from knowpay.outbox.models import WebhookDelivery, WebhookEndpoint
from knowpay.outbox.service import EVENT_TYPES
from knowpay.payments.bank_transfers import record_transfer
from knowpay.payments.models import BankTransferReceipt, Payment
from knowpay.payouts import service as payouts
from knowpay.payouts.models import Payout
from knowpay.reconciliation.models import RESULTS, ReconciliationItem, ReconciliationRun
from knowpay.refunds import service as refunds
from knowpay.refunds.models import Refund
from knowpay.risk.models import RiskDecision
from knowpay.security import audit
from knowpay.security.models import AuditEntry
from knowpay.support.models import Ticket
from knowpay.web.api.reconciliation import ITEM_FIELDS
from knowpay.web.runtime import request_session, runtime
from knowpay.web.views.pages import (
    confirm_second_factor,
    flash_done,
    flash_error,
    flash_warning,
    install_error_pages,
    major_to_minor,
    no_store,
    page_user,
    paged,
    roles_required,
    second_factor_fresh,
)

bp = Blueprint("admin", __name__, url_prefix="/admin")
install_error_pages(bp)
bp.after_request(no_store)

STAFF = ("admin", "support")


@bp.context_processor
def _step_up():
    """Forms for money and role actions show the code field only when no recent second factor is on file."""
    return {"needs_code": not second_factor_fresh()}


def _users_by_email(q: str):
    return select(User.id).where(or_(func.lower(User.email) == q.lower(), User.username == q))


@bp.get("")
@roles_required(*STAFF)
def home():
    session = request_session()

    def count(stmt) -> int:
        return session.scalar(select(func.count()).select_from(stmt.subquery())) or 0

    return render_template(
        "admin/home.html",
        payouts_waiting=count(select(Payout.id).where(Payout.status == PayoutStatus.REQUESTED)),
        transfers_waiting=count(select(Payment.id).where(Payment.channel == "bank_transfer",
                                                         Payment.status == PaymentStatus.REQUIRES_ACTION)),
        refunds_open=count(select(Refund.id).where(Refund.status == RefundStatus.PENDING)),
        runs_with_problems=count(select(ReconciliationRun.id).where(ReconciliationRun.status == "failed")),
        reviews_waiting=count(select(RiskDecision.id).where(RiskDecision.review_status == "pending")),
        tickets_open=count(select(Ticket.id).where(Ticket.status == "open")))


# -- users and roles -----------------------------------------------------------------------------------

@bp.get("/users")
@roles_required("admin")
def users():
    q = (request.args.get("q") or "").strip()
    stmt = select(User).where(User.deleted_at.is_(None))
    if q:
        like = f"%{q.lower()}%"
        stmt = stmt.where(or_(func.lower(User.email).like(like), func.lower(User.username).like(like), User.id == q))
    role = request.args.get("role")
    if role in ROLES:
        stmt = stmt.where(User.roles.any(Role.name == role))
    stmt = stmt.order_by(User.created_at.desc(), User.id.desc())
    return render_template("admin/users.html", page=paged(request_session(), stmt), q=q, role=role, roles=ROLES)


@bp.post("/users/<user_id>/roles")
@roles_required("admin")
def set_roles(user_id: str):
    """Give a user exactly the ticked roles (needs a recent second factor)."""
    rt = runtime()
    admin = page_user()
    try:
        confirm_second_factor(admin, request.form.get("otp"), via="page:roles")
        with rt.db.transaction() as tx:
            user = accounts.get_user(tx, user_id)
            added, removed = accounts.set_roles(tx, user, request.form.getlist("roles"))
            audit.record(tx, admin.id, audit.ROLES_CHANGED, user.id,
                         {"added": added, "removed": removed, "roles": user.role_names, "via": "page"}, rt.clock)
    except KnowPayError as error:
        if error.code == "resource_missing":
            raise
        flash_error(error)
    else:
        flash_done(gettext("Roles saved."))
    return redirect(url_for(".users", q=request.form.get("q") or None), code=303)


# -- orders, payments, refunds ------------------------------------------------------------------------

@bp.get("/orders")
@roles_required(*STAFF)
def orders():
    q = (request.args.get("q") or "").strip()
    status = request.args.get("status")
    stmt = select(Order)
    if q:
        stmt = stmt.where(or_(Order.id == q, Order.buyer_id == q, Order.buyer_id.in_(_users_by_email(q)),
                              Order.id.in_(select(Payment.order_id).where(or_(Payment.id == q,
                                                                              Payment.channel_trade_no == q)))))
    if status in {s.value for s in OrderStatus}:
        stmt = stmt.where(Order.status == status)
    stmt = stmt.order_by(Order.created_at.desc(), Order.id.desc())
    return render_template("admin/orders.html", page=paged(request_session(), stmt), q=q, status=status,
                           statuses=[s.value for s in OrderStatus])


@bp.get("/orders/<order_id>")
@roles_required(*STAFF)
def order_detail(order_id: str):
    session = request_session()
    found = get_order_for(session, order_id, page_user())
    attempts = list(session.scalars(select(Payment).where(Payment.order_id == found.id).order_by(Payment.created_at)))
    left = {p.id: refunds.refundable_left(session, p) for p in attempts if p.status == PaymentStatus.SUCCEEDED}
    return render_template("admin/order.html", order=found, payments=attempts, left=left,
                           buyer=session.get(User, found.buyer_id),
                           refunds=list(session.scalars(select(Refund).where(Refund.order_id == found.id)
                                                        .order_by(Refund.created_at))))


@bp.post("/payments/<payment_id>/refund")
@roles_required(*STAFF)
def refund(payment_id: str):
    """A staff refund: any time, with a reason; needs a recent second factor."""
    rt = runtime()
    staff = page_user()
    order_id = None
    try:
        with rt.db.transaction(write=False) as session:
            found = session.get(Payment, payment_id)
            if found is None:
                abort(404)
            order_id, currency = found.order_id, found.currency
        confirm_second_factor(staff, request.form.get("otp"), via="page:refund")
        raw = (request.form.get("amount") or "").strip()
        refunds.request_refund(rt, actor=staff, payment_id=payment_id,
                               amount=major_to_minor(raw, currency) if raw else None,
                               reason=(request.form.get("reason") or "").strip() or None)
    except KnowPayError as error:
        flash_error(error)
    else:
        flash_done(gettext("Refund started."))
    return redirect(url_for(".order_detail", order_id=order_id), code=303)


@bp.get("/payments")
@roles_required(*STAFF)
def payments():
    q = (request.args.get("q") or "").strip()
    status, channel = request.args.get("status"), request.args.get("channel")
    stmt = select(Payment)
    if q:
        stmt = stmt.where(or_(Payment.id == q, Payment.order_id == q, Payment.channel_trade_no == q,
                              Payment.buyer_id == q, Payment.buyer_id.in_(_users_by_email(q))))
    if status in {s.value for s in PaymentStatus}:
        stmt = stmt.where(Payment.status == status)
    channels = sorted(set(runtime().channels.names()) | {"wallet"})
    if channel in channels:
        stmt = stmt.where(Payment.channel == channel)
    stmt = stmt.order_by(Payment.created_at.desc(), Payment.id.desc())
    return render_template("admin/payments.html", page=paged(request_session(), stmt), q=q, status=status,
                           channel=channel, statuses=[s.value for s in PaymentStatus], channels=channels)


@bp.get("/refunds")
@roles_required(*STAFF)
def refund_list():
    q = (request.args.get("q") or "").strip()
    status = request.args.get("status")
    stmt = select(Refund)
    if q:
        stmt = stmt.where(or_(Refund.id == q, Refund.payment_id == q, Refund.order_id == q,
                              Refund.payment_id.in_(select(Payment.id).where(Payment.buyer_id.in_(_users_by_email(q))))))
    if status in {s.value for s in RefundStatus}:
        stmt = stmt.where(Refund.status == status)
    stmt = stmt.order_by(Refund.created_at.desc(), Refund.id.desc())
    return render_template("admin/refunds.html", page=paged(request_session(), stmt), q=q, status=status,
                           statuses=[s.value for s in RefundStatus])


# -- bank transfers -------------------------------------------------------------------------------------

@bp.route("/bank-transfers", methods=["GET", "POST"])
@roles_required("admin")
def bank_transfers():
    rt = runtime()
    if request.method == "POST":
        try:
            confirm_second_factor(page_user(), request.form.get("otp"), via="page:bank_transfer")
            receipt = record_transfer(rt, admin=page_user(), reference=request.form.get("reference") or "",
                                      amount=major_to_minor(request.form.get("amount"), rt.settings.currency),
                                      note=request.form.get("note"))
        except KnowPayError as error:
            flash_error(error)
        else:
            outcomes = {
                "captured": gettext("Recorded: the payment is complete and the buyer has access."),
                "partial": gettext("Recorded, but the amount is less than the payment: resolve it by hand."),
                "excess": gettext("Recorded, but the amount is more than the payment: resolve it by hand."),
                "unknown_reference": gettext("Recorded, but no payment has this reference: resolve it by hand."),
                "not_payable": gettext("Recorded, but that payment can no longer be paid: resolve it by hand."),
            }
            (flash_done if receipt.outcome == "captured" else flash_warning)(outcomes[receipt.outcome])
        return redirect(url_for(".bank_transfers"), code=303)
    session = request_session()
    waiting = list(session.scalars(select(Payment).where(Payment.channel == "bank_transfer",
                                                         Payment.status == PaymentStatus.REQUIRES_ACTION)
                                   .order_by(Payment.created_at.desc()).limit(100)))
    stmt = select(BankTransferReceipt).order_by(BankTransferReceipt.created_at.desc(), BankTransferReceipt.id.desc())
    return render_template("admin/bank_transfers.html", waiting=waiting, page=paged(session, stmt))


# -- payouts ----------------------------------------------------------------------------------------------

@bp.get("/payouts")
@roles_required("admin")
def payout_list():
    status = request.args.get("status", PayoutStatus.REQUESTED.value)
    stmt = select(Payout)
    if status in {s.value for s in PayoutStatus}:
        stmt = stmt.where(Payout.status == status)
    else:
        status = None
    stmt = stmt.order_by(Payout.created_at.desc(), Payout.id.desc())
    session = request_session()
    page = paged(session, stmt)
    creators = {u.id: u for u in session.scalars(select(User).where(User.id.in_({p.creator_id for p in page.rows})))}
    return render_template("admin/payouts.html", page=page, status=status, creators=creators,
                           statuses=[s.value for s in PayoutStatus])


@bp.post('/payouts/<payout_id>/<any(approve, reject, "mark-paid"):decision>')
@roles_required("admin")
def decide_payout(payout_id: str, decision: str):
    rt = runtime()
    admin = page_user()
    try:
        confirm_second_factor(admin, request.form.get("otp"), via=f"page:payout_{decision}")
        with rt.db.transaction() as tx:
            if decision == "approve":
                payouts.approve_payout(tx, rt, payout_id=payout_id, admin=admin)
            elif decision == "reject":
                payouts.reject_payout(tx, rt, payout_id=payout_id, admin=admin, reason=request.form.get("reason") or "")
            else:
                payouts.mark_payout_paid(tx, rt, payout_id=payout_id, admin=admin,
                                         reference=(request.form.get("reference") or "").strip() or None)
    except KnowPayError as error:
        if error.code == "resource_missing":
            raise
        flash_error(error)
    else:
        flash_done({"approve": gettext("Payout approved."), "reject": gettext("Payout rejected."),
                    "mark-paid": gettext("Payout marked as paid.")}[decision])
    return redirect(url_for(".payout_list", status=request.form.get("back_status") or None), code=303)


# -- reconciliation -------------------------------------------------------------------------------------

@bp.get("/reconciliation")
@roles_required("admin")
def reconciliation():
    stmt = select(ReconciliationRun).order_by(ReconciliationRun.day.desc(), ReconciliationRun.channel)
    return render_template("admin/reconciliation.html", page=paged(request_session(), stmt), results=RESULTS)


def _run(run_id: str) -> ReconciliationRun:
    run = request_session().get(ReconciliationRun, run_id)
    if run is None:
        abort(404)
    return run


def _items(run_id: str, result: str | None):
    stmt = select(ReconciliationItem).where(ReconciliationItem.run_id == run_id).order_by(ReconciliationItem.id)
    if result in RESULTS:
        stmt = stmt.where(ReconciliationItem.result == result)
    return stmt


@bp.get("/reconciliation/<run_id>")
@roles_required("admin")
def reconciliation_run(run_id: str):
    result = request.args.get("result")
    run = _run(run_id)
    return render_template("admin/reconciliation_run.html", run=run, result=result if result in RESULTS else None,
                           results=RESULTS, page=paged(request_session(), _items(run_id, result), size=100))


@bp.get("/reconciliation/<run_id>.csv")
@roles_required("admin")
def reconciliation_csv(run_id: str):
    """The run's lines as CSV, the same columns as the API's export."""
    run = _run(run_id)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(ITEM_FIELDS)
    for item in request_session().scalars(_items(run_id, request.args.get("result"))):
        writer.writerow(["" if getattr(item, f) is None else getattr(item, f) for f in ITEM_FIELDS])
    filename = f"reconciliation-{run.channel}-{run.day.isoformat()}.csv"
    return Response(buffer.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


# -- webhooks ---------------------------------------------------------------------------------------------

@bp.route("/webhooks", methods=["GET", "POST"])
@roles_required("admin")
def webhook_list():
    rt = runtime()
    created = None
    if request.method == "POST":
        try:
            with rt.db.transaction() as tx:
                endpoint = webhooks.create_endpoint(tx, (request.form.get("url") or "").strip(),
                                                    request.form.getlist("events"), actor_id=page_user().id,
                                                    clock=rt.clock)
                created = {"id": endpoint.id, "url": endpoint.url, "secret": endpoint.secret}
        except InvalidRequest as error:
            flash_error(error)
            return redirect(url_for(".webhook_list"), code=303)
    session = request_session()
    endpoints = list(session.scalars(webhooks.endpoints_query().order_by(WebhookEndpoint.created_at.desc())))
    failing = dict(session.execute(select(WebhookDelivery.endpoint_id, func.count()).where(
        WebhookDelivery.status == "failed").group_by(WebhookDelivery.endpoint_id)).all())
    # The secret is shown once, in the answer to the POST that made it.
    return render_template("admin/webhooks.html", endpoints=endpoints, failing=failing, created=created,
                           event_types=sorted(EVENT_TYPES))


@bp.get("/webhooks/<endpoint_id>")
@roles_required("admin")
def webhook_detail(endpoint_id: str):
    session = request_session()
    endpoint = webhooks.get_endpoint(session, endpoint_id)
    status = request.args.get("status")
    if status not in ("pending", "succeeded", "failed"):
        status = None
    stmt = webhooks.deliveries_query(endpoint.id, status=status).order_by(
        WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
    page = paged(session, stmt)
    types = webhooks.event_types(session, [d.event_id for d in page.rows])
    return render_template("admin/webhook.html", endpoint=endpoint, page=page, types=types, status=status)


@bp.post("/webhooks/deliveries/<delivery_id>/redeliver")
@roles_required("admin")
def redeliver(delivery_id: str):
    rt = runtime()
    endpoint_id = None
    try:
        with rt.db.transaction() as tx:
            delivery = webhooks.redeliver_delivery(tx, delivery_id, clock=rt.clock)
            endpoint_id = delivery.endpoint_id
    except KnowPayError as error:
        if error.code == "resource_missing":
            raise
        flash_error(error)
    else:
        flash_done(gettext("The delivery will be sent again in a moment."))
    return redirect(url_for(".webhook_detail", endpoint_id=endpoint_id or request.form.get("endpoint_id", "")),
                    code=303)


# -- audit log ----------------------------------------------------------------------------------------------

@bp.get("/audit")
@roles_required("admin")
def audit_log():
    stmt = select(AuditEntry)
    filters = {}
    for name in ("actor_id", "action", "target"):
        value = (request.args.get(name) or "").strip()[:64]
        if value:
            filters[name] = value
            stmt = stmt.where(getattr(AuditEntry, name) == value)
    page = paged(request_session(), stmt.order_by(AuditEntry.seq.desc()), size=50)
    entries = [(entry, json.loads(entry.details)) for entry in page.rows]
    return render_template("admin/audit.html", page=page, entries=entries, filters=filters)
