"""Claim a key before doing the work; record the response in the same transaction as the work.

Claiming commits at once (so a concurrent request with the same key sees it and gets 409),
while the finished response is written by the caller's own unit of work: the business change
and the stored response commit together or not at all.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from knowpay.db import Database
from knowpay.domain.errors import Conflict, InvalidRequest
from knowpay.idempotency.models import IdempotencyKey

KEEP_FOR = timedelta(hours=24)
# A claim that was never completed (its process died) may be taken over after this.
STALE_CLAIM = timedelta(minutes=2)


@dataclass(frozen=True)
class Replay:
    status: int
    body: dict


def fingerprint(method: str, path: str, body: bytes, *, secret: str) -> str:
    """Keyed hash of what makes two requests "the same": method, path and the JSON body (canonical).

    Keyed with the app's secret because bodies carry passwords: a plain SHA-256 of them in the
    table would be a fast, unsalted password hash for anyone who reads the database.
    """
    try:
        canonical = json.dumps(json.loads(body or b"null"), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, RecursionError):
        canonical = body
    message = method.encode() + b" " + path.encode() + b"\n" + canonical
    return hmac.new(("idempotency:" + secret).encode(), message, hashlib.sha256).hexdigest()


def claim(db: Database, *, principal: str, key: str, print_: str, now: datetime) -> Replay | int:
    """Claim `key` for this request. Returns the stored Replay, or the claim's row id to complete.

    Raises InvalidRequest (422) when the key was used with another request, Conflict (409) while
    the first request with the key is still running.
    """
    if not key or len(key) > 255 or "\x00" in key:
        raise InvalidRequest("Idempotency-Key must be 1 to 255 characters, without NUL.",
                             code="invalid_idempotency_key",
                             param="Idempotency-Key")
    with db.transaction() as session:
        # Keys expire after KEEP_FOR: an old row with this key is removed so the key can be reused.
        session.execute(delete(IdempotencyKey).where(
            IdempotencyKey.principal == principal, IdempotencyKey.key == key,
            IdempotencyKey.created_at < now - KEEP_FOR))
        row = IdempotencyKey(principal=principal, key=key, fingerprint=print_, locked_at=now, created_at=now)
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
            return row.id
        except IntegrityError:
            pass
        existing = session.scalars(select(IdempotencyKey).where(
            IdempotencyKey.principal == principal, IdempotencyKey.key == key)).one()
        if existing.fingerprint != print_:
            raise InvalidRequest("This Idempotency-Key was already used with a different request.",
                                 code="idempotency_key_reused", param="Idempotency-Key")
        if existing.response_status is not None:
            return Replay(existing.response_status, existing.response_body or {})
        if existing.locked_at is not None and existing.locked_at > now - STALE_CLAIM:
            raise Conflict("A request with this Idempotency-Key is still being processed.",
                           code="idempotency_key_in_use")
        taken = session.execute(update(IdempotencyKey).where(
            IdempotencyKey.id == existing.id, IdempotencyKey.locked_at == existing.locked_at,
            IdempotencyKey.response_status.is_(None)).values(locked_at=now))
        if taken.rowcount != 1:
            raise Conflict("A request with this Idempotency-Key is still being processed.",
                           code="idempotency_key_in_use")
        return existing.id


def complete(session: Session, claim_id: int, *, status: int, body: dict) -> None:
    """Store the response inside the caller's transaction."""
    session.execute(update(IdempotencyKey).where(IdempotencyKey.id == claim_id)
                    .values(response_status=status, response_body=body, locked_at=None))


def release(db: Database, claim_id: int) -> None:
    """Forget a claim whose request failed unexpectedly, so a retry can run."""
    with db.transaction() as session:
        session.execute(delete(IdempotencyKey).where(
            IdempotencyKey.id == claim_id, IdempotencyKey.response_status.is_(None)))


def purge_expired(session: Session, *, now: datetime) -> int:
    return session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < now - KEEP_FOR)).rowcount
