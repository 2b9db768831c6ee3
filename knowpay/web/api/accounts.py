"""Accounts: register, token, me."""

from __future__ import annotations

from flask_openapi3 import APIBlueprint
from pydantic import EmailStr, Field

from knowpay.accounts import service as accounts
from knowpay.web.api.schemas import BEARER, Out, Strict, UtcDateTime, errors, tag
from knowpay.web.auth import current_user
from knowpay.web.runtime import request_session, runtime
from knowpay.web.uow import api_call

bp = APIBlueprint("accounts", __name__, url_prefix="/api/v1", abp_tags=tag("accounts"))


class RegisterIn(Strict):
    email: EmailStr = Field(..., max_length=254)
    password: str = Field(..., min_length=1, max_length=256)
    username: str = Field(..., min_length=2, max_length=40, pattern=r"^[\w.\-]+$")


class TokenIn(Strict):
    email: str = Field(..., max_length=254)
    password: str = Field(..., max_length=256)
    otp: str | None = Field(None, max_length=16)


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


def user_out(user) -> UserOut:
    return UserOut.model_validate(user)


@bp.post("/auth/register", responses={201: UserOut, **errors(400, 409)})
@api_call
def register(body: RegisterIn):
    """Create a buyer account."""
    rt = runtime()
    user = accounts.register_user(request_session(), email=str(body.email), password=body.password,
                                  username=body.username, clock=rt.clock)
    return user_out(user), 201


@bp.post("/auth/token", responses={200: TokenOut, **errors(400, 401, 429)})
@api_call(replay=False)  # a repeat just issues another token; a stored answer would keep one in clear
def token(body: TokenIn):
    """Exchange e-mail and password for a bearer token."""
    rt = runtime()
    session = request_session()
    user = accounts.authenticate(session, email=body.email, password=body.password)
    issued = accounts.issue_token(session, user, clock=rt.clock)
    return TokenOut(access_token=issued.token, expires_at=issued.expires_at), 200


@bp.get("/me", responses={200: UserOut, **errors(401)}, security=BEARER)
@api_call
def me():
    """The calling user."""
    return user_out(current_user()), 200

