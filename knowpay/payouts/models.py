"""Payout requests and the creator's payout account (bank details encrypted at rest)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from knowpay.db import Base
from knowpay.domain.ids import new_id


class PayoutAccount(Base):
    __tablename__ = "payout_accounts"

    creator_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    details_encrypted: Mapped[str] = mapped_column(Text)
    # shown to the creator and admins so they recognise the account without decrypting it
    display: Mapped[str] = mapped_column(String(80))
    updated_at: Mapped[datetime] = mapped_column()


class Payout(Base):
    __tablename__ = "payouts"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        Index("ix_payouts_creator_created", "creator_id", "created_at"),
        Index("ix_payouts_status", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("pyo"))
    creator_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), default="requested")
    # a copy of the bank details at request time, so a later edit cannot redirect this payout
    destination_encrypted: Mapped[str] = mapped_column(Text)
    destination_display: Mapped[str] = mapped_column(String(80))
    reason: Mapped[str | None] = mapped_column(String(300))
    reference: Mapped[str | None] = mapped_column(String(100))
    decided_by: Mapped[str | None] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column()
    approved_at: Mapped[datetime | None] = mapped_column()
    paid_at: Mapped[datetime | None] = mapped_column()
    rejected_at: Mapped[datetime | None] = mapped_column()
