"""Security tables: the append-only, hash-chained audit log and sign-in failure counters."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String, Text, event
from sqlalchemy.orm import Mapped, ORMExecuteState, Session, mapped_column

from knowpay.db import Base


class AuditEntry(Base):
    """One audited action. `seq` runs 1, 2, 3... without gaps; `hash` covers the entry and `prev_hash`."""

    __tablename__ = "audit_entries"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(index=True)
    actor_id: Mapped[str | None] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(60), index=True)
    target: Mapped[str | None] = mapped_column(String(64), index=True)
    # The canonical JSON text that was hashed, stored as text so reading it back cannot reformat it.
    details: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class SignInThrottle(Base):
    """Failed sign-ins for one key (`account:<digest of the e-mail>` or `ip:<address>`), shared by every worker."""

    __tablename__ = "sign_in_throttles"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime] = mapped_column()
    locked_until: Mapped[datetime | None] = mapped_column()


class AuditLogIsAppendOnly(RuntimeError):
    """Code tried to change or remove an audit entry; the log only ever grows."""


def _refuse_change(_mapper, _connection, target) -> None:  # type: ignore[no-untyped-def]
    raise AuditLogIsAppendOnly(f"audit entry {target.seq} cannot be changed or deleted")


def _refuse_bulk_change(state: ORMExecuteState) -> None:
    if (state.is_update or state.is_delete) and any(
            mapper.class_ is AuditEntry for mapper in state.all_mappers):
        raise AuditLogIsAppendOnly("audit entries cannot be changed or deleted")


# Refused before any SQL is sent: ORM updates and deletes of one entry, and bulk update()/delete().
event.listen(AuditEntry, "before_update", _refuse_change)
event.listen(AuditEntry, "before_delete", _refuse_change)
event.listen(Session, "do_orm_execute", _refuse_bulk_change)
