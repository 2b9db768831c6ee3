"""Flask-Security's account pages under /account get the API's protections: the same lockout on
sign-in and on the two-factor code page, and audit entries for sign-ins, registrations and
password changes and resets (which also revoke the user's API tokens).

Two-factor keys are set up through the API only for now, so Flask-Security's own set-up page is off.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Flask, abort, current_app, request, session
from flask_login import current_user
from flask_security.signals import password_changed, password_reset, user_authenticated, user_registered
from sqlalchemy import select
from sqlalchemy.orm import object_session

from knowpay.accounts import service as accounts
from knowpay.accounts.models import User
from knowpay.context import Context
from knowpay.security import audit, lockout
from knowpay.security.signin import record_failed_sign_in

SIGN_IN_ENDPOINTS = {"security.login": "password", "security.two_factor_token_validation": "otp"}
DISABLED_ENDPOINTS = frozenset({"security.two_factor_setup", "security.two_factor_setup_validate"})


def install_account_pages(app: Flask) -> None:
    """Wrap the sign-in views with the lockout and connect the audit to Flask-Security's signals."""
    for endpoint, reason in SIGN_IN_ENDPOINTS.items():
        view = app.view_functions.get(endpoint)
        if view is not None:
            app.view_functions[endpoint] = _behind_lockout(view, reason)
    app.before_request(_refuse_disabled_pages)
    # Module-level receivers connect once however many apps are built; each finds its app as `sender`.
    user_authenticated.connect(_signed_in)
    user_registered.connect(_registered)
    password_changed.connect(_password_changed)
    password_reset.connect(_password_reset)


def _ctx(app: Any) -> Context | None:
    return app.extensions.get("knowpay") if isinstance(app, Flask) else None


def _refuse_disabled_pages() -> None:
    if request.endpoint in DISABLED_ENDPOINTS:
        abort(404)


def _attempted_email() -> str | None:
    """Whose sign-in this is: the e-mail typed on the sign-in page, or the user waiting for a code."""
    if request.endpoint == "security.login":
        payload = request.get_json(silent=True) if request.is_json else None
        email = payload.get("email") if isinstance(payload, dict) else request.form.get("email")
        return email.strip().lower() if isinstance(email, str) and email.strip() else None
    uniquifier = session.get("tf_user_id")
    if not uniquifier:
        return None
    ctx = current_app.extensions["knowpay"]
    with ctx.db.transaction(write=False) as s:
        return s.scalar(select(User.email).where(User.fs_uniquifier == uniquifier))


def _behind_lockout(view: Callable, reason: str) -> Callable:
    @wraps(view)
    def guarded(*args: Any, **kwargs: Any):
        if request.method != "POST":
            return view(*args, **kwargs)
        ctx = current_app.extensions["knowpay"]
        email = _attempted_email() or ""
        keys = lockout.sign_in_keys(ctx.settings.lockout, email=email, address=request.remote_addr)
        lockout.ensure_not_locked(ctx.db, keys, clock=ctx.clock)
        response = view(*args, **kwargs)
        password_accepted = reason == "password" and session.get("tf_state") == "ready"
        if not current_user.is_authenticated and not password_accepted:
            record_failed_sign_in(ctx, email=email, address=request.remote_addr, reason=reason, via="form")
        return response

    return guarded


def _signed_in(sender: Any, user: User, **_: Any) -> None:
    ctx = _ctx(sender)
    session_ = object_session(user)
    if ctx is None or session_ is None:
        return
    lockout.clear_account(session_, user.email)
    audit.record(session_, user.id, audit.LOGIN, user.id,
                 {"via": "form", "second_factor": "totp" if user.totp_enabled else None,
                  "ip": request.remote_addr if request else None}, ctx.clock)


def _registered(sender: Any, user: User, **_: Any) -> None:
    ctx = _ctx(sender)
    session_ = object_session(user)
    if ctx is not None and session_ is not None:
        session_.flush()
        audit.record(session_, user.id, audit.USER_REGISTERED, user.id, {"via": "form", "roles": user.role_names},
                     ctx.clock)


def _revoke_tokens_and_audit(sender: Any, user: User, action: str) -> None:
    ctx = _ctx(sender)
    session_ = object_session(user)
    if ctx is None or session_ is None:
        return
    revoked = accounts.revoke_all_tokens(session_, user.id, clock=ctx.clock)
    audit.record(session_, user.id, action, user.id, {"via": "form", "tokens_revoked": revoked}, ctx.clock)


def _password_changed(sender: Any, user: User, **_: Any) -> None:
    _revoke_tokens_and_audit(sender, user, audit.PASSWORD_CHANGED)


def _password_reset(sender: Any, user: User, **_: Any) -> None:
    _revoke_tokens_and_audit(sender, user, audit.PASSWORD_RESET)
