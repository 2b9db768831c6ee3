"""What a running KnowPay holds: settings, the database and the clock, built once in create_app."""

from __future__ import annotations

from flask import current_app, g
from sqlalchemy.orm import Session

from knowpay.context import Context


def runtime() -> Context:
    return current_app.extensions["knowpay"]


def request_session() -> Session:
    """The session of the current request: a write session for mutating methods."""
    from flask import request

    if "session" not in g:
        g.session = runtime().db.session(write=request.method not in ("GET", "HEAD", "OPTIONS"))
    return g.session


def close_request_session(_exc: BaseException | None = None) -> None:
    session = g.pop("session", None)
    if session is not None:
        session.rollback()
        session.close()
