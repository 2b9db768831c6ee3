"""The product table: a priced thing a creator sells."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from knowpay.db import Base
from knowpay.domain.ids import new_id

KINDS = ("course", "ebook", "audio", "video", "membership", "consulting", "coin_pack")


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        Index("ix_products_status_created", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("prd"))
    creator_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(20))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), default="draft")
    refund_window_days: Mapped[int] = mapped_column(Integer, default=7)
    # membership: {"interval": "month"|"year"|"day", "interval_count": n}
    plan: Mapped[dict | None] = mapped_column(JSON)
    coins: Mapped[int | None] = mapped_column(BigInteger)
    bonus_coins: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column()
