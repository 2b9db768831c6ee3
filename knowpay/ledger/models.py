"""Ledger tables. Postings and transactions are append-only (also enforced by database triggers)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, event
from sqlalchemy.orm import Mapped, mapped_column, object_session, relationship

from knowpay.db import Base
from knowpay.domain.ids import new_id


class LedgerAccount(Base):
    """One account in one currency. `balance` is a cache of its postings, on its normal side."""

    __tablename__ = "ledger_accounts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("acc"))
    code: Mapped[str] = mapped_column(String(160), unique=True)
    type: Mapped[str] = mapped_column(String(16))  # asset, liability, equity, revenue, expense
    currency: Mapped[str] = mapped_column(String(8))
    allow_negative: Mapped[bool] = mapped_column(Boolean, default=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    owner_id: Mapped[str | None] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column()


class JournalTransaction(Base):
    __tablename__ = "journal_transactions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("txn"))
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    description: Mapped[str] = mapped_column(String(300), default="")
    meta: Mapped[dict] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(index=True)

    postings: Mapped[list[Posting]] = relationship(back_populates="transaction", lazy="selectin",
                                                    order_by="Posting.position")


class Posting(Base):
    """A signed amount on one account: positive is a debit, negative a credit."""

    __tablename__ = "postings"
    __table_args__ = (Index("ix_postings_account", "account_id", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("pst"))
    transaction_id: Mapped[str] = mapped_column(ForeignKey("journal_transactions.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    account_id: Mapped[str] = mapped_column(ForeignKey("ledger_accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))

    transaction: Mapped[JournalTransaction] = relationship(back_populates="postings")


class AppendOnlyViolation(RuntimeError):
    """Code tried to change or remove a posted journal transaction or posting; post a reversal instead."""


def _refuse_update(_mapper, _connection, target) -> None:  # type: ignore[no-untyped-def]
    session = object_session(target)
    # A new posting appended to `transaction.postings` marks the transaction dirty without changing it.
    if session is None or session.is_modified(target, include_collections=False):
        raise AppendOnlyViolation(f"{target.__tablename__} is append-only: post a reversing transaction")


def _refuse_delete(_mapper, _connection, target) -> None:  # type: ignore[no-untyped-def]
    raise AppendOnlyViolation(f"{target.__tablename__} is append-only: post a reversing transaction")


# Refused here before any SQL is sent; the migration's triggers refuse it again in the database.
for _model in (JournalTransaction, Posting):
    event.listen(_model, "before_update", _refuse_update)
    event.listen(_model, "before_delete", _refuse_delete)
