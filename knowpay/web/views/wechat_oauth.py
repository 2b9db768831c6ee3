"""Inside WeChat's browser, learn the signed-in buyer's openid for our official account before checkout, so
WeChat Pay opens on the page itself (JSAPI). The state sent to WeChat is random, kept in the signed session
cookie and taken once (against CSRF); whatever fails leaves the buyer paying by QR code, as before."""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import MutableMapping
from dataclasses import dataclass

from flask import Blueprint, Response, current_app, redirect, request, session, url_for
from flask_babel import gettext

from knowpay.accounts.models import User
from knowpay.accounts.wechat_identity import openid_for, remember_openid
from knowpay.accounts.wechat_oauth import (
    AuthorisationFailed,
    Fetch,
    OAuthConfig,
    exchange_code,
    requests_fetch,
)
from knowpay.fieldcrypt import FieldCipher
from knowpay.web.runtime import runtime
from knowpay.web.views.mobile import in_wechat
from knowpay.web.views.pages import flash_warning, install_error_pages, page_user, safe_next, signed_in

log = logging.getLogger(__name__)

bp = Blueprint("wechat_oauth", __name__)
install_error_pages(bp)

PENDING_KEY = "wechat_oauth"  # {"state", "next", "at"} of the authorisation under way
FAILED_KEY = "wechat_oauth_failed"  # set once WeChat gave no openid: no second silent round trip
STATE_TTL_SECONDS = 600  # WeChat's code lives five minutes; a slower round trip is not ours
EXTENSION = "knowpay_wechat_oauth"


@dataclass(frozen=True)
class Authorisation:
    """What the app was built with: the OAuth settings and how to call WeChat's API."""

    config: OAuthConfig
    fetch: Fetch


@bp.record_once
def _configure(state) -> None:
    # Checked when the app is built, so a bad KNOWPAY_WECHAT_OAUTH_BASE stops start-up, not a checkout.
    app = state.app
    config = OAuthConfig.from_settings(app.extensions["knowpay"].settings)
    app.extensions[EXTENSION] = (None if config is None
                                 else Authorisation(config, requests_fetch(config.api_base)))


def _authorisation() -> Authorisation | None:
    return current_app.extensions.get(EXTENSION)


# -- the state: random, in this browser's session, taken once ----------------------------------------------

def begin(store: MutableMapping, next_path: str, *, now: float) -> str:
    """A fresh state for one authorisation, kept in `store` (the session) with the page to come back to."""
    state = secrets.token_hex(16)  # WeChat takes letters and digits only
    store[PENDING_KEY] = {"state": state, "next": next_path, "at": int(now)}
    return state


def take(store: MutableMapping, state: str | None, *, now: float) -> str | None:
    """The page to come back to when `state` is the one this session sent, within STATE_TTL_SECONDS; else
    None. A matching state is removed, so the same answer is never accepted twice; another state leaves
    the pending one alone (it may be someone else's link, not WeChat's answer to us)."""
    pending = store.get(PENDING_KEY)
    if not isinstance(pending, dict) or not state:
        return None
    expected = str(pending.get("state") or "")
    if not expected or not hmac.compare_digest(expected.encode(), state.encode("utf-8", "replace")):
        return None
    store.pop(PENDING_KEY, None)
    at = pending.get("at")
    if not isinstance(at, int) or not 0 <= now - at <= STATE_TTL_SECONDS:
        return None
    return safe_next(pending.get("next"), "/")


# -- used by the checkout pages ------------------------------------------------------------------------------

def _cipher() -> FieldCipher:
    return FieldCipher(runtime().settings.encryption_keys)


def _app_id() -> str:
    return (runtime().settings.channel.get("wechat_app_id") or "").strip()


def openid_here(channel: str) -> str | None:
    """The signed-in buyer's openid when `channel` is WeChat Pay and this is WeChat's browser; else None."""
    if channel != "wechat" or not in_wechat(request.headers.get("User-Agent")) or not _app_id():
        return None
    # A read of its own: on a POST the request's session writes, and would hold SQLite's lock while the
    # payment is created in its own transaction.
    with runtime().db.transaction(write=False) as tx:
        return openid_for(tx, _cipher(), user_id=page_user().id, app_id=_app_id())


def authorisation_redirect() -> Response | None:
    """Inside WeChat, with WeChat Pay on and its openid not yet known: off to WeChat's silent authorisation,
    which comes back to this same page. None when nothing is to be asked (or asking failed before)."""
    wanted = _authorisation()
    if (wanted is None or not in_wechat(request.headers.get("User-Agent"))
            or "wechat" not in runtime().channels or session.get(FAILED_KEY)
            or openid_here("wechat") is not None):
        return None
    state = begin(session, request.full_path if request.query_string else request.path, now=time.time())
    redirect_uri = runtime().settings.base_url + url_for("wechat_oauth.authorised")
    return redirect(wanted.config.authorize_url(redirect_uri=redirect_uri, state=state), code=302)


# -- WeChat's answer -----------------------------------------------------------------------------------------

@bp.get("/checkout/wechat/authorised")
@signed_in
def authorised():
    """WeChat sends the buyer back here with `code` and our `state`: exchange the code, keep the openid."""
    back = take(session, request.args.get("state"), now=time.time())
    if back is None:
        # Not the answer to our request (or too late): store nothing, and do not loop back to WeChat.
        flash_warning(gettext("WeChat did not confirm who you are. You can still pay with a QR code."))
        return redirect(url_for("checkout.catalog"), code=303)
    wanted = _authorisation()
    if wanted is None:
        return redirect(back, code=303)
    try:
        openid = exchange_code(wanted.config, request.args.get("code", ""), wanted.fetch)
    except AuthorisationFailed as exc:
        log.warning("WeChat web authorisation gave no openid: %s", exc.message)
        session[FAILED_KEY] = True
        return redirect(back, code=303)
    rt = runtime()
    user: User = page_user()
    with rt.db.transaction() as tx:
        remember_openid(tx, _cipher(), user_id=user.id, app_id=wanted.config.app_id, openid=openid,
                        clock=rt.clock)
    session.pop(FAILED_KEY, None)
    return redirect(back, code=303)
