"""Operations endpoints at the root: liveness and readiness."""

from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import text

from knowpay.web.errors import error_body
from knowpay.web.runtime import runtime

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    try:
        with runtime().db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:  # any failure to reach the database means not ready
        response = jsonify(error_body("internal", "database_unavailable", "The database cannot be reached."))
        response.status_code = 503
        return response
    return jsonify({"status": "ok", "database": "ok"})
