"""Read the operational database and shape its rows into the analytics store's fact rows.

The incremental load and the rebuild both call `facts_for` with object ids, so the two can only
differ in *which* objects they look at, never in what a fact row says. A fact row is the current
state of its object (an order with its items, a payment, a refund, an entitlement): reloading it
is harmless, which is what makes the load idempotent.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from knowpay.access.models import Entitlement
from knowpay.analytics.models import PageView
from knowpay.catalog.models import Product
from knowpay.ledger.models import JournalTransaction, LedgerAccount, Posting
from knowpay.orders.models import Order, OrderItem
from knowpay.outbox.models import OutboxEvent
from knowpay.payments.models import Payment
from knowpay.refunds.models import Refund

CHUNK = 500
DEVICE_CLASSES = ("mobile", "tablet", "desktop", "unknown")
# Upper bounds in minor units (fen): 10, 50, 200 and 1000 yuan.
AMOUNT_BANDS = ((1_000, "0-10"), (5_000, "10-50"), (20_000, "50-200"), (100_000, "200-1000"), (None, "1000+"))
BAND_NAMES = tuple(name for _, name in AMOUNT_BANDS)
# Which device a payment method implies: a QR code is shown on a computer and scanned by a phone;
# wap/jsapi pages run on the phone itself.
METHOD_DEVICE = {"qr": "desktop", "page": "desktop", "native": "desktop", "wap": "mobile", "jsapi": "mobile", "h5": "mobile"}
OPEN_PAYMENT = ("requires_action", "processing")

_TABLET = re.compile(r"ipad|tablet|kindle|silk|playbook|(android(?!.*mobile))", re.IGNORECASE)
_MOBILE = re.compile(r"mobi|iphone|ipod|android|micromessenger|harmonyos|windows phone", re.IGNORECASE)
_DESKTOP = re.compile(r"windows nt|macintosh|x11|cros|linux x86", re.IGNORECASE)


def device_class_of(user_agent: str | None) -> str:
    """mobile | tablet | desktop | unknown, from a User-Agent header."""
    if not user_agent:
        return "unknown"
    if _TABLET.search(user_agent):
        return "tablet"
    if _MOBILE.search(user_agent):
        return "mobile"
    if _DESKTOP.search(user_agent):
        return "desktop"
    return "unknown"


def amount_band(amount: int) -> str:
    for limit, name in AMOUNT_BANDS:
        if limit is None or amount < limit:
            return name
    return BAND_NAMES[-1]


def viewer_key(*parts: str | None) -> str:
    """A short one-way key for a visitor (user id, or address and browser): tells visitors apart, names nobody."""
    return hashlib.blake2b("|".join(p or "" for p in parts).encode(), digest_size=12).hexdigest()


def local(moment: datetime | None, tz: ZoneInfo) -> datetime | None:
    """Naive UTC (as stored) → naive wall-clock time in the platform time zone."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC).astimezone(tz).replace(tzinfo=None)


def allocate(total: int, weights: Sequence[int]) -> list[int]:
    """Split `total` over `weights` proportionally in whole units; the last weighted part takes the rest."""
    if not weights:
        return []
    weight_sum = sum(weights)
    if weight_sum <= 0 or total == 0:
        return [0] * len(weights)
    last = max(i for i, w in enumerate(weights) if w > 0)
    parts = [total * w // weight_sum if i != last else 0 for i, w in enumerate(weights)]
    parts[last] = total - sum(parts)
    return parts


def chunks(ids: Iterable[str], size: int = CHUNK) -> Iterator[list]:
    batch: list = []
    for value in ids:
        batch.append(value)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class Facts:
    """Fact rows by store table, ready to be written."""

    orders: list[dict] = field(default_factory=list)
    sales: list[dict] = field(default_factory=list)
    payments: list[dict] = field(default_factory=list)
    refunds: list[dict] = field(default_factory=list)
    entitlements: list[dict] = field(default_factory=list)
    products: list[dict] = field(default_factory=list)
    views: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)

    def extend(self, other: Facts) -> None:
        for name in self.__dataclass_fields__:
            getattr(self, name).extend(getattr(other, name))

    def count(self) -> int:
        return sum(len(getattr(self, name)) for name in self.__dataclass_fields__)


# --- ledger figures -------------------------------------------------------------------------------


@dataclass
class LedgerFigures:
    """What the ledger says one captured payment came to, after its refunds."""

    captured: bool = False  # a `capture` (not a duplicate held for refund)
    channel_fee: int = 0
    creator_net: dict[str, int] = field(default_factory=dict)
    wallet_credit: int = 0  # coins credited to the buyer's wallet (coin packs, minus refunds)


def _ledger_figures(session: Session, payments: list[Payment]) -> dict[str, LedgerFigures]:
    succeeded = [p for p in payments if p.status == "succeeded"]
    figures = {p.id: LedgerFigures() for p in succeeded}
    if not succeeded:
        return figures
    keys: dict[str, str] = {f"payment:{p.id}:captured": p.id for p in succeeded}
    for batch in chunks([p.id for p in succeeded]):
        for refund_id, payment_id in session.execute(
                select(Refund.id, Refund.payment_id).where(Refund.payment_id.in_(batch),
                                                           Refund.status == "succeeded",
                                                           Refund.kind != "duplicate_payment")):
            keys[f"refund:{refund_id}:succeeded"] = payment_id
    for batch in chunks(list(keys)):
        rows = session.execute(
            select(JournalTransaction.idempotency_key, JournalTransaction.kind, LedgerAccount.code, Posting.amount)
            .join(Posting, Posting.transaction_id == JournalTransaction.id)
            .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
            .where(JournalTransaction.idempotency_key.in_(batch)))
        for key, kind, code, amount in rows:
            fig = figures[keys[key]]
            if kind == "capture":
                fig.captured = True
            if code.startswith("channel_fees:"):
                fig.channel_fee += amount
            elif code.startswith("creator:"):
                creator_id = code.split(":")[1]
                fig.creator_net[creator_id] = fig.creator_net.get(creator_id, 0) - amount
            elif code.startswith("wallet:"):
                fig.wallet_credit -= amount
    return figures


# --- fact rows ------------------------------------------------------------------------------------


def _product_rows(products: Iterable[Product]) -> list[dict]:
    return [{
        "product_id": p.id, "creator_id": p.creator_id, "kind": p.kind, "title": p.title, "amount": p.amount,
        "currency": p.currency, "plan_interval": (p.plan or {}).get("interval") if p.kind == "membership" else None,
        "plan_count": (p.plan or {}).get("interval_count", 1) if p.kind == "membership" else None,
        "status": p.status, "created_at": p.created_at, "updated_at": p.updated_at,
    } for p in products]


def _paying_payment(order: Order, payments: list[Payment], ledger: dict[str, LedgerFigures]) -> Payment | None:
    """The attempt that paid the order: the one captured into the ledger (a free order has no postings)."""
    succeeded = [p for p in payments if p.status == "succeeded"]
    for payment in succeeded:
        if ledger.get(payment.id, LedgerFigures()).captured:
            return payment
    for payment in succeeded:
        if payment.succeeded_at == order.paid_at:
            return payment
    return None


def _order_rows(order: Order, payments: list[Payment], ledger: dict[str, LedgerFigures],
                tz: ZoneInfo) -> tuple[dict, list[dict]]:
    paying = _paying_payment(order, payments, ledger) if order.paid_at is not None else None
    fig = ledger.get(paying.id, LedgerFigures()) if paying else LedgerFigures()
    created_local, paid_local = local(order.created_at, tz), local(order.paid_at, tz)
    channel, method = (paying.channel, paying.method) if paying else (None, None)
    order_row = {
        "order_id": order.id, "buyer_id": order.buyer_id, "status": order.status, "currency": order.currency,
        "amount_total": order.amount_total, "amount_discount": order.amount_discount,
        "amount_refunded": order.amount_refunded, "created_at": order.created_at, "created_local": created_local,
        "paid_at": order.paid_at, "paid_local": paid_local, "closed_at": order.closed_at, "channel": channel,
        "method": method, "attempts": len(payments), "version": order.version,
    }
    items = sorted(order.items, key=lambda item: item.position)
    nets = [item.amount_net for item in items]
    refunded = allocate(order.amount_refunded, nets)
    channel_fee = allocate(fig.channel_fee, nets)
    creator_net = [0] * len(items)
    for creator_id, share in fig.creator_net.items():
        positions = [i for i, item in enumerate(items) if item.creator_id == creator_id and item.kind != "coin_pack"]
        for i, part in zip(positions, allocate(share, [nets[i] for i in positions]), strict=True):
            creator_net[i] = part
    packs = [i for i, item in enumerate(items) if item.kind == "coin_pack"]
    coins = [0] * len(items)
    if paying is not None and paying.channel != "wallet":
        for i, part in zip(packs, allocate(fig.wallet_credit, [nets[i] for i in packs]), strict=True):
            coins[i] = part
    seen: set[tuple] = set()

    def first(*key: object) -> bool:
        if key in seen:
            return False
        seen.add(key)
        return True

    sales = [{
        "order_id": order.id, "position": item.position, "buyer_id": order.buyer_id, "product_id": item.product_id,
        "creator_id": item.creator_id, "kind": item.kind, "currency": order.currency, "quantity": item.quantity,
        "net": nets[i], "refunded": refunded[i], "creator_net": creator_net[i], "channel_fee": channel_fee[i],
        "coins_issued": coins[i], "status": order.status, "created_at": order.created_at,
        "created_local": created_local, "paid_at": order.paid_at, "paid_local": paid_local, "channel": channel,
        "method": method, "first_line": i == 0, "first_of_creator": first("c", item.creator_id),
        "first_of_kind": first("k", item.kind), "first_of_creator_kind": first("ck", item.creator_id, item.kind),
    } for i, item in enumerate(items)]
    return order_row, sales


def _payment_row(payment: Payment, checkout_device: str | None, tz: ZoneInfo) -> dict:
    device = METHOD_DEVICE.get(payment.method or "") or checkout_device or "unknown"
    seconds = ((payment.succeeded_at - payment.created_at).total_seconds()
               if payment.succeeded_at is not None else None)
    return {
        "payment_id": payment.id, "order_id": payment.order_id, "buyer_id": payment.buyer_id,
        "channel": payment.channel, "method": payment.method, "device_class": device,
        "amount_band": amount_band(payment.amount), "status": payment.status, "amount": payment.amount,
        "currency": payment.currency, "amount_refunded": payment.amount_refunded,
        "failure_code": payment.failure_code, "created_at": payment.created_at,
        "created_local": local(payment.created_at, tz), "succeeded_at": payment.succeeded_at,
        "seconds_to_pay": seconds, "updated_at": payment.updated_at, "version": payment.version,
    }


def _refund_row(refund: Refund, channel: str | None, tz: ZoneInfo) -> dict:
    return {
        "refund_id": refund.id, "payment_id": refund.payment_id, "order_id": refund.order_id, "channel": channel,
        "amount": refund.amount, "currency": refund.currency, "status": refund.status, "kind": refund.kind,
        "reason": refund.reason, "created_at": refund.created_at, "created_local": local(refund.created_at, tz),
        "succeeded_at": refund.succeeded_at, "succeeded_local": local(refund.succeeded_at, tz),
        "version": refund.version,
    }


def view_rows(session: Session, views: list[PageView], tz: ZoneInfo) -> list[dict]:
    """Views with their product's creator and kind, so the funnel filters without a join."""
    products: dict[str, tuple[str, str]] = {}
    for batch in chunks(sorted({v.product_id for v in views if v.product_id})):
        products.update((pid, (creator, kind)) for pid, creator, kind in session.execute(
            select(Product.id, Product.creator_id, Product.kind).where(Product.id.in_(batch))))
    return [{"view_id": v.id, "kind": v.kind, "product_id": v.product_id, "order_id": v.order_id,
             "viewer_key": v.viewer_key, "device_class": v.device_class, "created_at": v.created_at,
             "created_local": local(v.created_at, tz), "creator_id": products.get(v.product_id, (None, None))[0],
             "product_kind": products.get(v.product_id, (None, None))[1]} for v in views]


def event_row(event: OutboxEvent | tuple, tz: ZoneInfo) -> dict:
    id_, type_, object_type, object_id, sequence, created_at = (
        event if isinstance(event, tuple) else
        (event.id, event.type, event.object_type, event.object_id, event.sequence, event.created_at))
    return {"event_id": id_, "type": type_, "object_type": object_type, "object_id": object_id,
            "sequence": sequence, "created_at": created_at, "created_local": local(created_at, tz)}


def _checkout_devices(session: Session, order_ids: list[str]) -> dict[str, str]:
    """The device class of the latest checkout page view of each order, where the web pages reported one."""
    found: dict[str, tuple[datetime, str]] = {}
    for batch in chunks(order_ids):
        for order_id, device, at in session.execute(
                select(PageView.order_id, PageView.device_class, PageView.created_at)
                .where(PageView.order_id.in_(batch), PageView.kind == "checkout_view")):
            if device != "unknown" and (order_id not in found or at >= found[order_id][0]):
                found[order_id] = (at, device)
    return {order_id: device for order_id, (_, device) in found.items()}


def facts_for(session: Session, *, order_ids: Iterable[str] = (), payment_ids: Iterable[str] = (),
              refund_ids: Iterable[str] = (), entitlement_ids: Iterable[str] = (), tz: ZoneInfo) -> Facts:
    """Current fact rows of these objects. A payment or refund brings its order along (attempt counts,
    refunded amounts and ledger figures live on the order's rows)."""
    facts = Facts()
    refund_ids, entitlement_ids = sorted(set(refund_ids)), sorted(set(entitlement_ids))
    payment_ids, order_ids = set(payment_ids), set(order_ids)
    refunds: list[Refund] = []
    for batch in chunks(refund_ids):
        refunds.extend(session.scalars(select(Refund).where(Refund.id.in_(batch))))
    for refund in refunds:
        payment_ids.add(refund.payment_id)
        order_ids.add(refund.order_id)
    for batch in chunks(sorted(payment_ids)):
        order_ids.update(session.scalars(select(Payment.order_id).where(Payment.id.in_(batch))))
    orders: list[Order] = []
    payments_of: dict[str, list[Payment]] = defaultdict(list)
    for batch in chunks(sorted(order_ids)):
        orders.extend(session.scalars(select(Order).where(Order.id.in_(batch))))
        for payment in session.scalars(select(Payment).where(Payment.order_id.in_(batch))
                                       .order_by(Payment.created_at, Payment.id)):
            payments_of[payment.order_id].append(payment)
    all_payments = [p for ps in payments_of.values() for p in ps]
    ledger = _ledger_figures(session, all_payments)
    for order in sorted(orders, key=lambda o: (o.created_at, o.id)):
        order_row, sales = _order_rows(order, payments_of[order.id], ledger, tz)
        facts.orders.append(order_row)
        facts.sales.extend(sales)
    wanted = [p for p in all_payments if p.id in payment_ids]
    devices = _checkout_devices(session, sorted({p.order_id for p in wanted if p.method not in METHOD_DEVICE}))
    facts.payments.extend(_payment_row(p, devices.get(p.order_id), tz) for p in wanted)
    channels = {p.id: p.channel for p in all_payments}
    facts.refunds.extend(_refund_row(r, channels.get(r.payment_id), tz) for r in refunds)
    facts.entitlements.extend(_entitlement_rows(session, entitlement_ids, tz))
    return facts


def _entitlement_rows(session: Session, entitlement_ids: list[str], tz: ZoneInfo) -> list[dict]:
    rows = []
    for batch in chunks(entitlement_ids):
        found = session.execute(
            select(Entitlement, OrderItem, Product, Order.currency)
            .join(OrderItem, OrderItem.id == Entitlement.order_item_id)
            .join(Product, Product.id == Entitlement.product_id)
            .join(Order, Order.id == Entitlement.order_id)
            .where(Entitlement.id.in_(batch))).all()
        for ent, item, product, currency in found:
            plan = product.plan or {}
            stops = [moment for moment in (ent.ends_at, ent.revoked_at) if moment is not None]
            stop = min(stops) if stops else None
            membership = item.kind == "membership"
            rows.append({
                "entitlement_id": ent.id, "user_id": ent.user_id, "product_id": ent.product_id,
                "creator_id": item.creator_id, "order_id": ent.order_id, "kind": item.kind, "status": ent.status,
                "item_net": item.amount_net, "currency": currency,
                "plan_interval": plan.get("interval", "month") if membership else None,
                "plan_count": plan.get("interval_count", 1) if membership else None,
                "starts_at": ent.starts_at, "ends_at": ent.ends_at, "revoked_at": ent.revoked_at,
                "created_at": ent.created_at, "created_local": local(ent.created_at, tz), "version": ent.version,
                "stop_at": stop, "starts_local": local(ent.starts_at, tz), "stop_local": local(stop, tz),
            })
    return rows


def product_facts(session: Session, *, since: datetime | None) -> list[dict]:
    stmt = select(Product)
    if since is not None:
        stmt = stmt.where(Product.updated_at > since)
    return _product_rows(session.scalars(stmt))


# --- what changed ---------------------------------------------------------------------------------


@dataclass
class Changes:
    events: list[tuple] = field(default_factory=list)
    order_versions: dict[str, tuple[int, datetime]] = field(default_factory=dict)  # id → (version, created_at)
    payment_versions: dict[str, tuple[int, datetime]] = field(default_factory=dict)
    views: list[PageView] = field(default_factory=list)


def slice_end(session: Session, since: datetime, until: datetime, batch: int) -> datetime:
    """Where a slice starting at `since` should end so it holds about `batch` events (or `until`)."""
    nth = session.scalar(select(OutboxEvent.created_at).where(OutboxEvent.created_at > since,
                                                             OutboxEvent.created_at <= until)
                         .order_by(OutboxEvent.created_at).offset(batch).limit(1))
    return nth if nth is not None and nth > since else until


def changes_between(session: Session, since: datetime, until: datetime) -> Changes:
    """Everything that may have changed in (since, until]: events, and orders and payments by their times."""
    found = Changes()
    found.events = [tuple(row) for row in session.execute(
        select(OutboxEvent.id, OutboxEvent.type, OutboxEvent.object_type, OutboxEvent.object_id,
               OutboxEvent.sequence, OutboxEvent.created_at)
        .where(OutboxEvent.created_at > since, OutboxEvent.created_at <= until))]
    for column in (Order.created_at, Order.closed_at):
        for order_id, version, created_at in session.execute(
                select(Order.id, Order.version, Order.created_at).where(column > since, column <= until)):
            found.order_versions[order_id] = (version, created_at)
    for payment_id, version, created_at in session.execute(
            select(Payment.id, Payment.version, Payment.created_at)
            .where(Payment.updated_at > since, Payment.updated_at <= until)):
        found.payment_versions[payment_id] = (version, created_at)
    found.views = list(session.scalars(select(PageView).where(PageView.created_at > since,
                                                              PageView.created_at <= until)))
    return found
