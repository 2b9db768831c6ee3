"""Creator earnings and payouts; admins approve, reject and mark payouts paid."""

from __future__ import annotations

from typing import Literal

from flask_openapi3 import APIBlueprint
from sqlalchemy import select
from pydantic import Field

from knowpay.payouts import service as payouts
from knowpay.payouts.models import Payout
from knowpay.payouts.schemas import EarningsOut, PayoutAccountOut, PayoutOut
from knowpay.web.api.schemas import BEARER, IdPath, ListQuery, Page, Strict, errors, tag
from knowpay.web.auth import current_user, require_recent_second_factor
from knowpay.web.pagination import paginate
from knowpay.web.runtime import request_session, runtime
from knowpay.web.uow import api_call

bp = APIBlueprint("payouts", __name__, url_prefix="/api/v1", abp_tags=tag("payouts"))


class PayoutIn(Strict):
    amount: int = Field(..., gt=0, le=10**13, description="minor units, at most what is available")


class PayoutAccountIn(Strict):
    holder_name: str = Field(..., min_length=1, max_length=100)
    bank_name: str = Field(..., min_length=1, max_length=100)
    account_number: str = Field(..., min_length=4, max_length=40, pattern=r"^[0-9A-Za-z \-]+$")


class RejectIn(Strict):
    reason: str = Field(..., min_length=1, max_length=300)


class PaidIn(Strict):
    reference: str | None = Field(None, max_length=100, description="the bank transfer's reference")


class PayoutQuery(ListQuery):
    status: Literal["requested", "approved", "paid", "rejected"] | None = None


@bp.get("/creator/earnings", responses={200: EarningsOut, **errors(401, 403)}, security=BEARER)
@api_call
def creator_earnings():
    """Pending (inside the settlement period), available, held for payouts, and paid out."""
    user = current_user("creator", "admin")
    found = payouts.earnings(request_session(), user.id, runtime().settings.currency)
    return EarningsOut.model_validate(found), 200


@bp.put("/creator/payout-account", responses={200: PayoutAccountOut, **errors(400, 401, 403)}, security=BEARER)
@api_call
def set_payout_account(body: PayoutAccountIn):
    """Where payouts go. Stored encrypted; only a masked form is ever shown."""
    user = current_user("creator")
    row = payouts.set_payout_account(request_session(), runtime(), creator=user, holder_name=body.holder_name,
                                     bank_name=body.bank_name, account_number=body.account_number)
    return PayoutAccountOut.model_validate(row), 200


@bp.post("/payouts", responses={201: PayoutOut, **errors(400, 401, 403, 409)}, security=BEARER)
@api_call
def request_payout(body: PayoutIn):
    """A creator asks to be paid out of their available earnings."""
    user = current_user("creator")
    return PayoutOut.model_validate(payouts.request_payout(request_session(), runtime(), creator=user,
                                                           amount=body.amount)), 201


@bp.get("/payouts", responses={200: Page[PayoutOut], **errors(400, 401)}, security=BEARER)
@api_call
def list_payouts(query: PayoutQuery):
    """A creator's own payouts; every payout for admins (`?status=requested` is the approval queue)."""
    user = current_user("creator", "admin")
    stmt = select(Payout)
    if not user.has_any_role("admin"):
        stmt = stmt.where(Payout.creator_id == user.id)
    if query.status:
        stmt = stmt.where(Payout.status == query.status)
    rows, more, cursor = paginate(request_session(), stmt, Payout, limit=query.limit, cursor=query.cursor)
    return {"data": [PayoutOut.model_validate(p).model_dump(mode="json") for p in rows], "has_more": more,
            "next_cursor": cursor}, 200


@bp.get("/payouts/<id>", responses={200: PayoutOut, **errors(401, 404)}, security=BEARER)
@api_call
def get_payout(path: IdPath):
    return PayoutOut.model_validate(payouts.get_payout_for(request_session(), path.id, current_user())), 200


@bp.post("/payouts/<id>/approve", responses={200: PayoutOut, **errors(401, 403, 404, 409)}, security=BEARER)
@api_call
def approve_payout(path: IdPath):
    """Admin: approve a requested payout for transfer."""
    admin = current_user("admin")
    require_recent_second_factor(admin)
    return PayoutOut.model_validate(payouts.approve_payout(request_session(), runtime(), payout_id=path.id,
                                                           admin=admin)), 200


@bp.post("/payouts/<id>/reject", responses={200: PayoutOut, **errors(400, 401, 403, 404, 409)}, security=BEARER)
@api_call
def reject_payout(path: IdPath, body: RejectIn):
    """Admin: reject a payout; the amount goes back to the creator's available earnings."""
    admin = current_user("admin")
    require_recent_second_factor(admin)
    return PayoutOut.model_validate(payouts.reject_payout(request_session(), runtime(), payout_id=path.id,
                                                          admin=admin, reason=body.reason)), 200


@bp.post("/payouts/<id>/mark-paid", responses={200: PayoutOut, **errors(401, 403, 404, 409)}, security=BEARER)
@api_call
def mark_payout_paid(path: IdPath, body: PaidIn):
    """Admin: the bank transfer for an approved payout went out."""
    admin = current_user("admin")
    require_recent_second_factor(admin)
    return PayoutOut.model_validate(payouts.mark_payout_paid(request_session(), runtime(), payout_id=path.id,
                                                             admin=admin, reference=body.reference)), 200
