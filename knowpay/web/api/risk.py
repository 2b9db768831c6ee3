"""Risk for admins: rules, block and allow lists, the review queue, decisions, fraud marks, models, reports."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from flask_openapi3 import APIBlueprint
from pydantic import BaseModel, Field
from sqlalchemy import select

from knowpay.domain.errors import InvalidRequest
from knowpay.risk import model as risk_model
from knowpay.risk import service as risk
from knowpay.risk.models import RiskDecision, RiskListEntry, RiskModel
from knowpay.risk.schemas import DecisionOut, FraudMarkOut, ListEntryOut, ModelOut, RuleOut
from knowpay.web.api.schemas import BEARER, IdPath, Input, ListQuery, Page, Strict, errors, tag
from knowpay.web.auth import current_user
from knowpay.web.pagination import paginate
from knowpay.web.runtime import request_session, runtime
from knowpay.web.uow import api_call

bp = APIBlueprint("risk", __name__, url_prefix="/api/v1", abp_tags=tag("risk"))

ListKind = Literal["email", "email_domain", "ip", "device", "alipay_buyer_id", "wechat_openid", "card_fingerprint"]


class RuleList(BaseModel):
    data: list[RuleOut]


class RulePath(Input):
    name: str = Field(..., max_length=60)


class RulePatch(Strict):
    enabled: bool | None = None
    action: Literal["allow", "challenge", "review", "block"] | None = None
    shadow: bool | None = None
    params: dict | None = Field(None, description="merged over the current parameters; validated")


class KindPath(Input):
    kind: ListKind


class EntryPath(Input):
    kind: ListKind
    id: str = Field(..., max_length=64)


class EntryIn(Strict):
    value: str = Field(..., min_length=1, max_length=255)
    reason: str | None = Field(None, max_length=300)
    list: Literal["block", "allow"] = "block"


class EntryQuery(ListQuery):
    list: Literal["block", "allow"] | None = None


class Deleted(BaseModel):
    id: str
    deleted: bool


class ReviewQuery(ListQuery):
    status: Literal["pending", "approved", "rejected"] | None = "pending"


class DecisionQuery(ListQuery):
    payment_id: str | None = Field(None, max_length=64)
    user_id: str | None = Field(None, max_length=64)
    outcome: Literal["allow", "challenge", "review", "block"] | None = None


class NoteIn(Strict):
    note: str | None = Field(None, max_length=300)


class ModelList(BaseModel):
    data: list[ModelOut]


class VersionPath(Input):
    # Bounded like the Integer column, so a huge number is a 400, not a database overflow.
    version: int = Field(..., ge=1, le=2**31 - 1)


class ModelPatch(Strict):
    status: Literal["active", "shadow", "retired"]


class ReportQuery(Input):
    date: dt.date | None = Field(None, description="a platform-time-zone day; yesterday when absent")


def _page(rows, more, cursor, shape) -> dict:  # type: ignore[no-untyped-def]
    return {"data": [shape(r).model_dump(mode="json") for r in rows], "has_more": more, "next_cursor": cursor}


@bp.get("/risk/rules", responses={200: RuleList, **errors(401, 403)}, security=BEARER)
@api_call
def list_rules():
    """Every rule with the settings it runs on (its defaults until an admin saves some)."""
    current_user("admin")
    return {"data": [c.to_json() for c in risk.rule_configs(request_session())]}, 200


@bp.patch("/risk/rules/<name>", responses={200: RuleOut, **errors(401, 403, 404)}, security=BEARER)
@api_call
def update_rule(path: RulePath, body: RulePatch):
    """Switch a rule on or off, set its action, run it in shadow, change parameters (400 names a bad one)."""
    admin = current_user("admin")
    saved = risk.update_rule(runtime(), path.name, actor_id=admin.id, enabled=body.enabled, action=body.action,
                             shadow=body.shadow, params=body.params)
    return RuleOut.model_validate(saved.to_json()), 200


@bp.post("/risk/lists/<kind>/entries", responses={201: ListEntryOut, **errors(401, 403, 409)}, security=BEARER)
@api_call
def add_entry(path: KindPath, body: EntryIn):
    """Put a value on the block list (default) or the allow list; an IP may be a CIDR range."""
    admin = current_user("admin")
    entry = risk.add_list_entry(runtime(), kind=path.kind, value=body.value, reason=body.reason,
                                list_name=body.list, actor_id=admin.id)
    return ListEntryOut.of(entry), 201


@bp.get("/risk/lists/<kind>/entries", responses={200: Page[ListEntryOut], **errors(401, 403)}, security=BEARER)
@api_call
def list_entries(path: KindPath, query: EntryQuery):
    """The entries of one kind, newest first; `?list=block|allow` narrows."""
    current_user("admin")
    rows, more, cursor = paginate(request_session(), risk.list_entries_query(path.kind, query.list), RiskListEntry,
                                  limit=query.limit, cursor=query.cursor)
    return _page(rows, more, cursor, ListEntryOut.of), 200


@bp.delete("/risk/lists/<kind>/entries/<id>", responses={200: Deleted, **errors(401, 403, 404)}, security=BEARER)
@api_call
def remove_entry(path: EntryPath):
    current_user("admin")
    risk.remove_list_entry(runtime(), kind=path.kind, entry_id=path.id)
    return {"id": path.id, "deleted": True}, 200


@bp.get("/risk/reviews", responses={200: Page[DecisionOut], **errors(401, 403)}, security=BEARER)
@api_call
def list_reviews(query: ReviewQuery):
    """The review queue: decisions waiting for an admin (`?status=` for decided ones)."""
    current_user("admin")
    rows, more, cursor = paginate(request_session(), risk.reviews_query(query.status), RiskDecision,
                                  limit=query.limit, cursor=query.cursor)
    return _page(rows, more, cursor, DecisionOut.of), 200


@bp.post("/risk/reviews/<id>/approve", responses={200: DecisionOut, **errors(401, 403, 404, 409, 503)},
         security=BEARER)
@api_call
def approve_review(path: IdPath, body: NoteIn):
    """Let the held request go on: a payment is sent to its channel now."""
    admin = current_user("admin")
    decision = risk.approve_review(runtime(), decision_id=path.id, admin=admin, note=body.note)
    return DecisionOut.of(decision), 200


@bp.post("/risk/reviews/<id>/reject", responses={200: DecisionOut, **errors(401, 403, 404, 409)}, security=BEARER)
@api_call
def reject_review(path: IdPath, body: NoteIn):
    """Refuse the held request: a payment fails with `risk_rejected`, which the buyer sees."""
    admin = current_user("admin")
    decision = risk.reject_review(runtime(), decision_id=path.id, admin=admin, note=body.note)
    return DecisionOut.of(decision), 200


@bp.get("/risk/decisions", responses={200: Page[DecisionOut], **errors(401, 403)}, security=BEARER)
@api_call
def list_decisions(query: DecisionQuery):
    """Decisions, newest first; narrow by `payment_id`, `user_id` or `outcome`."""
    current_user("admin")
    stmt = select(RiskDecision)
    if query.payment_id:
        stmt = stmt.where(RiskDecision.payment_id == query.payment_id)
    if query.user_id:
        stmt = stmt.where(RiskDecision.user_id == query.user_id)
    if query.outcome:
        stmt = stmt.where(RiskDecision.outcome == query.outcome)
    rows, more, cursor = paginate(request_session(), stmt, RiskDecision, limit=query.limit, cursor=query.cursor)
    return _page(rows, more, cursor, DecisionOut.of), 200


@bp.get("/risk/decisions/<id>", responses={200: DecisionOut, **errors(401, 403, 404)}, security=BEARER)
@api_call
def get_decision(path: IdPath):
    """One decision with its inputs, the rules that fired and the scores: why it went as it did."""
    current_user("admin")
    return DecisionOut.of(risk.get_decision(request_session(), path.id)), 200


@bp.post("/risk/payments/<id>/fraud", responses={200: FraudMarkOut, **errors(401, 403, 404)}, security=BEARER)
@api_call
def mark_fraud(path: IdPath, body: NoteIn):
    """Mark a payment fraudulent: the access its order granted is revoked, and the model learns from it."""
    admin = current_user("admin")
    label, revoked = risk.mark_fraud(runtime(), payment_id=path.id, admin=admin, note=body.note)
    return FraudMarkOut(payment_id=label.payment_id, label=label.label, source=label.source, note=label.note,
                        revoked_entitlements=revoked), 200


@bp.get("/risk/models", responses={200: ModelList, **errors(401, 403)}, security=BEARER)
@api_call
def list_models():
    """Model versions with their held-out precision, recall and ROC AUC."""
    current_user("admin")
    rows = request_session().scalars(select(RiskModel).order_by(RiskModel.version.desc()))
    return {"data": [ModelOut.model_validate(m).model_dump(mode="json") for m in rows]}, 200


@bp.patch("/risk/models/<version>", responses={200: ModelOut, **errors(401, 403, 404)}, security=BEARER)
@api_call
def set_model_status(path: VersionPath, body: ModelPatch):
    """Make a version active (the previous one retires), shadow (scored, not acted on) or retired."""
    current_user("admin")
    ctx = runtime()
    model = risk_model.set_status(ctx, path.version, body.status)
    from knowpay.risk.engine import engine_for

    engine = engine_for(ctx)
    if engine.models is not None:
        engine.models.invalidate()
    return ModelOut.model_validate(model), 200


@bp.get("/risk/report", responses={200: {"description": "the daily risk report"}, **errors(401, 403)},
        security=BEARER)
@api_call
def daily_report(query: ReportQuery):
    """Blocked, challenged and reviewed counts and amounts, top rules, false-positive rate of one day."""
    from knowpay.risk.report import build_report, yesterday

    current_user("admin")
    ctx = runtime()
    day = query.date or yesterday(ctx)
    if day > ctx.clock.now().date() + dt.timedelta(days=1):
        raise InvalidRequest("date is in the future.", code="invalid_parameter", param="date")
    return build_report(ctx, day), 200
