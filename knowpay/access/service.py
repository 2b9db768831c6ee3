"""Grant, list, check and revoke entitlements; every grant and revocation is an outbox event."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from knowpay.access.models import Entitlement
from knowpay.catalog.models import Product
from knowpay.domain.clock import Clock
from knowpay.domain.periods import add_interval
from knowpay.orders.models import Order
from knowpay.outbox.service import record_event
from knowpay.representations import EntitlementOut, as_json


def _membership_start(session: Session, user_id: str, product_id: str, now: datetime) -> datetime:
    """A renewal starts when the current membership ends, so no paid day is lost."""
    latest_end = session.scalar(
        select(Entitlement.ends_at).where(Entitlement.user_id == user_id, Entitlement.product_id == product_id,
                                          Entitlement.status == "active", Entitlement.ends_at > now)
        .order_by(Entitlement.ends_at.desc()).limit(1))
    return max(now, latest_end) if latest_end else now


def grant_for_order(session: Session, order: Order, *, clock: Clock) -> list[Entitlement]:
    """One entitlement per item that gives access (not coin packs); a replay grants nothing new."""
    now = clock.now()
    granted: list[Entitlement] = []
    for item in order.items:
        if item.kind == "coin_pack":
            continue
        starts_at, ends_at = now, None
        if item.kind == "membership":
            plan = session.scalar(select(Product.plan).where(Product.id == item.product_id)) or {}
            starts_at = _membership_start(session, order.buyer_id, item.product_id, now)
            ends_at = add_interval(starts_at, plan.get("interval", "month"), plan.get("interval_count", 1))
        entitlement = Entitlement(user_id=order.buyer_id, product_id=item.product_id, order_id=order.id,
                                  order_item_id=item.id, status="active", starts_at=starts_at, ends_at=ends_at,
                                  version=1, created_at=now)
        try:
            with session.begin_nested():
                session.add(entitlement)
                session.flush()
        except IntegrityError:
            continue  # already granted for this item
        record_event(session, type="entitlement.granted", object_type="entitlement", object_id=entitlement.id,
                     sequence=1, payload=as_json(EntitlementOut, entitlement), clock=clock)
        granted.append(entitlement)
    return granted


def _move_order_entitlements(session: Session, order_id: str, *, source: str, target: str, event: str,
                             values: dict, clock: Clock) -> list[Entitlement]:
    """Move each of an order's entitlements in `source` to `target` (compare-and-set, so a replay or a
    concurrent move changes nothing twice), with its event."""
    moved = []
    for entitlement in list(session.scalars(select(Entitlement).where(
            Entitlement.order_id == order_id, Entitlement.status == source))):
        done = session.execute(update(Entitlement).where(
            Entitlement.id == entitlement.id, Entitlement.status == source)
            .values(status=target, version=Entitlement.version + 1, **values))
        if done.rowcount == 1:
            session.refresh(entitlement)
            record_event(session, type=event, object_type="entitlement", object_id=entitlement.id,
                         sequence=entitlement.version, payload=as_json(EntitlementOut, entitlement), clock=clock)
            moved.append(entitlement)
    return moved


def revoke_for_order(session: Session, order_id: str, *, clock: Clock) -> list[Entitlement]:
    """Revoke every active entitlement an order granted (full refund, fraud)."""
    return _move_order_entitlements(session, order_id, source="active", target="revoked",
                                    event="entitlement.revoked", values={"revoked_at": clock.now()}, clock=clock)


def restore_for_order(session: Session, order_id: str, *, clock: Clock) -> list[Entitlement]:
    """Give back every entitlement of an order that was revoked while the order stayed paid (support
    undoing a mistaken fraud mark); dates are kept, so a membership runs its paid period. A replay
    restores nothing twice. The caller checks the order is paid."""
    return _move_order_entitlements(session, order_id, source="revoked", target="active",
                                    event="entitlement.granted", values={"revoked_at": None}, clock=clock)


def effective_status(entitlement: Entitlement, now: datetime) -> str:
    if entitlement.status == "active" and entitlement.ends_at is not None and entitlement.ends_at <= now:
        return "expired"
    return entitlement.status


def entitlements_of(session: Session, user_id: str) -> list[Entitlement]:
    return list(session.scalars(select(Entitlement).where(Entitlement.user_id == user_id)
                                .order_by(Entitlement.created_at.desc(), Entitlement.id.desc())))


def active_entitlement(session: Session, user_id: str, product_id: str, *, now: datetime) -> Entitlement | None:
    return session.scalar(select(Entitlement).where(
        Entitlement.user_id == user_id, Entitlement.product_id == product_id, Entitlement.status == "active",
        Entitlement.starts_at <= now, or_(Entitlement.ends_at.is_(None), Entitlement.ends_at > now))
        .order_by(Entitlement.ends_at.desc()).limit(1))
