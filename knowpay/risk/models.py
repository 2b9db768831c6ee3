"""Risk tables: rule settings, value lists, decisions (with their inputs), labels, model versions,
velocity counter events (when Redis is not used) and stored daily reports."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from knowpay.db import Base
from knowpay.domain.ids import new_id


class RiskRule(Base):
    """An admin's settings for one rule of the registry; a rule without a row runs on its defaults."""

    __tablename__ = "risk_rules"

    name: Mapped[str] = mapped_column(String(60), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    action: Mapped[str] = mapped_column(String(16))
    shadow: Mapped[bool] = mapped_column(Boolean)
    params: Mapped[dict] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column()
    updated_by: Mapped[str | None] = mapped_column(String(32))


class RiskListEntry(Base):
    """One value on the block or the allow list (an e-mail, a domain, an IP or CIDR range, a device...)."""

    __tablename__ = "risk_list_entries"
    __table_args__ = (UniqueConstraint("list_name", "kind", "value", name="uq_risk_list_entries_list_kind_value"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("rsk"))
    list_name: Mapped[str] = mapped_column(String(8))  # block | allow
    kind: Mapped[str] = mapped_column(String(24))
    value: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str | None] = mapped_column(String(300))
    created_by: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column()


class RiskDecision(Base):
    """One assessment: what was asked (inputs), what fired, the scores, what was done, and any review."""

    __tablename__ = "risk_decisions"
    __table_args__ = (
        Index("ix_risk_decisions_created", "created_at"),
        Index("ix_risk_decisions_review", "review_status", "created_at"),
        Index("ix_risk_decisions_payment", "payment_id"),
        Index("ix_risk_decisions_user_created", "user_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("rsk"))
    subject: Mapped[str] = mapped_column(String(16))  # payment | topup | refund | payout
    user_id: Mapped[str] = mapped_column(String(32))
    order_id: Mapped[str | None] = mapped_column(String(32))
    # The payment created (payment, topup) or the one asked to be refunded (refund).
    payment_id: Mapped[str | None] = mapped_column(String(32))
    refund_id: Mapped[str | None] = mapped_column(String(32))
    payout_id: Mapped[str | None] = mapped_column(String(32))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    # allow | challenge | review | block: what was done.
    outcome: Mapped[str] = mapped_column(String(16))
    # What would have been done had the shadow rules and shadow models acted too.
    shadow_outcome: Mapped[str] = mapped_column(String(16))
    inputs: Mapped[dict] = mapped_column(JSON)
    features: Mapped[dict] = mapped_column(JSON)
    fired: Mapped[list] = mapped_column(JSON)
    score: Mapped[float | None] = mapped_column(Float)
    model_version: Mapped[int | None] = mapped_column(Integer)
    shadow_scores: Mapped[list] = mapped_column(JSON)
    # What could not be used (Redis, the model, a rule) and what was done instead.
    faults: Mapped[list] = mapped_column(JSON)
    # A request held for review that is carried out on approval (refunds).
    request: Mapped[dict | None] = mapped_column(JSON)
    challenge_passed_at: Mapped[datetime | None] = mapped_column()
    review_status: Mapped[str | None] = mapped_column(String(16))  # pending | approved | rejected
    reviewed_by: Mapped[str | None] = mapped_column(String(32))
    reviewed_at: Mapped[datetime | None] = mapped_column()
    review_note: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column()


class RiskLabel(Base):
    """What we learned about a payment afterwards: fraud or legitimate, and from where (training labels)."""

    __tablename__ = "risk_labels"
    __table_args__ = (UniqueConstraint("payment_id", "source", name="uq_risk_labels_payment_source"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    payment_id: Mapped[str] = mapped_column(String(32), index=True)
    label: Mapped[str] = mapped_column(String(8))  # fraud | legit
    # admin | dispute | review | simulation
    source: Mapped[str] = mapped_column(String(24))
    note: Mapped[str | None] = mapped_column(String(300))
    created_by: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column()


class RiskModel(Base):
    """A trained scoring model: its version, status, held-out figures and the fitted estimator."""

    __tablename__ = "risk_models"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(String(12))  # active | shadow | retired
    algorithm: Mapped[str] = mapped_column(String(60))
    feature_names: Mapped[list] = mapped_column(JSON)
    params: Mapped[dict] = mapped_column(JSON)
    metrics: Mapped[dict] = mapped_column(JSON)
    # joblib of the fitted scikit-learn estimator; only `knowpay risk train` writes it.
    estimator: Mapped[bytes] = mapped_column(LargeBinary)
    trained_at: Mapped[datetime] = mapped_column()


class RiskCounterEvent(Base):
    """A velocity counter observation in the database (when Redis is not configured or not reachable)."""

    __tablename__ = "risk_counter_events"
    __table_args__ = (Index("ix_risk_counter_events_key_at", "key", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    key: Mapped[str] = mapped_column(String(200))
    member: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column()


class RiskReport(Base):
    """The daily risk report of one platform-time-zone day, as the scheduler stored it."""

    __tablename__ = "risk_reports"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    body: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column()
