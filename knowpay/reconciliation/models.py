"""Reconciliation runs (one per channel and day, re-runnable) and their line results."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import JSON, BigInteger, Date, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from knowpay.db import Base
from knowpay.domain.ids import new_id

RESULTS = ("matched", "missing_internal", "missing_channel", "amount_mismatch", "status_mismatch")


class ReconciliationRun(Base):
    __tablename__ = "reconciliation_runs"
    __table_args__ = (UniqueConstraint("channel", "day", name="uq_reconciliation_channel_day"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("rcn"))
    channel: Mapped[str] = mapped_column(String(24))
    day: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16))  # running, completed, failed
    source: Mapped[str] = mapped_column(String(200))  # "channel" or the file it read
    counts: Mapped[dict] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(String(500))
    runs: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column()
    started_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()


class ReconciliationItem(Base):
    __tablename__ = "reconciliation_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("reconciliation_runs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(10))  # payment, refund
    result: Mapped[str] = mapped_column(String(20))
    payment_id: Mapped[str | None] = mapped_column(String(40))
    refund_id: Mapped[str | None] = mapped_column(String(40))
    channel_trade_no: Mapped[str | None] = mapped_column(String(80))
    channel_amount: Mapped[int | None] = mapped_column(BigInteger)
    our_amount: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(8))
    detail: Mapped[str | None] = mapped_column(String(300))
