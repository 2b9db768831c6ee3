"""Who is calling: a user's bearer token or a platform API key (`sk_...`)."""

from __future__ import annotations

from datetime import timedelta

from flask import g, request

from knowpay.accounts import service as accounts
from knowpay.accounts.models import ApiKey, User
from knowpay.domain.errors import AuthenticationFailed, PermissionDenied
from knowpay.web.runtime import runtime

API_KEY_TOUCH_EVERY = timedelta(minutes=1)


def load_principal() -> None:
    """Resolve the Authorization header into g.user / g.api_key (both None when absent)."""
    g.user, g.api_key = None, None
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
            user = accounts.user_for_token(session, credential, clock=rt.clock)
            if user is not None:
                _ = user.roles  # load before the session closes
    if credential.startswith("sk_"):
        if key is None:
            raise AuthenticationFailed("This API key is not valid.", code="invalid_api_key")
        g.api_key = key
        _touch(key)
        return
    if user is None:
        raise AuthenticationFailed("This token is not valid or has expired.", code="invalid_token")
    g.user = user


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
