"""The one place that turns errors into HTTP: the API.md error JSON for every failure under the API."""

from __future__ import annotations

import logging

from flask import Flask, current_app, jsonify, make_response, render_template, request
from flask_limiter import RateLimitExceeded
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

from knowpay.domain.errors import (
    AuthenticationFailed,
    ChannelUnavailable,
    Conflict,
    InvalidRequest,
    KnowPayError,
    NotFound,
    PaymentDeclined,
    PermissionDenied,
    RateLimited,
    RiskBlocked,
)

log = logging.getLogger(__name__)

STATUS = [
    (InvalidRequest, 400),
    (AuthenticationFailed, 401),
    (PaymentDeclined, 402),
    (PermissionDenied, 403),
    (RiskBlocked, 403),
    (NotFound, 404),
    (Conflict, 409),
    (RateLimited, 429),
    (ChannelUnavailable, 503),
]
HTTP_TYPES = {400: "invalid_request", 401: "authentication", 403: "permission", 404: "not_found",
              405: "invalid_request", 409: "conflict", 413: "invalid_request", 415: "invalid_request",
              422: "invalid_request", 429: "rate_limited"}


def status_for(error: KnowPayError) -> int:
    if error.code in ("idempotency_key_reused",):
        return 422
    for cls, status in STATUS:
        if isinstance(error, cls):
            return status
    return 500


def error_body(type_: str, code: str, message: str, param: str | None = None) -> dict:
    body = {"type": type_, "code": code, "message": message}
    if param:
        body["param"] = param
    return {"error": body}


def knowpay_error_response(error: KnowPayError):
    status = status_for(error)
    if wants_json():
        response = jsonify(error_body(error.type, error.code, error.message, error.param))
    else:
        response = make_response(error.message, status, {"Content-Type": "text/plain; charset=utf-8"})
    response.status_code = status
    if isinstance(error, RateLimited):
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def rate_limit_response(error: RateLimitExceeded):
    """Flask-Limiter's refusal, in the API's error shape (a page in the site's layout on pages), with
    Retry-After."""
    from knowpay.security.ratelimit import retry_after

    wait = retry_after(current_app, error)
    if wants_json():
        return knowpay_error_response(RateLimited(f"Too many requests; retry in {wait} seconds.", retry_after=wait))
    page = render_template("site/error.html", status=429, retry_after=wait)
    return make_response(page, 429, {"Retry-After": str(wait)})


def _loc_to_param(loc: tuple) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


def validation_error_response(error: ValidationError):
    """Pydantic's errors as one API.md error naming the first bad field."""
    first = error.errors(include_url=False)[0]
    param = _loc_to_param(tuple(first["loc"]))
    kind = first["type"]
    if kind == "missing":
        message, code = f"`{param}` is required.", "parameter_missing"
    elif kind == "extra_forbidden":
        message, code = f"`{param}` is not a known field.", "unknown_parameter"
    elif kind in ("model_type", "model_attributes_type", "dict_type") and not param:
        message, code, param = "The body must be a JSON object.", "invalid_json", ""
    elif param.split(".")[-1].split("[")[0] in ("amount", "coins", "bonus_coins") and kind.startswith("int"):
        message, code = (f"`{param}` must be an integer number of minor units (e.g. 9900 for 99.00).",
                         "invalid_amount")
    else:
        message, code = (f"`{param}`: {first['msg'].rstrip('.')}." if param else first["msg"]), "invalid_parameter"
    response = jsonify(error_body("invalid_request", code, message, param or None))
    response.status_code = 400
    return response


def wants_json() -> bool:
    path = request.path
    return path.startswith(("/api/", "/notify/", "/healthz", "/readyz", "/metrics"))


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(KnowPayError, knowpay_error_response)
    app.register_error_handler(ValidationError, validation_error_response)
    app.register_error_handler(RateLimitExceeded, rate_limit_response)

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException):
        if not wants_json():
            return error
        status = error.code or 500
        code = {404: "resource_missing", 405: "method_not_allowed", 413: "body_too_large",
                415: "unsupported_media_type"}.get(status, (error.name or "error").lower().replace(" ", "_"))
        message = "The request body is larger than 1 MiB." if status == 413 else (error.description or error.name)
        response = jsonify(error_body(HTTP_TYPES.get(status, "internal"), code, message))
        response.status_code = status
        return response

    @app.errorhandler(OperationalError)
    def _db_down(error: OperationalError):
        log.error("database unavailable: %s", error.__class__.__name__)
        response = jsonify(error_body("internal", "database_unavailable",
                                      "The database is unavailable; retry shortly."))
        response.status_code = 503
        response.headers["Retry-After"] = "2"
        return response

    @app.errorhandler(DBAPIError)
    def _db_error(error: DBAPIError):
        if error.connection_invalidated:
            return _db_down(error)  # type: ignore[arg-type]
        log.exception("database error")
        response = jsonify(error_body("internal", "internal_error", "Something went wrong on our side."))
        response.status_code = 500
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        log.exception("unhandled error")
        if not wants_json():
            return "Internal Server Error", 500
        response = jsonify(error_body("internal", "internal_error", "Something went wrong on our side."))
        response.status_code = 500
        return response
