"""The Flask application factory: settings, database, security, API, pages and error handling."""

from __future__ import annotations

import json
import logging

from flask import request
from flask_openapi3 import Info, OpenAPI
from flask_security import Security, SQLAlchemySessionUserDatastore
from sqlalchemy.orm import scoped_session

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
from knowpay.web.api.schemas import SECURITY_SCHEMES, ErrorOut
from knowpay.web.auth import load_principal
from knowpay.web.errors import register_error_handlers, validation_error_response
from knowpay.web.runtime import close_request_session

MAX_BODY = 1024 * 1024


def create_app(settings: Settings | None = None, *, db: Database | None = None,
               clock: Clock | None = None, config: dict | None = None,
               channels: Registry | None = None) -> OpenAPI:
    """Build the app; `config` overrides Flask settings (tests use a cheaper password hash)."""
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
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=MAX_BODY,
        JSON_SORT_KEYS=False,
        SECURITY_PASSWORD_SALT=settings.secret_key,
        SECURITY_PASSWORD_HASH="argon2",
        SECURITY_REGISTERABLE=False,
        SECURITY_SEND_REGISTER_EMAIL=False,
        SECURITY_URL_PREFIX="/account",
        SECURITY_CSRF_IGNORE_UNAUTH_ENDPOINTS=True,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.is_production,
    )
    app.config.update(config or {})
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    context = build_context(settings, db=db, clock=clock, channels=channels)
    database = context.db
    app.extensions["knowpay"] = context
    database.after_outbox_commit = lambda: enqueue_outbox_kick(settings)
    datastore = SQLAlchemySessionUserDatastore(
        scoped_session(database._reader), _user_model(), _role_model())
    Security(app, datastore, register_blueprint=False)
    register_error_handlers(app)
    app.before_request(_guard_api_request)
    app.teardown_appcontext(close_request_session)
    register_api(app)
    app.register_blueprint(ops.bp)
    # Served by us: flask-openapi3 registers its document route only together with its UI pages,
    # which load scripts from CDNs.
    app.add_url_rule("/api/v1/openapi.json", endpoint="openapi_document", view_func=lambda: app.api_doc)
    app.register_blueprint(notify.bp)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return app


def _user_model():
    from knowpay.accounts.models import User

    return User


def _role_model():
    from knowpay.accounts.models import Role

    return Role


def _guard_api_request() -> None:
    """Refuse malformed JSON with the API's error shape, then find out who is calling."""
    if not request.path.startswith("/api/"):
        return
    has_body = request.content_length or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if request.method in ("POST", "PUT", "PATCH", "DELETE") and has_body:
        if not request.is_json:
            raise InvalidRequest("Send the body as application/json.", code="unsupported_media_type")
        try:
            json.loads(request.get_data(cache=True) or b"null")
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise InvalidRequest("The body is not valid JSON.", code="invalid_json") from None
    load_principal()
