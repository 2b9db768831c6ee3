"""Who is calling: a user's bearer token or a platform API key (`sk_...`); and whether they proved a
second factor recently enough for an admin action that moves money or changes roles."""

from __future__ import annotations

from datetime import timedelta
from typing import NoReturn

from flask import g, request

from knowpay.accounts import service as accounts
from knowpay.accounts import totp
from knowpay.accounts.models import AccessToken, ApiKey, User
from knowpay.domain.errors import AuthenticationFailed, PermissionDenied
from knowpay.web.runtime import request_session, runtime

# A second factor sent with the request itself, for an action that needs a recent one.
OTP_HEADER = "KnowPay-OTP"

API_KEY_TOUCH_EVERY = timedelta(minutes=1)


def load_principal() -> None:
    """Resolve the Authorization header into g.user / g.api_key (both None when absent); a user's
    token row is g.access_token."""
    g.user, g.api_key, g.access_token = None, None, None
    header = request.headers.get("Authorization", "")
    if not header:
        return
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise AuthenticationFailed("Use `Authorization: Bearer <token>`.", code="invalid_authorization")
    rt = runtime()
    # A short read of its own, so that the request's write transaction starts only when needed.
    with rt.db.transaction(write=False) as session:
        if credential.startswith("sk_"):
            key = accounts.api_key_for(session, credential, clock=rt.clock)
            user = None
        else:
            key = None
            token, user = accounts.principal_for_token(session, credential, clock=rt.clock) or (None, None)
    if credential.startswith("sk_"):
        if key is None:
            raise AuthenticationFailed("This API key is not valid.", code="invalid_api_key")
        g.api_key = key
        _touch(key)
        return
    if user is None:
        raise AuthenticationFailed("This token is not valid or has expired.", code="invalid_token")
    g.user, g.access_token = user, token


def _touch(key: ApiKey) -> None:
    rt = runtime()
    now = rt.clock.now()
    if key.last_used_at is None or key.last_used_at < now - API_KEY_TOUCH_EVERY:
        with rt.db.transaction() as session:
            accounts.touch_api_key(session, key.id, clock=rt.clock)


def current_user(*roles: str) -> User:
    """The calling user; 401 if none, 403 if they hold none of `roles` (when given)."""
    user: User | None = g.get("user")
    if user is None:
        if g.get("api_key") is not None:
            raise PermissionDenied("This call needs a user token, not an API key.", code="user_required")
        raise AuthenticationFailed("Authentication required.", code="authentication_required")
    if roles and not user.has_any_role(*roles):
        raise PermissionDenied("Your role may not do this.", code="role_required")
    return user


def current_access_token() -> AccessToken:
    """The bearer token of this request (a user's; not an API key)."""
    current_user()
    return g.access_token


def client_address() -> str | None:
    return request.remote_addr


def require_recent_second_factor(user: User) -> None:
    """Call first in an admin handler that moves money or changes roles (payout approve, reject and
    mark-paid, refunds by staff, role changes).

    Passes when this token proved a second factor within `KNOWPAY_STEP_UP_SECONDS` (signed in with
    one, or `POST /api/v1/auth/step-up`), or when the request carries a valid code in the
    `KnowPay-OTP` header (which then counts as a step-up for this token). Otherwise 403
    `second_factor_required`, or 403 `two_factor_not_enabled` for a user without two-factor sign-in;
    a wrong code is 401 `invalid_otp` and counts towards the lockout.
    """
    rt = runtime()
    if not user.totp_enabled:
        raise PermissionDenied("Turn on two-factor sign-in (POST /api/v1/me/2fa/setup) to do this.",
                               code="two_factor_not_enabled")
    token: AccessToken | None = g.get("access_token")
    now = rt.clock.now()
    fresh_since = now - timedelta(seconds=rt.settings.step_up_seconds)
    if token is not None and token.second_factor_at is not None and token.second_factor_at >= fresh_since:
        return
    otp = request.headers.get(OTP_HEADER)
    if not otp:
        raise PermissionDenied(f"This action needs a recent second factor: send the code in the `{OTP_HEADER}` "
                               "header, or step up with POST /api/v1/auth/step-up.", code="second_factor_required")
    session = request_session()
    if totp.verify_second_factor(session, user, otp, rt.clock):
        if token is not None:
            accounts.record_step_up(session, token.id, clock=rt.clock)
            token.second_factor_at = now
        return
    reject_wrong_code(user)


def reject_wrong_code(user: User) -> NoReturn:
    """Count a wrong second-factor code towards the lockout (after dropping this request's changes), then 401."""
    from knowpay.security.signin import record_failed_second_factor

    user_id, email = user.id, user.email  # read before the rollback expires them
    request_session().rollback()
    record_failed_second_factor(runtime(), user_id=user_id, email=email, address=client_address(),
                                via=request.endpoint or "api")
    raise AuthenticationFailed("This code is not valid or was already used.", code="invalid_otp", param="otp")


def optional_user() -> User | None:
    return g.get("user")


def current_api_key() -> ApiKey:
    key: ApiKey | None = g.get("api_key")
    if key is None:
        if g.get("user") is not None:
            raise PermissionDenied("This call needs an API key.", code="api_key_required")
        raise AuthenticationFailed("Authentication required.", code="authentication_required")
    return key


def principal_id() -> str:
    if g.get("user") is not None:
        return g.user.id
    if g.get("api_key") is not None:
        return g.api_key.id
    return "anonymous:" + (request.remote_addr or "")
