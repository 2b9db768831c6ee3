"""What every page view shares: who is signed in, role checks, error pages, safe redirects, amounts
typed into forms, and the recent second factor that admin actions moving money ask for."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from flask import Blueprint, Response, abort, flash, render_template, request, session
from flask_babel import gettext, lazy_gettext
from flask_security import auth_required, current_user
from sqlalchemy import Select
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException

from knowpay.accounts import totp
from knowpay.accounts.models import User
from knowpay.domain.errors import KnowPayError, PermissionDenied
from knowpay.domain.money import parse_major
from knowpay.security import audit
from knowpay.web.errors import status_for
from knowpay.web.runtime import runtime

# When this browser session last proved a second factor on a page (unix seconds).
SECOND_FACTOR_AT = "kp_second_factor_at"
PAGE_SIZE = 20

# The services' refusals, in the reader's language (their own messages are English, for the API).
ERROR_MESSAGES = {
    "coupon_invalid": lazy_gettext("This coupon does not exist or is no longer valid."),
    "coupon_exhausted": lazy_gettext("This coupon has been used up."),
    "product_unavailable": lazy_gettext("This product is not for sale at the moment."),
    "order_not_pending": lazy_gettext("This order can no longer be paid."),
    "insufficient_balance": lazy_gettext("Your wallet does not hold enough coins for this order."),
    "channel_unavailable": lazy_gettext("This payment method cannot be reached right now; try another one or "
                                        "try again in a moment."),
    "invalid_channel": lazy_gettext("This payment method cannot pay this order; choose another one."),
    "risk_blocked": lazy_gettext("This payment cannot be accepted. Contact support if you think this is a "
                                 "mistake."),
    "refund_window_closed": lazy_gettext("The refund window of this purchase has closed; support can help."),
    "refund_exceeds_payment": lazy_gettext("That is more than is left to refund."),
    "payment_not_refundable": lazy_gettext("This payment cannot be refunded."),
    "invalid_amount": lazy_gettext("Enter an amount such as 99.00."),
    "payout_exceeds_available": lazy_gettext("That is more than your available earnings."),
    "payout_account_missing": lazy_gettext("Add a payout bank account first."),
    "invalid_payout_status": lazy_gettext("This payout has already been decided."),
    "invalid_product_status": lazy_gettext("The product cannot change to that status."),
    "invalid_otp": lazy_gettext("This code is not valid or was already used."),
    "invalid_credentials": lazy_gettext("The password is wrong."),
    "two_factor_not_enabled": lazy_gettext("Turn on two-factor sign-in first (My account → Security)."),
    "second_factor_required": lazy_gettext("Enter the code from your authenticator app to confirm."),
    "rate_limited": lazy_gettext("Too many attempts; wait a minute and try again."),
    "resource_missing": lazy_gettext("We could not find that."),
    "role_required": lazy_gettext("Your role may not do this."),
    "parameter_missing": lazy_gettext("Fill in every field."),
    "invalid_account_number": lazy_gettext("Enter the account number: 4 to 40 letters, digits, spaces or dashes."),
    "invalid_role": lazy_gettext("Choose at least one role."),
    "invalid_url": lazy_gettext("Enter an absolute http:// or https:// URL."),
    "invalid_events": lazy_gettext("Choose at least one event type."),
}


def message_for(error: KnowPayError) -> str:
    known = ERROR_MESSAGES.get(error.code)
    return str(known) if known is not None else error.message


def flash_error(error: KnowPayError) -> None:
    flash(message_for(error), "error")


def flash_done(message: str) -> None:
    flash(message, "success")


def flash_warning(message: str) -> None:
    flash(message, "error")


def page_user() -> User:
    """The signed-in user (call inside a view protected by `signed_in` or `roles_required`)."""
    return current_user._get_current_object()  # type: ignore[attr-defined]


def signed_in(view: Callable) -> Callable:
    """Only for a signed-in person; anyone else goes to the sign-in page and comes back after."""
    return auth_required("session")(view)


def roles_required(*roles: str) -> Callable[[Callable], Callable]:
    """Signed in and holding one of `roles`; otherwise a 403 page."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any):
            if not current_user.has_any_role(*roles):
                abort(403)
            return view(*args, **kwargs)

        return signed_in(guarded)

    return decorate


def safe_next(target: str | None, default: str = "/") -> str:
    """A path on this site to go back to; anything else (another host, `//x`, `\\x`) is the default."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    if any(ord(ch) < 32 for ch in target):
        return default
    return target


def major_to_minor(text: str | None, currency: str) -> int:
    """An amount typed as "99" or "99.00" → 9900 minor units (InvalidRequest when it is not one)."""
    return parse_major((text or "").strip().replace(",", "").replace("，", ""), currency)


def form_int(name: str, default: int | None = None) -> int | None:
    raw = (request.form.get(name) or "").strip()
    if not raw:
        return default
    return int(raw) if raw.isascii() and raw.isdigit() else None


def request_page() -> int:
    raw = request.args.get("page", "1")
    return max(int(raw), 1) if raw.isascii() and raw.isdigit() and len(raw) < 7 else 1


@dataclass(frozen=True)
class Paged:
    """One page of a list: its rows, its number and whether another follows."""

    rows: list
    page: int
    has_more: bool


def paged(session: Session, stmt: Select, *, size: int = PAGE_SIZE) -> Paged:
    """Rows of `stmt` (already ordered) for `?page=`: objects, or tuples when it selects several."""
    page = request_page()
    window = stmt.offset((page - 1) * size).limit(size + 1)
    rows = list(session.execute(window).all() if len(stmt.column_descriptions) > 1 else session.scalars(window))
    return Paged(rows[:size], page, len(rows) > size)


def confirm_second_factor(user: User, otp: str | None, *, via: str) -> None:
    """Admin actions that move money or change roles need a second factor proved within
    KNOWPAY_STEP_UP_SECONDS on this browser session; `otp` (the form's code) proves one now.

    Raises PermissionDenied (`two_factor_not_enabled`, `second_factor_required`) or, for a wrong code
    that also counts towards the lockout, AuthenticationFailed (`invalid_otp`).
    """
    from knowpay.domain.errors import AuthenticationFailed
    from knowpay.security.signin import record_failed_second_factor

    rt = runtime()
    if not user.totp_enabled:
        raise PermissionDenied("Turn on two-factor sign-in first.", code="two_factor_not_enabled")
    now = rt.clock.now().timestamp()
    proved_at = session.get(SECOND_FACTOR_AT)
    if not otp and isinstance(proved_at, (int, float)) and now - proved_at <= rt.settings.step_up_seconds:
        return
    if not otp:
        raise PermissionDenied("A recent second factor is needed.", code="second_factor_required")
    with rt.db.transaction() as tx:
        fresh = tx.get(User, user.id)
        used = totp.check_second_factor(tx, fresh, otp, rt.clock)
        if used is not None:
            audit.record(tx, user.id, audit.STEP_UP, user.id, {"with": used, "via": via}, rt.clock)
    if used is None:
        record_failed_second_factor(rt, user_id=user.id, email=user.email, address=request.remote_addr, via=via)
        raise AuthenticationFailed("This code is not valid or was already used.", code="invalid_otp", param="otp")
    session[SECOND_FACTOR_AT] = now


def second_factor_fresh() -> bool:
    """Whether this browser session proved a second factor recently (forms then skip the code field)."""
    rt = runtime()
    proved_at = session.get(SECOND_FACTOR_AT)
    return isinstance(proved_at, (int, float)) and rt.clock.now().timestamp() - proved_at <= rt.settings.step_up_seconds


def no_store(response: Response) -> Response:
    """Pages with personal data, codes or keys are never kept by the browser or a proxy."""
    response.headers["Cache-Control"] = "no-store"
    return response


def install_error_pages(bp: Blueprint) -> None:
    """A refusal inside a page is a page in the site's layout, with the right status."""

    @bp.errorhandler(KnowPayError)
    def _refused(error: KnowPayError):
        status = status_for(error)
        return render_template("site/error.html", status=status, message=message_for(error)), status

    @bp.errorhandler(HTTPException)
    def _http(error: HTTPException):
        status = error.code or 500
        messages = {403: gettext("You may not open this page."), 404: gettext("We could not find that page."),
                    405: gettext("This page cannot be used like that."),
                    400: gettext("The form was incomplete or has expired; go back, reload and try again.")}
        return render_template("site/error.html", status=status,
                               message=messages.get(status, error.description or error.name)), status

