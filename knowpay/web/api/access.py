"""Access and wallet: the caller's entitlements, an entitlement check for platform services, coins."""

from __future__ import annotations

from flask_openapi3 import APIBlueprint
from pydantic import BaseModel, Field

from knowpay.access import service as access
from knowpay.representations import EntitlementOut, as_json
from knowpay.wallet.service import coin_balance
from knowpay.web.api.schemas import BEARER, errors, tag
from knowpay.web.auth import current_api_key, current_user
from knowpay.web.runtime import request_session, runtime
from knowpay.web.uow import api_call

bp = APIBlueprint("access", __name__, url_prefix="/api/v1", abp_tags=tag("access"))


class EntitlementList(BaseModel):
    data: list[EntitlementOut]


class CheckQuery(BaseModel):
    user_id: str = Field(..., max_length=64)
    product_id: str = Field(..., max_length=64)


class CheckOut(BaseModel):
    allowed: bool
    entitlement: EntitlementOut | None


class WalletOut(BaseModel):
    balance: int
    currency: str = "coin"


def _json(entitlement, now) -> dict:
    body = as_json(EntitlementOut, entitlement)
    body["status"] = access.effective_status(entitlement, now)
    return body


@bp.get("/entitlements", responses={200: EntitlementList, **errors(401)}, security=BEARER)
@api_call
def list_entitlements():
    """What the caller has access to (and had: revoked and expired ones too)."""
    now = runtime().clock.now()
    return {"data": [_json(e, now) for e in access.entitlements_of(request_session(), current_user().id)]}, 200


@bp.get("/entitlements/check", responses={200: CheckOut, **errors(400, 401, 403)}, security=BEARER)
@api_call
def check_entitlement(query: CheckQuery):
    """For platform services (API key): may this user use this product now?"""
    current_api_key()
    now = runtime().clock.now()
    found = access.active_entitlement(request_session(), query.user_id, query.product_id, now=now)
    return {"allowed": found is not None, "entitlement": _json(found, now) if found else None}, 200


@bp.get("/wallet", responses={200: WalletOut, **errors(401)}, security=BEARER)
@api_call
def wallet():
    """The caller's coin balance (1 coin pays 1 minor unit of the platform currency)."""
    rt = runtime()
    return WalletOut(balance=coin_balance(request_session(), current_user().id, rt.settings.currency)), 200
