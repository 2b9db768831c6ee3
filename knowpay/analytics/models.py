"""Operational tables analytics needs: page views, detected anomalies, the learned channel model,
settings; and the indexes the incremental loader reads the payment tables by."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Float, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from knowpay.db import Base
from knowpay.orders.models import Order
from knowpay.outbox.models import OutboxEvent
from knowpay.payments.models import Payment

# The loader finds what changed since its watermark by these columns; without an index each
# minute's look would scan the whole table.
Index("ix_orders_created_at", Order.created_at)
Index("ix_orders_closed_at", Order.closed_at)
Index("ix_payments_updated_at", Payment.updated_at)
Index("ix_outbox_events_created_at", OutboxEvent.created_at)


class PageView(Base):
    """A product or checkout page seen by someone: one insert, nothing else on the hot path."""

    __tablename__ = "analytics_page_views"
    __table_args__ = (Index("ix_analytics_page_views_created", "created_at"),
                      Index("ix_analytics_page_views_order", "order_id"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    kind: Mapped[str] = mapped_column(String(20))  # product_view | checkout_view
    product_id: Mapped[str | None] = mapped_column(String(32))
    order_id: Mapped[str | None] = mapped_column(String(32))
    user_id: Mapped[str | None] = mapped_column(String(32))
    # A stable, non-identifying key for anonymous visitors (a hash), so unique viewers can be told apart.
    viewer_key: Mapped[str | None] = mapped_column(String(32))
    device_class: Mapped[str] = mapped_column(String(12))  # mobile | tablet | desktop | unknown
    created_at: Mapped[datetime] = mapped_column()


class Anomaly(Base):
    """One detected anomaly; its id is the id of the `analytics.anomaly` outbox event announcing it."""

    __tablename__ = "analytics_anomalies"
    __table_args__ = (
        # The scheduled check runs every few minutes: one report per thing, per window.
        UniqueConstraint("kind", "subject", "bucket", name="uq_analytics_anomalies_kind_subject_bucket"),
        Index("ix_analytics_anomalies_created", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(String(120))
    bucket: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(String(300))
    observed: Mapped[float] = mapped_column(Float)
    expected: Mapped[float] = mapped_column(Float)
    numbers: Mapped[dict] = mapped_column(JSON, default=dict)
    window_start: Mapped[datetime] = mapped_column()
    window_end: Mapped[datetime] = mapped_column()
    created_at: Mapped[datetime] = mapped_column()


class ChannelStat(Base):
    """Recent outcomes of payment attempts per channel, device class and amount band (channel ordering)."""

    __tablename__ = "analytics_channel_stats"

    channel: Mapped[str] = mapped_column(String(24), primary_key=True)
    device_class: Mapped[str] = mapped_column(String(12), primary_key=True)
    amount_band: Mapped[str] = mapped_column(String(16), primary_key=True)
    attempts: Mapped[int] = mapped_column(Integer)
    succeeded: Mapped[int] = mapped_column(Integer)
    p50_seconds: Mapped[float | None] = mapped_column(Float)
    refreshed_at: Mapped[datetime] = mapped_column()


class AnalyticsSetting(Base):
    """An admin-changeable analytics switch, such as `channel_ordering`."""

    __tablename__ = "analytics_settings"

    key: Mapped[str] = mapped_column(String(60), primary_key=True)
    value: Mapped[dict] = mapped_column(JSON)
    updated_by: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column()
