"""The Flask application factory: settings, database, security, API, pages and error handling."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import timedelta
from urllib.parse import urlsplit

from flask import request
from flask_openapi3 import Info, OpenAPI
from flask_security import Security
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.orm import scoped_session
from werkzeug.middleware.proxy_fix import ProxyFix

from knowpay import __version__
from knowpay.channels import Registry
from knowpay.config import Settings, load_settings
from knowpay.context import build_context
from knowpay.db import Database
from knowpay.domain.clock import Clock
from knowpay.domain.errors import InvalidRequest
from knowpay.jobs.tasks import enqueue_outbox_kick
from knowpay.web import notify, ops
from knowpay.web.api import register_api
from knowpay.web.api import security as security_api
from knowpay.web.api.schemas import SECURITY_SCHEMES, ErrorOut
from knowpay.web.auth import load_principal
from knowpay.web.errors import register_error_handlers, validation_error_response
from knowpay.web.runtime import close_request_session

MAX_BODY = 1024 * 1024
# Authenticated by bearer tokens, API keys or channel signatures, never by a cookie: no CSRF token.
CSRF_EXEMPT_PREFIXES = ("/api/", "/notify/")
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def flask_config(settings: Settings) -> dict:
    """Flask, Flask-Security and Flask-WTF settings derived from KnowPay's."""
    secure = settings.is_production or settings.base_url.startswith("https://")
    config = {
        "SECRET_KEY": settings.secret_key,
        "MAX_CONTENT_LENGTH": MAX_BODY,
        "JSON_SORT_KEYS": False,
        # Cookies: never readable by scripts, never sent cross-site on POSTs, only over TLS when served so.
        "SESSION_COOKIE_NAME": "__Host-knowpay" if secure else "knowpay_session",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": secure,
        "PERMANENT_SESSION_LIFETIME": timedelta(hours=12),
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_SECURE": secure,
        "REMEMBER_COOKIE_DURATION": timedelta(days=14),
        # Checked by _protect_forms for every form post outside the API (a 400 without a valid token).
        "WTF_CSRF_CHECK_DEFAULT": False,
        "SECURITY_CSRF_IGNORE_UNAUTH_ENDPOINTS": False,
        "SECURITY_PASSWORD_SALT": settings.secret_key,
        "SECURITY_PASSWORD_HASH": "argon2",  # Argon2id
        "SECURITY_URL_PREFIX": "/account",
        "SECURITY_REGISTERABLE": True,
        "SECURITY_SEND_REGISTER_EMAIL": True,
        "SECURITY_CONFIRMABLE": True,
        # E-mail confirmation is asked for and recorded (confirmed_at) but does not block signing in.
        "SECURITY_LOGIN_WITHOUT_CONFIRMATION": True,
        "SECURITY_RECOVERABLE": True,
        "SECURITY_CHANGEABLE": True,
        "SECURITY_RETURN_GENERIC_RESPONSES": True,
        "SECURITY_LOGOUT_METHODS": ["POST"],
        "SECURITY_EMAIL_SENDER": settings.mail_sender,
        "SECURITY_EMAIL_VALIDATOR_ARGS": {"check_deliverability": False},
        "SECURITY_FRESHNESS": timedelta(minutes=30),
        "SECURITY_FRESHNESS_GRACE_PERIOD": timedelta(minutes=5),
        # Until the web pages exist, a signed-in person lands on the password page.
        "SECURITY_POST_LOGIN_VIEW": "/account/change",
        "SECURITY_POST_LOGOUT_VIEW": "/account/login",
        "SECURITY_POST_REGISTER_VIEW": "/account/login",
        "SECURITY_POST_CONFIRM_VIEW": "/account/login",
        "SECURITY_POST_RESET_VIEW": "/account/login",
        "SECURITY_TWO_FACTOR": True,
        "SECURITY_TWO_FACTOR_ENABLED_METHODS": ["authenticator"],
        "SECURITY_TWO_FACTOR_RESCUE_EMAIL": False,
        "SECURITY_TWO_FACTOR_VALIDITY_COOKIE": {"httponly": True, "secure": secure, "samesite": "Strict"},
        "SECURITY_TOTP_ISSUER": "KnowPay",
        # Flask-Security wants these for its own key format; KnowPay's keys are FieldCipher values.
        "SECURITY_TOTP_SECRETS": {"1": hashlib.sha256(("totp:" + settings.secret_key).encode()).hexdigest()},
    }
    if settings.is_production:
        # Links in mails are built from the Host header: only our own names are accepted.
        config["TRUSTED_HOSTS"] = [urlsplit(settings.base_url).hostname, *settings.trusted_hosts]
    return config


def create_app(settings: Settings | None = None, *, db: Database | None = None,
               clock: Clock | None = None, config: dict | None = None,
               channels: Registry | None = None) -> OpenAPI:
    """Build the app; `config` overrides Flask settings (tests use a cheaper password hash)."""
    from knowpay.accounts.datastore import KnowPayUserDatastore
    from knowpay.accounts.mail import KnowPayMailUtil, mailer_from_settings
    from knowpay.accounts.models import Role, User
    from knowpay.accounts.passwords import KnowPayPasswordUtil
    from knowpay.accounts.totp import KnowPayTotp
    from knowpay.security.account_pages import install_account_pages
    from knowpay.security.headers import add_security_headers
    from knowpay.security.ratelimit import build_limiter
    from knowpay.security.redaction import install_log_redaction
    from knowpay.web.views import register_views

    settings = settings or load_settings()
    app = OpenAPI(
        __name__,
        info=Info(title="KnowPay API", version=__version__,
                  description="Payments for knowledge-paid platforms. Amounts are integer minor units."),
        security_schemes=SECURITY_SCHEMES,
        doc_prefix="/api/v1",
        doc_url="/openapi.json",
        doc_ui=False,
        validation_error_status=400,
        validation_error_model=ErrorOut,
        validation_error_callback=validation_error_response,
    )
    app.config.update(flask_config(settings))
    app.config.update(config or {})
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    if settings.proxy_hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops,  # type: ignore[method-assign]
                                x_proto=settings.proxy_hops, x_host=settings.proxy_hops)
    context = build_context(settings, db=db, clock=clock, channels=channels)
    database = context.db
    app.extensions["knowpay"] = context
    app.extensions["knowpay_mailer"] = mailer_from_settings(settings, context.clock)
    database.after_outbox_commit = lambda: enqueue_outbox_kick(settings)
    account_session = scoped_session(database._reader)
    Security(app, KnowPayUserDatastore(account_session, User, Role), mail_util_cls=KnowPayMailUtil,
             password_util_cls=KnowPayPasswordUtil, totp_cls=KnowPayTotp)
    csrf = CSRFProtect(app)
    register_error_handlers(app)
    app.before_request(_guard_api_request)
    app.before_request(lambda: _protect_forms(csrf))
    app.after_request(lambda response: add_security_headers(response, production=settings.is_production))
    app.teardown_appcontext(close_request_session)
    app.teardown_appcontext(lambda _exc: account_session.remove())
    register_api(app)
    app.register_api(security_api.bp)
    app.register_blueprint(ops.bp)
    # Served by us: flask-openapi3 registers its document route only together with its UI pages,
    # which load scripts from CDNs.
    app.add_url_rule("/api/v1/openapi.json", endpoint="openapi_document", view_func=lambda: app.api_doc)
    app.register_blueprint(notify.bp)
    register_views(app)
    install_account_pages(app)
    build_limiter(app, settings)  # last: it wraps views registered above
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction(settings)
    return app


def _protect_forms(csrf: CSRFProtect) -> None:
    """Every form post outside the token-authenticated API needs the CSRF token (400 without)."""
    if request.method in MUTATING and not request.path.startswith(CSRF_EXEMPT_PREFIXES):
        csrf.protect()


def _guard_api_request() -> None:
    """Refuse malformed JSON with the API's error shape, then find out who is calling."""
    if not request.path.startswith("/api/"):
        return
    has_body = request.content_length or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if request.method in MUTATING and has_body:
        if not request.is_json:
            raise InvalidRequest("Send the body as application/json.", code="unsupported_media_type")
        try:
            json.loads(request.get_data(cache=True) or b"null")
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise InvalidRequest("The body is not valid JSON.", code="invalid_json") from None
    load_principal()
