"""Webhook endpoints, and the signed delivery of events to them with retries for up to three days.

A worker leases the deliveries it is about to send (`locked_until`, taken by compare-and-set), POSTs
them outside any transaction, and records the outcome only while it still holds the lease; a worker
that dies leaves a lease that lapses, and the next sweep sends again (at least once, never two
senders at the same time).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

import requests
from sqlalchemy import Select, or_, select, update
from sqlalchemy.orm import Session

from knowpay.context import Context
from knowpay.domain.clock import Clock
from knowpay.domain.errors import Conflict, InvalidRequest, NotFound
from knowpay.outbox.dispatch import event_body
from knowpay.outbox.models import OutboxEvent, WebhookDelivery, WebhookEndpoint
from knowpay.outbox.service import EVENT_TYPES
from knowpay.security import audit

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "KnowPay-Signature"
SECRET_PREFIX = "whsec_"
MAX_URL_LENGTH = 500
DELIVER_LIMIT = 50
TIMEOUT_SECONDS = 10
SENDERS = 8  # concurrent POSTs per sweep, so one slow endpoint does not hold up the others
FIRST_RETRY = timedelta(seconds=30)
MAX_RETRY_DELAY = timedelta(hours=6)
RETRY_WINDOW = timedelta(days=3)
LEASE = timedelta(minutes=5)
# A request is started only with this much lease left, so it cannot outlive the lease.
LEASE_MARGIN = timedelta(seconds=3 * TIMEOUT_SECONDS)


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


# Endpoints -------------------------------------------------------------------------------------------

def _check_url(url: str) -> None:
    refusal = InvalidRequest("`url` must be an absolute http:// or https:// URL.", code="invalid_url",
                             param="url")
    if len(url) > MAX_URL_LENGTH or any(c.isspace() for c in url):
        raise refusal
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number
    except ValueError:
        raise refusal from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise refusal


def _check_events(events: list[str]) -> list[str]:
    if not events:
        raise InvalidRequest("`events` must name at least one event type.", code="invalid_events",
                             param="events")
    for index, name in enumerate(events):
        if name not in EVENT_TYPES:
            known = ", ".join(sorted(EVENT_TYPES))
            raise InvalidRequest(f"`{name}` is not an event type; use one of {known}.",
                                 code="unknown_event_type", param=f"events[{index}]")
    return list(dict.fromkeys(events))


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def create_endpoint(session: Session, url: str, events: list[str], *, actor_id: str,
                    clock: Clock) -> WebhookEndpoint:
    """Register a URL for some event types, with a fresh signing secret (shown to the caller once)."""
    _check_url(url)
    endpoint = WebhookEndpoint(url=url, events=_check_events(events), secret=new_secret(), enabled=True,
                               created_at=clock.now())
    session.add(endpoint)
    session.flush()
    audit.record(session, actor_id, audit.WEBHOOK_ENDPOINT_CREATED, endpoint.id,
                 {"url": url, "events": endpoint.events}, clock)
    return endpoint


def endpoints_query() -> Select:
    return select(WebhookEndpoint)


def get_endpoint(session: Session, endpoint_id: str) -> WebhookEndpoint:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise NotFound("No such webhook endpoint.", param="id")
    return endpoint


def deliveries_query(endpoint_id: str, *, status: str | None = None) -> Select:
    stmt = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    if status is not None:
        stmt = stmt.where(WebhookDelivery.status == status)
    return stmt


def get_delivery(session: Session, delivery_id: str) -> WebhookDelivery:
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None:
        raise NotFound("No such webhook delivery.", param="id")
    return delivery


def event_types(session: Session, event_ids: list[str]) -> dict[str, str]:
    """The type of each event, by id (for listing deliveries)."""
    if not event_ids:
        return {}
    rows = session.execute(select(OutboxEvent.id, OutboxEvent.type).where(OutboxEvent.id.in_(event_ids)))
    return dict(rows.all())


def _put_back(session: Session, delivery_ids: list[str], now: datetime) -> None:
    for delivery_id in delivery_ids:
        changed = session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id,
                   or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until <= now))
            .values(status=DeliveryStatus.PENDING, next_attempt_at=now, locked_until=None)
            .execution_options(synchronize_session=False))
        if changed.rowcount == 0:
            raise Conflict("This delivery is being sent right now; look again in a minute.",
                           code="delivery_in_progress")


def redeliver_delivery(session: Session, delivery_id: str, *, clock: Clock) -> WebhookDelivery:
    """Make one delivery due now, whatever its status.

    A delivery past its three-day window gets one attempt; if that fails it is failed again.
    """
    delivery = get_delivery(session, delivery_id)
    _put_back(session, [delivery.id], clock.now())
    session.refresh(delivery)
    return delivery


def redeliver(session: Session, target: str, *, clock: Clock) -> list[WebhookDelivery]:
    """Send again now: one delivery (`whd_...`), or every failed delivery of an event (`evt_...`)."""
    if not target.startswith("evt_"):
        return [redeliver_delivery(session, target, clock=clock)]
    if session.get(OutboxEvent, target) is None:
        raise NotFound("No such event.", param="id")
    ids = list(session.scalars(select(WebhookDelivery.id).where(
        WebhookDelivery.event_id == target, WebhookDelivery.status == DeliveryStatus.FAILED)))
    _put_back(session, ids, clock.now())
    return list(session.scalars(select(WebhookDelivery).where(WebhookDelivery.id.in_(ids))
                                .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
                                .execution_options(populate_existing=True)))


# Signing ---------------------------------------------------------------------------------------------

def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    """`t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed with the endpoint's secret>`."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def retry_delay(failures: int, *, rng: random.Random | None = None) -> timedelta:
    """30 s × 2^(failures-1), at most 6 h, ±25 % jitter so that a recovered endpoint is not hit at once."""
    base = FIRST_RETRY.total_seconds() * 2 ** min(max(failures - 1, 0), 20)
    jittered = base * (rng or random).uniform(0.75, 1.25)
    return min(timedelta(seconds=jittered), MAX_RETRY_DELAY)


# Delivery --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Attempt:
    """A leased delivery with all it needs to be sent without touching the database."""

    delivery_id: str
    endpoint_id: str
    event_id: str
    url: str
    secret: str
    body: bytes
    attempts: int
    created_at: datetime
    lease_until: datetime


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status: int | None
    error: str | None


def claim_due(ctx: Context, *, limit: int = DELIVER_LIMIT, now: datetime | None = None) -> list[Attempt]:
    """Lease up to `limit` due deliveries to enabled endpoints (compare-and-set on `locked_until`)."""
    at = now or ctx.clock.now()
    lease_until = at + LEASE
    free = or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until <= at)
    with ctx.db.transaction() as session:
        candidates = list(session.scalars(
            select(WebhookDelivery.id)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(WebhookDelivery.status == DeliveryStatus.PENDING, WebhookDelivery.next_attempt_at <= at,
                   free, WebhookEndpoint.enabled.is_(True))
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(limit)
            .with_for_update(of=WebhookDelivery, skip_locked=True)))
        if not candidates:
            return []
        claimed = list(session.scalars(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(candidates), WebhookDelivery.status == DeliveryStatus.PENDING, free)
            .values(locked_until=lease_until)
            .returning(WebhookDelivery.id)
            .execution_options(synchronize_session=False)))
        rows = session.execute(
            select(WebhookDelivery, WebhookEndpoint.url, WebhookEndpoint.secret, OutboxEvent)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .join(OutboxEvent, OutboxEvent.id == WebhookDelivery.event_id)
            .where(WebhookDelivery.id.in_(claimed))
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)).all()
        return [
            Attempt(delivery_id=d.id, endpoint_id=d.endpoint_id, event_id=d.event_id, url=url, secret=secret,
                    body=json.dumps(event_body(event), separators=(",", ":"), ensure_ascii=False).encode(),
                    attempts=d.attempts, created_at=d.created_at, lease_until=lease_until)
            for d, url, secret, event in rows
        ]


def _unix(moment: datetime) -> int:
    return int(moment.replace(tzinfo=UTC).timestamp())


def send(attempt: Attempt, *, at: datetime) -> Outcome:
    """POST the signed body once; any 2xx is success, everything else (redirects too) a failure."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "KnowPay-Webhooks/1",
        SIGNATURE_HEADER: signature_header(attempt.secret, attempt.body, _unix(at)),
    }
    try:
        with requests.post(attempt.url, data=attempt.body, headers=headers, timeout=TIMEOUT_SECONDS,
                           allow_redirects=False, stream=True) as response:
            if 200 <= response.status_code < 300:
                return Outcome(True, response.status_code, None)
            excerpt = response.raw.read(300, decode_content=True).decode("utf-8", "replace")
            return Outcome(False, response.status_code, f"HTTP {response.status_code}: {excerpt}".strip())
    except requests.RequestException as exc:
        return Outcome(False, None, f"{exc.__class__.__name__}: {exc}"[:500])


def record(ctx: Context, attempt: Attempt, outcome: Outcome, *, at: datetime) -> bool:
    """Write the outcome, if this worker still holds the lease; False when it had lapsed."""
    failures = attempt.attempts + 1
    values: dict = {"attempts": failures, "last_status": outcome.status, "last_error": outcome.error,
                    "locked_until": None}
    deadline = attempt.created_at + RETRY_WINDOW
    if outcome.ok:
        values.update(status=DeliveryStatus.SUCCEEDED, delivered_at=at)
    elif at >= deadline:
        values.update(status=DeliveryStatus.FAILED)
    else:
        # The last retry lands on the deadline itself, so an endpoint gets the whole window.
        values.update(next_attempt_at=min(at + retry_delay(failures), deadline))
    with ctx.db.transaction() as session:
        changed = session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == attempt.delivery_id,
                   WebhookDelivery.status == DeliveryStatus.PENDING,
                   WebhookDelivery.locked_until == attempt.lease_until)
            .values(**values).execution_options(synchronize_session=False))
    if changed.rowcount == 0:
        log.warning("webhook delivery %s: lease lapsed before its outcome was recorded", attempt.delivery_id)
        return False
    verdict = "succeeded" if outcome.ok else values.get("status", f"will retry (got {outcome.status})")
    log.info("webhook delivery %s of %s to %s: %s (attempt %d)", attempt.delivery_id, attempt.event_id,
             attempt.endpoint_id, verdict, failures)
    return True


def release(ctx: Context, attempt: Attempt) -> None:
    """Give a lease back unused, so the next sweep sends the delivery without waiting for it to lapse."""
    with ctx.db.transaction() as session:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == attempt.delivery_id,
                   WebhookDelivery.locked_until == attempt.lease_until)
            .values(locked_until=None).execution_options(synchronize_session=False))


def deliver_due(ctx: Context, limit: int = DELIVER_LIMIT, *, now: datetime | None = None) -> int:
    """Send what is due (HTTP outside any transaction) and record each outcome; how many were attempted.

    `now` pins the time of the claim and of the outcomes (tests); by default the context's clock.
    """
    started = time.monotonic()
    attempts = claim_due(ctx, limit=limit, now=now)
    if not attempts:
        return 0
    usable_seconds = (LEASE - LEASE_MARGIN).total_seconds()

    def attempt_one(attempt: Attempt) -> bool:
        if time.monotonic() - started > usable_seconds:
            release(ctx, attempt)
            return False
        outcome = send(attempt, at=now or ctx.clock.now())
        record(ctx, attempt, outcome, at=now or ctx.clock.now())
        return True

    with ThreadPoolExecutor(max_workers=min(SENDERS, len(attempts)), thread_name_prefix="webhook") as pool:
        return sum(pool.map(attempt_one, attempts))
