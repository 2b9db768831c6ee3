"""Order, its items (price snapshots) and coupons."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from knowpay.db import Base
from knowpay.domain.ids import new_id


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("amount_total >= 0", name="total_not_negative"),
        CheckConstraint("amount_total = amount_subtotal - amount_discount", name="total_adds_up"),
        Index("ix_orders_buyer_created", "buyer_id", "created_at"),
        Index("ix_orders_status_expires", "status", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("ord"))
    buyer_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(String(24), default="pending")
    currency: Mapped[str] = mapped_column(String(8))
    amount_subtotal: Mapped[int] = mapped_column(BigInteger)
    amount_discount: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_total: Mapped[int] = mapped_column(BigInteger)
    amount_refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    coupon_code: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column()
    paid_at: Mapped[datetime | None] = mapped_column()
    closed_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column()
    version: Mapped[int] = mapped_column(Integer, default=1)

    items: Mapped[list[OrderItem]] = relationship(
        back_populates="order", order_by="OrderItem.position", lazy="selectin")


class OrderItem(Base):
    __tablename__ = "order_items"
    __table_args__ = (CheckConstraint("quantity > 0", name="quantity_positive"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("oit"))
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"), index=True)
    creator_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    title: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    amount: Mapped[int] = mapped_column(BigInteger)  # unit price at the time of ordering
    quantity: Mapped[int] = mapped_column(Integer)
    # this line's share of the order discount, so per-item settlement adds up to the order total
    amount_discount: Mapped[int] = mapped_column(BigInteger, default=0)

    order: Mapped[Order] = relationship(back_populates="items")

    @property
    def amount_net(self) -> int:
        return self.amount * self.quantity - self.amount_discount


class Coupon(Base):
    """A discount code: a percentage (basis points) or a fixed amount off the subtotal."""

    __tablename__ = "coupons"
    __table_args__ = (
        CheckConstraint("(percent_off_bps IS NULL) <> (amount_off IS NULL)", name="one_kind_of_discount"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("cpn"))
    code: Mapped[str] = mapped_column(String(64), unique=True)
    percent_off_bps: Mapped[int | None] = mapped_column(Integer)
    amount_off: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(8))
    max_redemptions: Mapped[int | None] = mapped_column(Integer)
    times_redeemed: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    expires_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column()
