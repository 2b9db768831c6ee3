"""Lockout with exponential backoff after repeated failed sign-ins, per account and per address.

The counts live in the database (`sign_in_throttles`), so every web worker and node agrees. An
account is keyed by a digest of its e-mail whether or not it exists, so a lockout reveals nothing.
A wrong second-factor code counts like a wrong password. Success clears the account's count; an
address's count only ages out (`LockoutPolicy.window_seconds` after its last failure or lock), so
signing in to one's own account does not reset guessing at others.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from knowpay.config import LockoutPolicy
from knowpay.db import Database
from knowpay.domain.clock import Clock
from knowpay.domain.errors import RateLimited
from knowpay.security.models import SignInThrottle


@dataclass(frozen=True)
class ThrottleKey:
    key: str
    threshold: int


def account_key(email: str) -> str:
    return "account:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:40]


def address_key(address: str | None) -> str:
    return "ip:" + (address or "unknown")[:64]


def sign_in_keys(policy: LockoutPolicy, *, email: str, address: str | None) -> list[ThrottleKey]:
    return [ThrottleKey(account_key(email), policy.threshold), ThrottleKey(address_key(address), policy.ip_threshold)]


def seconds_locked(session: Session, keys: Sequence[ThrottleKey], *, clock: Clock) -> int:
    """How long the longest of these locks still lasts (0: none is locked)."""
    now = clock.now()
    until = session.scalars(select(SignInThrottle.locked_until).where(
        SignInThrottle.key.in_([k.key for k in keys]), SignInThrottle.locked_until > now)).all()
    if not until:
        return 0
    return max(1, math.ceil((max(until) - now).total_seconds()))


def ensure_not_locked(db: Database, keys: Sequence[ThrottleKey], *, clock: Clock) -> None:
    """RateLimited (429 with Retry-After) while any of the keys is locked; checked before any password hash."""
    with db.transaction(write=False) as session:
        remaining = seconds_locked(session, keys, clock=clock)
    if remaining:
        raise RateLimited(f"Too many failed attempts; try again in {remaining} seconds.",
                          retry_after=remaining, code="too_many_attempts")


def record_failure(session: Session, keys: Sequence[ThrottleKey], *, policy: LockoutPolicy, clock: Clock) -> int:
    """Count one failure on each key; returns the longest lock (seconds) that it started, 0 for none."""
    now = clock.now()
    longest = 0
    for throttle in keys:
        row = _row_for_update(session, throttle.key, now)
        quiet_since = max(row.last_failure_at, row.locked_until or row.last_failure_at)
        if row.failures and now - quiet_since > timedelta(seconds=policy.window_seconds):
            row.failures = 0
        row.failures += 1
        row.last_failure_at = now
        seconds = policy.lock_seconds(row.failures, throttle.threshold)
        if seconds:
            row.locked_until = now + timedelta(seconds=seconds)
            longest = max(longest, seconds)
    session.flush()
    return longest


def clear_account(session: Session, email: str) -> None:
    session.execute(delete(SignInThrottle).where(SignInThrottle.key == account_key(email)))


def prune_throttles(session: Session, *, policy: LockoutPolicy, clock: Clock) -> int:
    """Forget counts that would be reset anyway (quiet for a whole window, no lock running); for a daily job."""
    quiet_since = clock.now() - timedelta(seconds=policy.window_seconds + policy.max_seconds)
    return session.execute(delete(SignInThrottle).where(SignInThrottle.last_failure_at < quiet_since)).rowcount


def _row_for_update(session: Session, key: str, now) -> SignInThrottle:  # type: ignore[no-untyped-def]
    row = session.get(SignInThrottle, key, with_for_update=True)
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = SignInThrottle(key=key, failures=0, last_failure_at=now)
            session.add(row)
        return row
    except IntegrityError:
        # Another worker counted the first failure on this key at the same moment.
        found = session.get(SignInThrottle, key, with_for_update=True, populate_existing=True)
        assert found is not None
        return found
