"""Fan outbox events out to the webhook endpoints subscribed to them: one delivery row per pair.

A repeat is harmless: the unique (endpoint_id, event_id) swallows a second delivery row and the
event is marked dispatched by compare-and-set, so two dispatchers never double an effect.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from knowpay.context import Context
from knowpay.domain.clock import isoformat
from knowpay.domain.ids import new_id
from knowpay.outbox.models import OutboxEvent, WebhookDelivery, WebhookEndpoint

DISPATCH_LIMIT = 500
BATCH_SIZE = 100


def event_body(event: OutboxEvent) -> dict[str, Any]:
    """What an endpoint receives for an event (API.md, "Webhooks to other services")."""
    return {
        "id": event.id,
        "type": event.type,
        "created_at": isoformat(event.created_at),
        "sequence": event.sequence,
        "data": {"object": event.payload},
    }


def _insert_ignoring_repeats(session: Session, rows: list[dict[str, Any]]) -> None:
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(WebhookDelivery).on_conflict_do_nothing(index_elements=["endpoint_id", "event_id"])
    session.execute(stmt, rows)


def _dispatch_batch(session: Session, *, size: int, now: datetime) -> int:
    # SKIP LOCKED lets two dispatchers on PostgreSQL take different batches; SQLite serialises writers.
    events = list(session.scalars(
        select(OutboxEvent).where(OutboxEvent.dispatched_at.is_(None))
        .order_by(OutboxEvent.created_at, OutboxEvent.id).limit(size)
        .with_for_update(skip_locked=True)))
    if not events:
        return 0
    endpoints = list(session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.enabled.is_(True))))
    rows = [
        {"id": new_id("whd"), "endpoint_id": endpoint.id, "event_id": event.id, "status": "pending",
         "attempts": 0, "next_attempt_at": now, "created_at": now}
        for event in events for endpoint in endpoints if event.type in endpoint.events
    ]
    if rows:
        _insert_ignoring_repeats(session, rows)
    marked = session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.id.in_([e.id for e in events]), OutboxEvent.dispatched_at.is_(None))
        .values(dispatched_at=now))
    return marked.rowcount


def dispatch_pending(ctx: Context, limit: int = DISPATCH_LIMIT, *, batch_size: int = BATCH_SIZE) -> int:
    """Fan out up to `limit` undispatched events, oldest first, one transaction per batch; how many."""
    dispatched = 0
    while dispatched < limit:
        size = min(batch_size, limit - dispatched)
        with ctx.db.transaction() as session:
            count = _dispatch_batch(session, size=size, now=ctx.clock.now())
        dispatched += count
        if count < size:
            break
    return dispatched
