"""`api_call`: one request = one unit of work, with the Idempotency-Key rules of API.md.

The view returns `(body, status)`; the wrapper stores the idempotent response and commits in the
same transaction as the view's changes, so a replay can never disagree with what was done.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import jsonify, make_response, request
from pydantic import BaseModel

from knowpay.domain.errors import KnowPayError
from knowpay.idempotency import service as idem
from knowpay.web.auth import principal_id
from knowpay.web.errors import error_body, status_for
from knowpay.web.runtime import request_session, runtime

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _json(body: Any, status: int, *, replayed: bool = False):
    response = make_response(jsonify(body), status)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def to_body(result: Any) -> Any:
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    return result


def api_call(view: Callable | None = None, /, *, replay: bool = True) -> Callable:
    """Wrap a view as one unit of work. `replay=False` ignores Idempotency-Key for calls that are
    safe to repeat and whose answer must not be stored (a fresh bearer token)."""
    if view is None:
        return lambda inner: api_call(inner, replay=replay)

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any):
        key = request.headers.get("Idempotency-Key") if replay else None
        if request.method not in MUTATING or key is None:
            body, status = view(*args, **kwargs)
            session = request_session()
            if session.in_transaction() and request.method in MUTATING:
                session.commit()
            return _json(to_body(body), status)
        rt = runtime()
        claim = idem.claim(rt.db, principal=principal_id(), key=key,
                           print_=idem.fingerprint(request.method, request.path, request.get_data(),
                                                   secret=rt.settings.secret_key),
                           now=rt.clock.now())
        if isinstance(claim, idem.Replay):
            return _json(claim.body, claim.status, replayed=True)
        session = request_session()
        try:
            body, status = view(*args, **kwargs)
            body = to_body(body)
            idem.complete(session, claim, status=status, body=body)
            session.commit()
        except KnowPayError as error:
            session.rollback()
            status = status_for(error)
            if status >= 500:
                idem.release(rt.db, claim)
                raise
            # A refusal is an answer too: the same request with the same key gets it again.
            body = error_body(error.type, error.code, error.message, error.param)
            with rt.db.transaction() as tx:
                idem.complete(tx, claim, status=status, body=body)
            raise
        except BaseException:
            session.rollback()
            idem.release(rt.db, claim)
            raise
        return _json(body, status)

    return wrapper
