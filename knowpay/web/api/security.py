"""Account security: two-factor set-up and step-up; for admins the audit log and role changes."""

from __future__ import annotations

import json
from typing import Literal

from flask_openapi3 import APIBlueprint
from pydantic import BaseModel, Field
from sqlalchemy import select

from knowpay.accounts import service as accounts
from knowpay.accounts import totp
from knowpay.accounts.models import ROLES
from knowpay.domain.errors import AuthenticationFailed, InvalidRequest
from knowpay.fieldcrypt import FieldCipher
from knowpay.security import audit
from knowpay.security.models import AuditEntry
from knowpay.web.api.accounts import UserOut, audit_caller, caller_in_session, check_second_factor, user_out
from knowpay.web.api.schemas import BEARER, IdPath, Input, Out, Strict, UtcDateTime, errors, tag
from knowpay.web.auth import (
    current_access_token,
    current_user,
    reject_wrong_code,
    require_recent_second_factor,
)
from knowpay.web.runtime import request_session, runtime
from knowpay.web.uow import api_call

bp = APIBlueprint("security_api", __name__, url_prefix="/api/v1", abp_tags=tag("security"))


class OtpIn(Strict):
    otp: str = Field(..., min_length=1, max_length=32, description="the app's code, or a recovery code")


class TotpStatusOut(BaseModel):
    enabled: bool
    setup_pending: bool
    recovery_codes_left: int


class TotpSetupOut(BaseModel):
    secret: str = Field(..., description="the key, base32, for typing into an authenticator app")
    otpauth_uri: str = Field(..., description="the otpauth:// URI to show as a QR code")


class RecoveryCodesOut(BaseModel):
    enabled: bool
    recovery_codes: list[str] = Field(..., description="each works once, instead of a code; shown only now")


class DisabledOut(BaseModel):
    enabled: bool


class StepUpOut(BaseModel):
    second_factor_at: UtcDateTime
    valid_for_seconds: int


class RolesIn(Strict):
    roles: list[Literal["buyer", "creator", "support", "admin"]] = Field(..., min_length=1, max_length=len(ROLES))


class AuditQuery(Input):
    limit: int = Field(50, ge=1, le=100)
    cursor: str | None = Field(None, max_length=20, description="the `next_cursor` of the previous page")
    actor_id: str | None = Field(None, max_length=64)
    action: str | None = Field(None, max_length=60)
    target: str | None = Field(None, max_length=64)


class AuditEntryOut(Out):
    seq: int
    created_at: UtcDateTime
    actor_id: str | None
    action: str
    target: str | None
    details: dict
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    data: list[AuditEntryOut]
    has_more: bool
    next_cursor: str | None


def _cipher() -> FieldCipher:
    return FieldCipher(runtime().settings.encryption_keys)


@bp.get("/me/2fa", responses={200: TotpStatusOut, **errors(401)}, security=BEARER)
@api_call
def totp_status():
    """Whether two-factor sign-in is on, and how many recovery codes are left."""
    user = caller_in_session()
    return TotpStatusOut(enabled=user.totp_enabled, setup_pending=bool(user.totp_pending_secret),
                         recovery_codes_left=totp.unused_recovery_codes(request_session(), user.id)), 200


@bp.post("/me/2fa/setup", responses={200: TotpSetupOut, **errors(401, 409, 429)}, security=BEARER)
@api_call(replay=False)  # the answer holds the key: never stored
def setup_totp():
    """Start two-factor set-up: a new key for an authenticator app (confirm it with a code next)."""
    setup = totp.begin_totp_setup(caller_in_session(), cipher=_cipher())
    return TotpSetupOut(secret=setup.secret, otpauth_uri=setup.uri), 200


@bp.post("/me/2fa/confirm", responses={200: RecoveryCodesOut, **errors(401, 409, 429)}, security=BEARER)
@api_call(replay=False)  # the answer holds recovery codes: never stored
def confirm_totp(body: OtpIn):
    """Turn two-factor sign-in on with a code from the new key; answers with ten recovery codes."""
    rt = runtime()
    user = caller_in_session()
    try:
        codes = totp.confirm_totp_setup(request_session(), user, body.otp, cipher=_cipher(), clock=rt.clock)
    except AuthenticationFailed:
        reject_wrong_code(user)
    accounts.record_step_up(request_session(), current_access_token().id, clock=rt.clock)
    audit_caller(user, audit.TOTP_ENABLED)
    return RecoveryCodesOut(enabled=True, recovery_codes=codes), 200


@bp.post("/me/2fa/disable", responses={200: DisabledOut, **errors(401, 429)}, security=BEARER)
@api_call
def disable_totp(body: OtpIn):
    """Turn two-factor sign-in off; needs a current code (or a recovery code)."""
    user = caller_in_session()
    if not user.totp_enabled:
        return DisabledOut(enabled=False), 200
    used = check_second_factor(user, body.otp)
    totp.disable_totp(request_session(), user)
    audit_caller(user, audit.TOTP_DISABLED, {"with": used})
    return DisabledOut(enabled=False), 200


@bp.post("/me/2fa/recovery-codes", responses={200: RecoveryCodesOut, **errors(401, 409, 429)}, security=BEARER)
@api_call(replay=False)
def replace_recovery_codes(body: OtpIn):
    """Ten new recovery codes (the old ones stop working); needs a current code."""
    user = caller_in_session()
    if not user.totp_enabled:
        raise InvalidRequest("Two-factor sign-in is off.", code="totp_not_enabled")
    check_second_factor(user, body.otp)
    codes = totp.replace_recovery_codes(request_session(), user, clock=runtime().clock)
    audit_caller(user, audit.RECOVERY_CODES_REPLACED)
    return RecoveryCodesOut(enabled=True, recovery_codes=codes), 200


@bp.post("/auth/step-up", responses={200: StepUpOut, **errors(401, 403, 429)}, security=BEARER)
@api_call
def step_up(body: OtpIn):
    """Prove the second factor again: for KNOWPAY_STEP_UP_SECONDS this token may do admin actions that
    move money or change roles."""
    rt = runtime()
    user = caller_in_session()
    if not user.totp_enabled:
        raise InvalidRequest("Two-factor sign-in is off; turn it on first.", code="totp_not_enabled")
    used = check_second_factor(user, body.otp)
    token = current_access_token()
    accounts.record_step_up(request_session(), token.id, clock=rt.clock)
    audit_caller(user, audit.STEP_UP, {"with": used, "token": token.id})
    return StepUpOut(second_factor_at=rt.clock.now(), valid_for_seconds=rt.settings.step_up_seconds), 200


@bp.get("/audit", responses={200: AuditPage, **errors(400, 401, 403)}, security=BEARER)
@api_call
def list_audit(query: AuditQuery):
    """Admins: the audit log, newest first; filter by actor, action or target."""
    current_user("admin")
    stmt = select(AuditEntry)
    if query.cursor:
        if not query.cursor.isdigit():
            raise InvalidRequest("This cursor is not valid.", code="invalid_cursor", param="cursor")
        stmt = stmt.where(AuditEntry.seq < int(query.cursor))
    for name in ("actor_id", "action", "target"):
        value = getattr(query, name)
        if value:
            stmt = stmt.where(getattr(AuditEntry, name) == value)
    rows = list(request_session().scalars(stmt.order_by(AuditEntry.seq.desc()).limit(query.limit + 1)))
    more = len(rows) > query.limit
    rows = rows[:query.limit]
    data = [AuditEntryOut.model_validate({**{f: getattr(r, f) for f in AuditEntryOut.model_fields if f != "details"},
                                          "details": json.loads(r.details)}).model_dump(mode="json")
            for r in rows]
    return {"data": data, "has_more": more, "next_cursor": str(rows[-1].seq) if more and rows else None}, 200


@bp.put("/users/<id>/roles", responses={200: UserOut, **errors(400, 401, 403, 404)}, security=BEARER)
@api_call
def set_user_roles(path: IdPath, body: RolesIn):
    """Admins: give a user exactly these roles. Needs a recent second factor (`KnowPay-OTP` or a step-up)."""
    rt = runtime()
    admin = current_user("admin")
    require_recent_second_factor(admin)
    session = request_session()
    user = accounts.get_user(session, path.id)
    added, removed = accounts.set_roles(session, user, list(body.roles))
    audit.record(session, admin.id, audit.ROLES_CHANGED, user.id,
                 {"added": added, "removed": removed, "roles": user.role_names}, rt.clock)
    return user_out(user), 200
