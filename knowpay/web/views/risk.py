"""Risk in the admin console: the review queue (why each request was held, approve or reject), one
decision in full, rule settings (on/off, action, shadow, parameters), block and allow lists, and the
daily report with its shadow comparisons. Support staff may read the queue; the rest is for admins.
"""

from __future__ import annotations

import json
from datetime import date

from flask import Blueprint, redirect, render_template, request, url_for
from flask_babel import gettext, lazy_gettext
from flask_security import current_user
from sqlalchemy import select

from knowpay.accounts.models import User
from knowpay.domain.errors import InvalidRequest, KnowPayError
from knowpay.payments.models import Payment
from knowpay.risk import service as risk
from knowpay.risk.lists import KINDS, LISTS
from knowpay.risk.models import RiskDecision, RiskListEntry, RiskModel
from knowpay.risk.outcomes import Outcome
from knowpay.risk.report import build_report, yesterday
from knowpay.web.runtime import request_session, runtime
from knowpay.web.views.pages import (
    flash_done,
    flash_error,
    flash_warning,
    install_error_pages,
    no_store,
    page_user,
    paged,
    roles_required,
)

bp = Blueprint("risk_pages", __name__, url_prefix="/admin/risk")
install_error_pages(bp)
bp.after_request(no_store)

STAFF = ("admin", "support")
REVIEW_STATUSES = ("pending", "approved", "rejected")
OUTCOME_LABELS = {"allow": lazy_gettext("Allowed"), "challenge": lazy_gettext("Second factor asked"),
                  "review": lazy_gettext("Held for review"), "block": lazy_gettext("Blocked")}
OUTCOME_TONES = {"allow": "good", "challenge": "info", "review": "warn", "block": "bad"}
SUBJECT_LABELS = {"payment": lazy_gettext("Payment"), "topup": lazy_gettext("Wallet top-up"),
                  "refund": lazy_gettext("Refund request"), "payout": lazy_gettext("Payout request")}
REVIEW_LABELS = {"pending": lazy_gettext("Waiting"), "approved": lazy_gettext("Approved"),
                 "rejected": lazy_gettext("Rejected")}
LIST_LABELS = {"block": lazy_gettext("Block list"), "allow": lazy_gettext("Allow list")}
KIND_LABELS = {"email": lazy_gettext("E-mail"), "email_domain": lazy_gettext("E-mail domain"),
               "ip": lazy_gettext("IP address or range"), "device": lazy_gettext("Device id"),
               "alipay_buyer_id": lazy_gettext("Alipay buyer id"),
               "wechat_openid": lazy_gettext("WeChat openid"), "card_fingerprint": lazy_gettext("Card fingerprint")}


@bp.context_processor
def _labels():
    # Error pages render here too, for visitors who may not be signed in.
    admin = bool(getattr(current_user, "is_authenticated", False)) and current_user.has_any_role("admin")
    return {"outcome_labels": OUTCOME_LABELS, "outcome_tones": OUTCOME_TONES, "subject_labels": SUBJECT_LABELS,
            "review_labels": REVIEW_LABELS, "list_labels": LIST_LABELS, "kind_labels": KIND_LABELS,
            "may_decide": admin}


def _emails(session, user_ids) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return dict(session.execute(select(User.id, User.email).where(User.id.in_(set(user_ids)))).all())


# -- the review queue -------------------------------------------------------------------------------------

@bp.get("/reviews")
@roles_required(*STAFF)
def reviews():
    status = request.args.get("status", "pending")
    if status not in REVIEW_STATUSES:
        status = "pending"
    # Oldest first while waiting (first come, first served); newest first once decided.
    order = RiskDecision.created_at.asc() if status == "pending" else RiskDecision.reviewed_at.desc()
    session = request_session()
    page = paged(session, risk.reviews_query(status).order_by(order, RiskDecision.id))
    return render_template("risk/reviews.html", page=page, status=status, statuses=REVIEW_STATUSES,
                           emails=_emails(session, [d.user_id for d in page.rows]))


@bp.get("/decisions/<decision_id>")
@roles_required(*STAFF)
def decision(decision_id: str):
    session = request_session()
    found = risk.get_decision(session, decision_id)
    payment = session.get(Payment, found.payment_id) if found.payment_id else None
    people = _emails(session, [found.user_id, *([found.reviewed_by] if found.reviewed_by else [])])
    signals = (found.inputs or {}).get("signals") or {}
    return render_template("risk/decision.html", decision=found, payment=payment, emails=people,
                           signals=sorted(signals.items()), notes=(found.inputs or {}).get("notes") or [],
                           live=[f for f in found.fired if not f.get("shadow")],
                           shadow=[f for f in found.fired if f.get("shadow")])


@bp.post("/reviews/<decision_id>/<any(approve, reject):verdict>")
@roles_required("admin")
def decide(decision_id: str, verdict: str):
    """Approve (the held request goes on: a payment to its channel) or reject (a payment fails)."""
    act = risk.approve_review if verdict == "approve" else risk.reject_review
    try:
        act(runtime(), decision_id=decision_id, admin=page_user(),
            note=(request.form.get("note") or "").strip()[:300] or None)
    except KnowPayError as error:
        if error.code == "resource_missing":
            raise
        flash_error(error)
        return redirect(url_for(".decision", decision_id=decision_id), code=303)
    flash_done(gettext("Approved: the request goes on.") if verdict == "approve"
               else gettext("Rejected: the request will not go on."))
    return redirect(url_for(".reviews"), code=303)


# -- rules --------------------------------------------------------------------------------------------------

@bp.get("/rules")
@roles_required("admin")
def rules():
    return render_template("risk/rules.html", rules=risk.rule_configs(request_session()))


@bp.post("/rules/<name>")
@roles_required("admin")
def update_rule(name: str):
    """Save one rule's settings; parameters are JSON, validated, and a bad one is named."""
    try:
        try:
            params = json.loads(request.form.get("params") or "{}")
        except ValueError:
            raise InvalidRequest("params must be JSON.", code="invalid_rule_config", param="params") from None
        risk.update_rule(runtime(), name, actor_id=page_user().id, enabled="enabled" in request.form,
                         shadow="shadow" in request.form, action=request.form.get("action") or None,
                         params=params)
    except InvalidRequest as error:
        # The message names the bad field (`params.max_amount`: ...), as the API's 400 does.
        flash_warning(gettext("Not saved: %(reason)s", reason=error.message))
    else:
        flash_done(gettext("Rule %(name)s saved.", name=name))
    return redirect(url_for(".rules", _anchor=f"rule-{name}"), code=303)


# -- block and allow lists ----------------------------------------------------------------------------------

@bp.get("/lists")
@roles_required("admin")
def lists():
    kind = request.args.get("kind")
    stmt = select(RiskListEntry)
    if kind in KINDS:
        stmt = stmt.where(RiskListEntry.kind == kind)
    else:
        kind = None
    page = paged(request_session(), stmt.order_by(RiskListEntry.created_at.desc(), RiskListEntry.id))
    return render_template("risk/lists.html", page=page, kind=kind, kinds=KINDS, list_names=LISTS)


@bp.post("/lists")
@roles_required("admin")
def add_entry():
    try:
        risk.add_list_entry(runtime(), kind=request.form.get("kind") or "", value=request.form.get("value") or "",
                            reason=request.form.get("reason"), list_name=request.form.get("list") or "block",
                            actor_id=page_user().id)
    except KnowPayError as error:
        flash_error(error)
    else:
        flash_done(gettext("Added to the list."))
    return redirect(url_for(".lists"), code=303)


@bp.post("/lists/<kind>/<entry_id>/delete")
@roles_required("admin")
def remove_entry(kind: str, entry_id: str):
    try:
        risk.remove_list_entry(runtime(), kind=kind, entry_id=entry_id)
    except KnowPayError as error:
        if error.code == "resource_missing":
            raise
        flash_error(error)
    else:
        flash_done(gettext("Removed from the list."))
    return redirect(url_for(".lists", kind=kind), code=303)


# -- the daily report -----------------------------------------------------------------------------------------

@bp.get("/report")
@roles_required("admin")
def report():
    """One day's figures (yesterday unless `?date=`), the shadow comparisons and the model versions."""
    rt = runtime()
    try:
        day = date.fromisoformat(request.args.get("date") or "")
    except ValueError:
        day = yesterday(rt)
    models = list(request_session().scalars(select(RiskModel).order_by(RiskModel.version.desc()).limit(10)))
    return render_template("risk/report.html", report=build_report(rt, day), day=day, models=models,
                           outcomes=[o.value for o in Outcome])
