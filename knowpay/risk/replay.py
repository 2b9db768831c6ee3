"""Replay stored history in time order through the same feature code as checkout.

Every payment attempt (and every attempt risk blocked before a payment existed) is re-assessed as
of its own moment: counters and the user's history hold exactly what happened before it, kept in
memory stores instead of Redis and the database. Training and back-tests both read history this way.
A payment's request facts come from its stored decision when there is one, else from the payment.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, func, select

from knowpay.accounts.models import User
from knowpay.orders.models import Order, OrderItem
from knowpay.payments.models import Payment
from knowpay.refunds.models import Refund
from knowpay.risk.counters import KEEP_SECONDS, MemoryCounters
from knowpay.risk.features import collect, failure_hits, vector
from knowpay.risk.lists import INSTRUMENT_KINDS
from knowpay.risk.models import RiskDecision, RiskLabel
from knowpay.risk.profiles import COUPON_HOLDING, MemoryProfiles
from knowpay.risk.subject import Subject

# At one instant an attempt is assessed before anything else of that instant is applied, as online
# (history is read strictly before now).
ATTEMPT, APPLY = 0, 1


@dataclass(frozen=True)
class Attempt:
    at: datetime
    id: str
    subject: Subject
    payment_id: str | None
    status: str | None
    fraud: bool


def _instruments(extra: dict | None) -> dict[str, str]:
    extra = extra or {}
    return {kind: str(extra[kind]) for kind in INSTRUMENT_KINDS if extra.get(kind)}


def load_events(session) -> tuple[list[tuple], set[str]]:  # type: ignore[no-untyped-def]
    """Every event of history, unsorted: (at, priority, sequence, kind, data); and the fraud-labelled payments."""
    users = {uid: (email, created) for uid, email, created in session.execute(
        select(User.id, User.email, User.created_at))}
    labels: dict[str, set[str]] = {}
    for payment_id, label in session.execute(select(RiskLabel.payment_id, RiskLabel.label)):
        labels.setdefault(payment_id, set()).add(label)
    fraud = {pid for pid, found in labels.items() if "fraud" in found}
    orders = {oid: (coupon, created, status) for oid, coupon, created, status in session.execute(
        select(Order.id, Order.coupon_code, Order.created_at, Order.status))}
    items: dict[str, tuple[int, bool]] = {}
    for order_id, quantity, topup in session.execute(
            select(OrderItem.order_id, func.sum(OrderItem.quantity),
                   func.sum(case((OrderItem.kind == "coin_pack", 1), else_=0)))
            .group_by(OrderItem.order_id)):
        items[order_id] = (int(quantity or 1), bool(topup))
    first_inputs: dict[str, dict] = {}
    events: list[tuple] = []
    sequence = 0
    for decision in session.scalars(select(RiskDecision).where(RiskDecision.subject.in_(("payment", "topup")))
                                    .order_by(RiskDecision.created_at, RiskDecision.id)):
        if decision.payment_id and decision.payment_id not in first_inputs:
            first_inputs[decision.payment_id] = decision.inputs
        if decision.payment_id is None and decision.outcome == "block" and decision.inputs.get("subject"):
            subject = Subject.from_json(decision.inputs["subject"])
            sequence += 1
            events.append((decision.created_at, ATTEMPT, sequence, "attempt",
                           Attempt(decision.created_at, decision.id, subject, None, "blocked", False)))
            events.append((decision.created_at, APPLY, sequence, "failure", (subject, decision.id)))
    for p in session.scalars(select(Payment).order_by(Payment.created_at, Payment.id)):
        email, created = users.get(p.buyer_id, ("", p.created_at))
        coupon, _, _ = orders.get(p.order_id, (None, None, None))
        quantity, topup = items.get(p.order_id, (1, False))
        stored = first_inputs.get(p.id, {}).get("subject")
        subject = Subject.from_json(stored) if stored else Subject(
            kind="topup" if topup else "payment", user_id=p.buyer_id, email=email or "",
            account_created_at=created, amount=p.amount, currency=p.currency, channel=p.channel, method=p.method,
            ip=p.client_ip, device_id=p.device_id, instruments=_instruments(p.channel_extra), coupon_code=coupon,
            quantity=quantity, order_id=p.order_id, payment_id=p.id)
        sequence += 1
        events.append((p.created_at, ATTEMPT, sequence, "attempt",
                       Attempt(p.created_at, p.id, subject, p.id, p.status, p.id in fraud)))
        if p.status == "failed" and p.failure_code != "channel_unavailable":
            events.append((p.updated_at, APPLY, sequence, "failure", (subject, p.id)))
        if p.status == "succeeded" and p.succeeded_at is not None:
            events.append((p.succeeded_at, APPLY, sequence, "paid", (p.buyer_id, p.amount)))
    for refund_at, payment_id, amount, buyer in session.execute(
            select(Refund.created_at, Refund.payment_id, Refund.amount, Payment.buyer_id)
            .join(Payment, Payment.id == Refund.payment_id)
            .where(Refund.kind == "requested", Refund.status != "failed")):
        sequence += 1
        events.append((refund_at, APPLY, sequence, "refund", (buyer, payment_id, amount)))
    for order_id, (coupon, created, status) in orders.items():
        if coupon and status in COUPON_HOLDING:
            sequence += 1
            events.append((created, APPLY, sequence, "coupon", (coupon, created, order_id)))
    return events, fraud


def replay(ctx, *, since: datetime | None = None, until: datetime | None = None,  # type: ignore[no-untyped-def]
           with_vectors: bool = False) -> Iterator[tuple[Attempt, dict, list[float] | None]]:
    """Yield (attempt, signals, model row or None) for every attempt in [since, until), in time order.

    Counters and history are built from the very beginning, so the first attempts after `since`
    see what came before them.
    """
    with ctx.db.transaction(write=False) as session:
        events, _ = load_events(session)
        buyers_of_orders = dict(session.execute(select(Order.id, Order.buyer_id)).all())
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    counters, profiles = MemoryCounters(), MemoryProfiles()
    tz = ctx.settings.timezone
    forgotten_at = None
    for at, _, _, kind, data in events:
        if until is not None and at >= until:
            break
        if forgotten_at is None or at - forgotten_at > timedelta(days=1):
            counters.forget_before(at - timedelta(seconds=KEEP_SECONDS))
            forgotten_at = at
        if kind == "attempt":
            signals, _, _ = collect(data.subject, counters=counters, profiles=profiles, now=at, tz=tz,
                                    attempt_id=data.id)
            if since is None or at >= since:
                yield data, signals, vector(signals) if with_vectors else None
        elif kind == "failure":
            subject, failure_id = data
            counters.record(failure_hits(subject, f"f:{failure_id}"), at)
        elif kind == "paid":
            profiles.paid(*data)
        elif kind == "refund":
            profiles.refunded(*data)
        elif kind == "coupon":
            coupon, created, order_id = data
            profiles.coupon_held(coupon, created, buyers_of_orders.get(order_id, ""), order_id)
