"""Write events in the business transaction; workers deliver them later (at least once)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from knowpay.db import OUTBOX_WRITTEN
from knowpay.domain.clock import Clock
from knowpay.outbox.models import OutboxEvent

EVENT_TYPES = frozenset({
    "order.paid", "order.expired", "order.cancelled", "payment.succeeded", "payment.failed", "payment.expired",
    "payment.cancelled", "refund.created", "refund.succeeded", "refund.failed", "payout.requested",
    "payout.approved", "payout.rejected", "reconciliation.discrepancy",
    "entitlement.granted", "entitlement.revoked", "payout.paid", "invariant.violated",
    "analytics.anomaly",
    "risk.review_required", "risk.blocked",
})


def record_event(session: Session, *, type: str, object_type: str, object_id: str, sequence: int,
                 payload: dict, clock: Clock) -> OutboxEvent:
    """Add an event row to the caller's transaction. `sequence` is the object's version after the change."""
    event = OutboxEvent(type=type, object_type=object_type, object_id=object_id, sequence=sequence,
                        payload=payload, created_at=clock.now())
    session.add(event)
    session.info[OUTBOX_WRITTEN] = True
    return event
