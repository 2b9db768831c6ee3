"""The audit log: who did what to which object, append-only and hash-chained.

Entry n stores the SHA-256 of entry n-1 (`prev_hash`) and its own hash over its content and that
link, and the sequence numbers run without gaps, so `verify_chain` finds any edited or deleted
entry. Cutting entries off the end leaves a valid shorter chain: compare `verify_chain`'s head with
one recorded earlier (`knowpay audit verify --anchor SEQ:HASH`) to catch that too.

Appends are serialised (PostgreSQL: a transaction-scoped advisory lock; SQLite: its write lock),
so write the entry as the last step of a transaction to hold the lock briefly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from knowpay.domain.clock import Clock
from knowpay.security.models import AuditEntry

GENESIS = "0" * 64
# pg_advisory_xact_lock key for appends (any constant: "KPAUDI" in ASCII).
_LOCK_KEY = 0x4B5041554449

# Action names, past tense by object.
LOGIN = "auth.login_succeeded"
LOGIN_FAILED = "auth.login_failed"
LOCKED_OUT = "auth.locked_out"
TOKEN_REVOKED = "auth.token_revoked"
TOKENS_REVOKED = "auth.tokens_revoked"
PASSWORD_CHANGED = "auth.password_changed"
PASSWORD_RESET = "auth.password_reset"
TOTP_ENABLED = "2fa.enabled"
TOTP_DISABLED = "2fa.disabled"
RECOVERY_CODES_REPLACED = "2fa.recovery_codes_replaced"
RECOVERY_CODE_USED = "2fa.recovery_code_used"
STEP_UP = "2fa.step_up"
USER_REGISTERED = "user.registered"
ROLES_CHANGED = "user.roles_changed"
USER_DELETED = "user.deleted"
DATA_EXPORTED = "user.data_exported"
KEYS_ROTATED = "settings.encryption_keys_rotated"
API_KEY_CREATED = "settings.api_key_created"
WEBHOOK_ENDPOINT_CREATED = "settings.webhook_endpoint_created"
REFUND_OPENED = "refund.requested"
REFUND_MARKED_SENT = "refund.marked_sent"
PAYOUT_REQUESTED = "payout.requested"
PAYOUT_APPROVED = "payout.approved"
PAYOUT_REJECTED = "payout.rejected"
PAYOUT_PAID = "payout.marked_paid"
PAYOUT_ACCOUNT_SET = "payout.account_set"
BANK_TRANSFER_RECORDED = "bank_transfer.recorded"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(*, seq: int, created_at: str, actor_id: str | None, action: str, target: str | None,
               details: str, prev_hash: str) -> str:
    content = canonical_json([seq, created_at, actor_id, action, target, details, prev_hash])
    return hashlib.sha256(content.encode()).hexdigest()


def _hash_of(entry: AuditEntry) -> str:
    return entry_hash(seq=entry.seq, created_at=entry.created_at.isoformat(), actor_id=entry.actor_id,
                      action=entry.action, target=entry.target, details=entry.details, prev_hash=entry.prev_hash)


def record(session: Session, actor_id: str | None, action: str, target: str | None,
           details: dict[str, Any] | None, clock: Clock) -> AuditEntry:
    """Append one entry in the caller's transaction (it commits or rolls back with the action itself).

    `actor_id`: a user (`usr_...`), an API key (`key_...`), `cli` or `system`; `target`: the object acted
    on. Never put secrets in `details`.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    last = session.execute(select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)).first()
    seq, prev_hash = (1, GENESIS) if last is None else (last.seq + 1, last.hash)
    created_at = clock.now()
    details_text = canonical_json(details or {})
    entry = AuditEntry(seq=seq, created_at=created_at, actor_id=actor_id, action=action, target=target,
                       details=details_text, prev_hash=prev_hash)
    entry.hash = _hash_of(entry)
    session.add(entry)
    session.flush()
    return entry


@dataclass(frozen=True)
class ChainReport:
    checked: int
    head_seq: int
    head_hash: str
    broken_seq: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _entries(session: Session) -> Iterator[AuditEntry]:
    yield from session.scalars(select(AuditEntry).order_by(AuditEntry.seq).execution_options(yield_per=1000))


def verify_chain(session: Session, *, anchor: tuple[int, str] | None = None,
                 progress: Any = None) -> ChainReport:
    """Walk the log from the first entry and report the first one that was edited, removed or reordered.

    `anchor` (seq, hash) is a head recorded earlier: that entry must still be there, unchanged.
    """
    expected_seq, prev_hash, checked = 1, GENESIS, 0
    anchor_seen = anchor is None
    for entry in _entries(session):
        if entry.seq != expected_seq:
            missing = f"{expected_seq}" if entry.seq == expected_seq + 1 else f"{expected_seq}-{entry.seq - 1}"
            return ChainReport(checked, expected_seq - 1, prev_hash, expected_seq,
                               f"entry {missing} is missing (deleted)")
        if entry.prev_hash != prev_hash:
            return ChainReport(checked, expected_seq - 1, prev_hash, entry.seq,
                               f"entry {entry.seq} does not link to entry {entry.seq - 1}: "
                               f"entry {entry.seq - 1} was changed or replaced")
        if _hash_of(entry) != entry.hash:
            return ChainReport(checked, expected_seq - 1, prev_hash, entry.seq,
                               f"entry {entry.seq} was altered: its content does not match its hash")
        if anchor is not None and entry.seq == anchor[0]:
            if entry.hash != anchor[1]:
                return ChainReport(checked, entry.seq, entry.hash, entry.seq,
                                   f"entry {entry.seq} is not the anchored entry (the log was rewritten)")
            anchor_seen = True
        checked += 1
        prev_hash, expected_seq = entry.hash, entry.seq + 1
        if progress is not None and checked % 1000 == 0:
            progress(checked)
    if not anchor_seen:
        assert anchor is not None
        return ChainReport(checked, expected_seq - 1, prev_hash, anchor[0],
                           f"entry {anchor[0]} and any after it are missing (the log was cut short)")
    return ChainReport(checked, expected_seq - 1, prev_hash)
