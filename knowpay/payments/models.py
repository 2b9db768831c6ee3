"""Payment attempts and every raw notification a channel sent us."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from knowpay.db import Base
from knowpay.domain.ids import new_id


class Payment(Base):
    """One attempt to pay an order through one channel. Its id is the channel's out_trade_no."""

    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("channel", "channel_trade_no", name="uq_payments_channel_trade_no"),
        Index("ix_payments_order", "order_id"),
        Index("ix_payments_status_next_query", "status", "next_query_at"),
        Index("ix_payments_buyer_created", "buyer_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("pay"))
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"))
    buyer_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    channel: Mapped[str] = mapped_column(String(24))
    method: Mapped[str | None] = mapped_column(String(24))
    status: Mapped[str] = mapped_column(String(24))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    action: Mapped[dict | None] = mapped_column(JSON)
    channel_trade_no: Mapped[str | None] = mapped_column(String(80))
    failure_code: Mapped[str | None] = mapped_column(String(60))
    failure_message: Mapped[str | None] = mapped_column(String(300))
    installments: Mapped[int | None] = mapped_column(Integer)
    device_id: Mapped[str | None] = mapped_column(String(128))
    client_ip: Mapped[str | None] = mapped_column(String(64))
    channel_extra: Mapped[dict] = mapped_column(JSON, default=dict)
    amount_refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    # Every change bumps `version`; it is the `sequence` of this payment's events and stream.
    version: Mapped[int] = mapped_column(Integer, default=1)
    next_query_at: Mapped[datetime | None] = mapped_column()
    query_attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column()
    succeeded_at: Mapped[datetime | None] = mapped_column()
    # When the creators' share moved from pending to available (after the settlement period).
    settled_at: Mapped[datetime | None] = mapped_column()


class ChannelNotification(Base):
    """A notification exactly as received, stored before anything else is done with it."""

    __tablename__ = "channel_notifications"
    __table_args__ = (Index("ix_channel_notifications_payment", "payment_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("ntf"))
    channel: Mapped[str] = mapped_column(String(24))
    received_at: Mapped[datetime] = mapped_column(index=True)
    headers: Mapped[dict] = mapped_column(JSON, default=dict)
    body: Mapped[str] = mapped_column(Text)
    # received → processed | duplicate | rejected | ignored
    status: Mapped[str] = mapped_column(String(16), default="received")
    reason: Mapped[str | None] = mapped_column(String(300))
    payment_id: Mapped[str | None] = mapped_column(String(32))
    event_id: Mapped[str | None] = mapped_column(String(100))
    processed_at: Mapped[datetime | None] = mapped_column()


class BankTransferReceipt(Base):
    """A transfer an admin saw arrive in the bank, and what KnowPay made of it."""

    __tablename__ = "bank_transfer_receipts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("btr"))
    reference: Mapped[str] = mapped_column(String(40), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    payment_id: Mapped[str | None] = mapped_column(String(32))
    # captured | partial | excess | unknown_reference | not_payable
    outcome: Mapped[str] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(String(300))
    recorded_by: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column()
