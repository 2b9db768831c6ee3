"""Accounts: register, sign in for a token and revoke it, who am I, change the password, export my
data, delete my account."""

from __future__ import annotations

from flask import after_this_request
from flask_openapi3 import APIBlueprint
from flask_security.confirmable import send_confirmation_instructions
from pydantic import BaseModel, EmailStr, Field

from knowpay.accounts import service as accounts
from knowpay.accounts import totp
from knowpay.accounts.models import User
from knowpay.domain.errors import AuthenticationFailed
from knowpay.fieldcrypt import FieldCipher
from knowpay.security import audit
from knowpay.security.personal_data import delete_account, export_personal_data
from knowpay.security.signin import SignInAttempt, record_failed_sign_in, sign_in_for_token
from knowpay.web.api.schemas import BEARER, Out, Strict, UtcDateTime, errors, tag
from knowpay.web.auth import client_address, current_access_token, current_user, reject_wrong_code
from knowpay.web.runtime import request_session, runtime
from knowpay.web.uow import api_call

bp = APIBlueprint("accounts", __name__, url_prefix="/api/v1", abp_tags=tag("accounts"))


class RegisterIn(Strict):
    email: EmailStr = Field(..., max_length=254)
    password: str = Field(..., min_length=1, max_length=256,
                          description="8+ characters, not a common or breached password")
    username: str = Field(..., min_length=2, max_length=40, pattern=r"^[\w.\-]+$")


class TokenIn(Strict):
    email: str = Field(..., max_length=254)
    password: str = Field(..., max_length=256)
    otp: str | None = Field(None, max_length=32,
                            description="with two-factor sign-in on: the app's code, or a recovery code")


class UserOut(Out):
    id: str
    email: str
    username: str | None
    roles: list[str] = Field(validation_alias="role_names")
    created_at: UtcDateTime


class TokenOut(Out):
    access_token: str
    token_type: str = "bearer"
    expires_at: UtcDateTime


class RevokedOut(BaseModel):
    revoked: int


class PasswordIn(Strict):
    current_password: str = Field(..., max_length=256)
    new_password: str = Field(..., min_length=1, max_length=256)
    otp: str | None = Field(None, max_length=32, description="needed when two-factor sign-in is on")


class DeleteMeIn(Strict):
    password: str = Field(..., max_length=256)
    otp: str | None = Field(None, max_length=32, description="needed when two-factor sign-in is on")


class DeletedOut(BaseModel):
    deleted: bool
    id: str


def user_out(user) -> UserOut:
    return UserOut.model_validate(user)


def caller_in_session() -> User:
    """The caller, loaded into this request's session (so changes to it are saved with the request)."""
    user = request_session().get(User, current_user().id)
    assert user is not None
    return user


def check_second_factor(user: User, otp: str | None) -> str:
    """Check the caller's TOTP or recovery code; a wrong one counts towards the lockout (401 invalid_otp)."""
    if not otp:
        raise AuthenticationFailed("Send the code from the authenticator app (or a recovery code) as `otp`.",
                                   code="otp_required", param="otp")
    rt = runtime()
    used = totp.check_second_factor(request_session(), user, otp, rt.clock,
                                    cipher=FieldCipher(rt.settings.encryption_keys))
    if used is None:
        reject_wrong_code(user)
    return used


def check_password(user: User, password: str, *, via: str) -> None:
    """Re-authenticate the caller; a wrong password counts towards the lockout (401 invalid_credentials)."""
    try:
        accounts.check_current_password(user, password)
    except AuthenticationFailed:
        email = user.email  # read before the rollback expires it
        request_session().rollback()
        record_failed_sign_in(runtime(), email=email, address=client_address(), reason="password", via=via)
        raise


def audit_caller(user: User, action: str, details: dict | None = None, target: str | None = None) -> None:
    audit.record(request_session(), user.id, action, target or user.id, details, runtime().clock)


@bp.post("/auth/register", responses={201: UserOut, **errors(400, 409, 429)})
@api_call
def register(body: RegisterIn):
    """Create a buyer account; a mail asks to confirm the address."""
    rt = runtime()
    session = request_session()
    user = accounts.register_user(session, email=str(body.email), password=body.password,
                                  username=body.username, clock=rt.clock)
    audit.record(session, user.id, audit.USER_REGISTERED, user.id, {"via": "api", "roles": user.role_names},
                 rt.clock)

    @after_this_request
    def _confirm(response):
        # After the commit, so the link never points at an account that was rolled back.
        if response.status_code == 201:
            send_confirmation_instructions(user)
        return response

    return user_out(user), 201


@bp.post("/auth/token", responses={200: TokenOut, **errors(400, 401, 429)})
@api_call(replay=False)  # a repeat just issues another token; a stored answer would keep one in clear
def token(body: TokenIn):
    """Exchange e-mail and password (and the second factor, when on) for a bearer token."""
    issued = sign_in_for_token(runtime(), SignInAttempt(email=body.email, password=body.password, otp=body.otp,
                                                        address=client_address()))
    return TokenOut(access_token=issued.token, expires_at=issued.expires_at), 200


@bp.get("/me", responses={200: UserOut, **errors(401)}, security=BEARER)
@api_call
def me():
    """The calling user."""
    return user_out(current_user()), 200


def _revoke_current():
    user = current_user()
    token = current_access_token()
    revoked = accounts.revoke_token_by_id(request_session(), token.id, clock=runtime().clock)
    audit_caller(user, audit.TOKEN_REVOKED, {"token": token.id}, target=token.id)
    return RevokedOut(revoked=int(revoked)), 200


@bp.post("/auth/revoke", responses={200: RevokedOut, **errors(401)}, security=BEARER)
@api_call
def revoke_token():
    """Revoke the bearer token this request is made with (sign out of the API)."""
    return _revoke_current()


@bp.delete("/auth/token", responses={200: RevokedOut, **errors(401)}, security=BEARER)
@api_call
def delete_token():
    """The same as POST /auth/revoke."""
    return _revoke_current()


@bp.delete("/me/tokens", responses={200: RevokedOut, **errors(401)}, security=BEARER)
@api_call
def revoke_all_tokens():
    """Revoke every bearer token of the caller, this one included (sign out everywhere)."""
    user = current_user()
    revoked = accounts.revoke_all_tokens(request_session(), user.id, clock=runtime().clock)
    audit_caller(user, audit.TOKENS_REVOKED, {"count": revoked})
    return RevokedOut(revoked=revoked), 200


@bp.post("/me/password", responses={200: RevokedOut, **errors(400, 401, 429)}, security=BEARER)
@api_call(replay=False)
def change_password(body: PasswordIn):
    """Change the password (the policy applies); every other bearer token is revoked."""
    rt = runtime()
    user = caller_in_session()
    check_password(user, body.current_password, via="change_password")
    if user.totp_enabled:
        check_second_factor(user, body.otp)
    revoked = accounts.change_password(request_session(), user, current=body.current_password,
                                       new=body.new_password, clock=rt.clock, keep_token_id=current_access_token().id)
    audit_caller(user, audit.PASSWORD_CHANGED, {"via": "api", "tokens_revoked": revoked})
    return RevokedOut(revoked=revoked), 200


@bp.get("/me/export", responses={200: {"description": "everything KnowPay holds about the caller, as JSON"},
                                 **errors(401)}, security=BEARER)
@api_call
def export_me():
    """The caller's personal data: account, orders, payments, refunds, entitlements, wallet, payouts."""
    rt = runtime()
    user = caller_in_session()
    return export_personal_data(request_session(), user, currency=rt.settings.currency, clock=rt.clock,
                                cipher=FieldCipher(rt.settings.encryption_keys)), 200


@bp.delete("/me", responses={200: DeletedOut, **errors(401, 429)}, security=BEARER)
@api_call(replay=False)
def delete_me(body: DeleteMeIn):
    """Delete the account: personal fields are anonymised, tokens revoked; orders, payments and the
    ledger are kept as the law requires. Needs the password, and the code when two-factor is on."""
    user = caller_in_session()
    check_password(user, body.password, via="delete_account")
    if user.totp_enabled:
        check_second_factor(user, body.otp)
    delete_account(request_session(), user, clock=runtime().clock)
    audit_caller(user, audit.USER_DELETED)
    return DeletedOut(deleted=True, id=user.id), 200
