"""Co-purchase counts kept up to date from paid orders; derived data, rebuilt from orders at any time.

No foreign keys: these rows are a cache of what the orders say, refreshed by a job, and must
never stand in the way of the tables they are derived from.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from knowpay.db import Base


class RecommendHolding(Base):
    """A product a buyer holds: bought in a paid order that is not fully refunded."""

    __tablename__ = "recommend_holdings"

    buyer_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    product_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    since: Mapped[datetime] = mapped_column()


class RecommendPair(Base):
    """How many buyers hold both products; stored in both directions for one-sided lookups."""

    __tablename__ = "recommend_pairs"
    __table_args__ = (Index("ix_recommend_pairs_product_buyers", "product_id", "buyers"),)

    product_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    other_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    buyers: Mapped[int] = mapped_column(Integer)


class RecommendItem(Base):
    """How many buyers hold a product: its popularity, and the weight its co-purchases are set against."""

    __tablename__ = "recommend_items"
    __table_args__ = (Index("ix_recommend_items_kind_buyers", "kind", "buyers"),)

    product_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    buyers: Mapped[int] = mapped_column(Integer)


class RecommendState(Base):
    """How far the refresh has read: orders paid or refunded up to `refreshed_until` are counted."""

    __tablename__ = "recommend_state"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    refreshed_until: Mapped[datetime | None] = mapped_column()
    buyers_refreshed: Mapped[int] = mapped_column(Integer, default=0)
