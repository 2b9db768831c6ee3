"""Refunds: request one (buyer within the policy, support and admins), read them back."""

from __future__ import annotations

from flask_openapi3 import APIBlueprint
from pydantic import Field

from knowpay.refunds import service as refunds
from knowpay.refunds.models import Refund
from knowpay.refunds.service import STAFF
from knowpay.representations import RefundOut, as_json
from knowpay.security import audit
from knowpay.web.api.schemas import BEARER, IdPath, ListQuery, Page, Strict, errors, tag
from knowpay.web.auth import current_user, require_recent_second_factor
from knowpay.web.pagination import paginate
from knowpay.web.runtime import request_session, runtime
from knowpay.web.uow import api_call

bp = APIBlueprint("refunds", __name__, url_prefix="/api/v1", abp_tags=tag("refunds"))


class RefundIn(Strict):
    payment_id: str = Field(..., max_length=64)
    amount: int | None = Field(None, gt=0, le=10**13, description="minor units; defaults to what is left")
    reason: str | None = Field(None, max_length=300)


class RefundQuery(ListQuery):
    payment_id: str | None = Field(None, max_length=64)


@bp.post("/refunds", responses={201: RefundOut, **errors(400, 401, 403, 404, 409, 503)}, security=BEARER)
@api_call
def create_refund(body: RefundIn):
    """Refund all or part of a succeeded payment through its channel. A refund by staff (support or
    admin) needs a recent second factor (`KnowPay-OTP` header or a step-up)."""
    actor = current_user()
    if actor.has_any_role(*STAFF):
        require_recent_second_factor(actor)
    refund = refunds.request_refund(runtime(), actor=actor, payment_id=body.payment_id,
                                    amount=body.amount, reason=body.reason)
    return RefundOut.model_validate(refund), 201


@bp.get("/refunds/<id>", responses={200: RefundOut, **errors(401, 404)}, security=BEARER)
@api_call
def get_refund(path: IdPath):
    """One refund of the caller's payments (any, for support and admins)."""
    return RefundOut.model_validate(refunds.get_refund_for(request_session(), path.id, current_user())), 200


@bp.get("/refunds", responses={200: Page[RefundOut], **errors(400, 401)}, security=BEARER)
@api_call
def list_refunds(query: RefundQuery):
    """Refunds, newest first; `?payment_id=` narrows to one payment."""
    stmt = refunds.refunds_query(current_user(), query.payment_id)
    rows, more, cursor = paginate(request_session(), stmt, Refund, limit=query.limit, cursor=query.cursor)
    return {"data": [as_json(RefundOut, r) for r in rows], "has_more": more, "next_cursor": cursor}, 200


@bp.post("/refunds/<id>/mark-sent", responses={200: RefundOut, **errors(401, 403, 404, 409)}, security=BEARER)
@api_call
def mark_refund_sent(path: IdPath):
    """Admin: a refund the channel cannot send itself (bank transfer) was sent by hand. Needs a recent
    second factor."""
    from knowpay.domain.errors import Conflict
    from knowpay.refunds.processing import complete_refund

    admin = current_user("admin")
    require_recent_second_factor(admin)
    session = request_session()
    refund = refunds.get_refund_for(session, path.id, admin)
    if not complete_refund(session, refund.id, channel_refund_no=f"manual:{admin.id}", ctx=runtime()):
        raise Conflict(f"The refund is {refund.status}, not pending.", code="refund_not_pending")
    session.refresh(refund)
    audit.record(session, admin.id, audit.REFUND_MARKED_SENT, refund.id,
                 {"payment_id": refund.payment_id, "amount": refund.amount, "currency": refund.currency},
                 runtime().clock)
    return RefundOut.model_validate(refund), 200
