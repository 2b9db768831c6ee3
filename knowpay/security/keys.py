"""Field-encryption key rotation: re-encrypt every encrypted column under the newest key.

After a new key is put first in `KNOWPAY_ENCRYPTION_KEYS`, new values use it at once and old ones
still decrypt with the older keys; `knowpay keys rotate` rewrites the old ones, batch by batch, after
which the older keys can be removed. Each value is rewritten with compare-and-set, so a value that
changed meanwhile (and so already uses the newest key) is left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update

from knowpay.accounts import totp
from knowpay.accounts.models import User, WeChatIdentity
from knowpay.accounts.wechat_identity import openid_context
from knowpay.db import Database
from knowpay.fieldcrypt import PREFIX, DecryptionError, FieldCipher
from knowpay.payouts.models import Payout, PayoutAccount

BATCH = 200


@dataclass(frozen=True)
class EncryptedColumn:
    """A column holding FieldCipher values, and the context each value was bound to."""

    label: str
    model: Any
    column: str
    key: str
    context: Callable[[Any], str]


ENCRYPTED_COLUMNS: tuple[EncryptedColumn, ...] = (
    EncryptedColumn("two-factor keys", User, "tf_totp_secret", "id", lambda row: totp.secret_context(row.id)),
    EncryptedColumn("two-factor keys being set up", User, "totp_pending_secret", "id",
                    lambda row: totp.secret_context(row.id)),
    EncryptedColumn("payout bank accounts", PayoutAccount, "details_encrypted", "creator_id",
                    lambda row: f"payout_account:{row.creator_id}"),
    EncryptedColumn("payout destinations", Payout, "destination_encrypted", "id",
                    lambda row: f"payout_account:{row.creator_id}"),
    EncryptedColumn("WeChat openids", WeChatIdentity, "openid_encrypted", "id",
                    lambda row: openid_context(row.user_id, row.app_id)),
)


@dataclass
class RotationResult:
    label: str
    total: int = 0
    rotated: int = 0
    unreadable: list[str] = field(default_factory=list)


def rotate_field_keys(db: Database, cipher: FieldCipher, newest_key_id: str, *,
                      progress: Callable[[RotationResult], None] | None = None,
                      batch: int = BATCH) -> list[RotationResult]:
    """Re-encrypt every value not yet under `newest_key_id`; values no key can read are reported, not touched."""
    results = []
    newest_prefix = f"{PREFIX}:{newest_key_id}:"
    for spec in ENCRYPTED_COLUMNS:
        column = getattr(spec.model, spec.column)
        key = getattr(spec.model, spec.key)
        stale = column.is_not(None) & ~column.startswith(newest_prefix, autoescape=True)
        result = RotationResult(spec.label)
        with db.transaction(write=False) as session:
            result.total = session.scalar(select(func.count()).select_from(spec.model).where(stale)) or 0
        if progress is not None:
            progress(result)
        after = None
        while True:
            with db.transaction() as session:
                stmt = select(spec.model).where(stale).order_by(key).limit(batch)
                if after is not None:
                    stmt = stmt.where(key > after)
                rows = list(session.scalars(stmt))
                for row in rows:
                    old = getattr(row, spec.column)
                    try:
                        new = cipher.rotate(old, context=spec.context(row))
                    except DecryptionError:
                        result.unreadable.append(str(getattr(row, spec.key)))
                        continue
                    changed = session.execute(update(spec.model).where(key == getattr(row, spec.key), column == old)
                                              .values({spec.column: new}).execution_options(synchronize_session=False))
                    result.rotated += changed.rowcount
            if not rows:
                break
            after = getattr(rows[-1], spec.key)
            if progress is not None:
                progress(result)
        results.append(result)
    return results
