"""Recommendations from payment data.

`refresh_recommendations` keeps per-buyer holdings and co-purchase counts in step with the orders:
it recounts only the buyers whose orders were paid or fully refunded since the last run (with an
overlap, since recounting a buyer twice is harmless), so the worker can run it every half minute.
The readers rank from those counts with `knowpay.recommend.scoring` and never offer a product the
viewer already owns — ownership is read live, not from the counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from itertools import chain

from sqlalchemy import delete, func, select, union
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from knowpay.access.models import Entitlement
from knowpay.catalog.models import KINDS, Product
from knowpay.context import Context
from knowpay.domain.states import OrderStatus, ProductStatus
from knowpay.orders.models import Order, OrderItem
from knowpay.recommend import scoring
from knowpay.recommend.models import RecommendHolding, RecommendItem, RecommendPair, RecommendState
from knowpay.refunds.models import Refund

# Coin packs are a top-up, not a taste: they neither count as a co-purchase nor get recommended.
RECOMMENDABLE = tuple(kind for kind in KINDS if kind != "coin_pack")
HOLDING = (OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED)
OWNED = (OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED)
# A payment committed a little after a refresh read the orders still gets counted by the next one.
OVERLAP = timedelta(minutes=5)
STATE = "co_purchase"
CHUNK = 500
DEFAULT_LIMIT = 10


def _chunks(items: list, size: int = CHUNK) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# Refresh ------------------------------------------------------------------------------------------

def _lock_state(session: Session) -> RecommendState:
    """The refresh's state row, locked: refreshes anywhere take turns, so no buyer is counted twice at once."""
    state = session.get(RecommendState, STATE, with_for_update=True)
    if state is None:
        try:
            with session.begin_nested():
                session.add(RecommendState(name=STATE, refreshed_until=None, buyers_refreshed=0))
        except IntegrityError:
            pass  # another refresh made it first
        state = session.get(RecommendState, STATE, with_for_update=True, populate_existing=True)
    return state


def _dirty_buyers(session: Session, since: datetime | None) -> list[str]:
    """Buyers whose holdings may have changed since `since` (every buyer when None)."""
    if since is None:
        query = union(select(Order.buyer_id).where(Order.status.in_(HOLDING)),
                      select(RecommendHolding.buyer_id))
    else:
        query = union(select(Order.buyer_id).where(Order.paid_at >= since),
                      select(Order.buyer_id).join(Refund, Refund.order_id == Order.id)
                      .where(Refund.succeeded_at >= since))
    return sorted(session.scalars(query))


def _holdings_now(session: Session, buyer_ids: list[str]) -> dict[str, dict[str, datetime]]:
    """What the orders say each buyer holds: product → when first paid."""
    rows = session.execute(
        select(Order.buyer_id, OrderItem.product_id, func.min(Order.paid_at))
        .join(OrderItem, OrderItem.order_id == Order.id)
        .where(Order.buyer_id.in_(buyer_ids), Order.status.in_(HOLDING), OrderItem.kind.in_(RECOMMENDABLE))
        .group_by(Order.buyer_id, OrderItem.product_id))
    held: dict[str, dict[str, datetime]] = {}
    for buyer_id, product_id, since in rows:
        held.setdefault(buyer_id, {})[product_id] = since
    return held


def _holdings_counted(session: Session, buyer_ids: list[str]) -> dict[str, dict[str, datetime]]:
    held: dict[str, dict[str, datetime]] = {}
    for row in session.scalars(select(RecommendHolding).where(RecommendHolding.buyer_id.in_(buyer_ids))):
        held.setdefault(row.buyer_id, {})[row.product_id] = row.since
    return held


def recent_first(held: dict[str, datetime]) -> list[str]:
    return sorted(held, key=lambda product: (held[product], product), reverse=True)


def _upsert(session: Session, model, rows: list[dict], keys: list[str]) -> None:
    """Add each row's `buyers` to the stored count (inserting the row when new)."""
    if not rows:
        return
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = insert(model)
    stmt = stmt.on_conflict_do_update(index_elements=keys, set_={"buyers": model.buyers + stmt.excluded.buyers})
    for chunk in _chunks(rows):
        session.execute(stmt, chunk)


def _add_counts(session: Session, pairs: Counter, items: Counter) -> None:
    kinds: dict[str, str] = {}
    for chunk in _chunks(sorted(items)):
        kinds.update(session.execute(select(Product.id, Product.kind).where(Product.id.in_(chunk))).all())
    _upsert(session, RecommendItem, [{"product_id": p, "kind": kinds[p], "buyers": n}
                                     for p, n in items.items() if n], ["product_id"])
    _upsert(session, RecommendPair, [{"product_id": a, "other_id": b, "buyers": n}
                                     for (a, b), n in pairs.items() if n], ["product_id", "other_id"])
    for chunk in _chunks(sorted({a for a, _ in pairs})):
        session.execute(delete(RecommendPair).where(RecommendPair.product_id.in_(chunk), RecommendPair.buyers <= 0))
    for chunk in _chunks(sorted(items)):
        session.execute(delete(RecommendItem).where(RecommendItem.product_id.in_(chunk), RecommendItem.buyers <= 0))


def _recount(session: Session, buyer_ids: list[str]) -> None:
    """Replace these buyers' counted holdings by what the orders say, moving the counts by the difference."""
    before_all, after_all = _holdings_counted(session, buyer_ids), _holdings_now(session, buyer_ids)
    pairs: Counter = Counter()
    items: Counter = Counter()
    for buyer_id in buyer_ids:
        before, after = before_all.get(buyer_id, {}), after_all.get(buyer_id, {})
        if before == after:
            continue
        items.update(dict.fromkeys(after.keys() - before.keys(), 1))
        items.subtract(dict.fromkeys(before.keys() - after.keys(), 1))
        pairs_before = scoring.basket_pairs(recent_first(before))
        pairs_after = scoring.basket_pairs(recent_first(after))
        pairs.update(dict.fromkeys(pairs_after - pairs_before, 1))
        pairs.subtract(dict.fromkeys(pairs_before - pairs_after, 1))
        session.execute(delete(RecommendHolding).where(RecommendHolding.buyer_id == buyer_id))
        session.add_all(RecommendHolding(buyer_id=buyer_id, product_id=product_id, since=since)
                        for product_id, since in after.items())
    session.flush()
    _add_counts(session, pairs, items)


def refresh_recommendations(ctx: Context, *, full: bool = False) -> int:
    """Count what was paid or refunded since the last refresh (everything when `full`); returns the
    number of buyers recounted."""
    started = ctx.clock.now()
    with ctx.db.transaction() as session:
        state = _lock_state(session)
        since = None if full or state.refreshed_until is None else state.refreshed_until - OVERLAP
        buyers = _dirty_buyers(session, since)
    for chunk in _chunks(buyers):
        with ctx.db.transaction() as session:
            _lock_state(session)
            _recount(session, chunk)
    with ctx.db.transaction() as session:
        state = _lock_state(session)
        if state.refreshed_until is None or state.refreshed_until < started:
            state.refreshed_until = started
        state.buyers_refreshed = len(buyers)
    return len(buyers)


# Reading -----------------------------------------------------------------------------------------

def owned_products(session: Session, buyer_id: str) -> set[str]:
    """Every product the buyer has bought (refunded too) or been given access to, read live."""
    bought = select(OrderItem.product_id).join(Order, Order.id == OrderItem.order_id).where(
        Order.buyer_id == buyer_id, Order.status.in_(OWNED))
    granted = select(Entitlement.product_id).where(Entitlement.user_id == buyer_id)
    return set(session.scalars(union(bought, granted)))


def _buyers(session: Session, product_ids: Iterable[str]) -> dict[str, int]:
    ids = sorted(set(product_ids))
    counts: dict[str, int] = {}
    for chunk in _chunks(ids):
        counts.update(session.execute(select(RecommendItem.product_id, RecommendItem.buyers)
                                      .where(RecommendItem.product_id.in_(chunk))).all())
    return counts


def _neighbours(session: Session, product_id: str) -> dict[str, int]:
    return dict(session.execute(select(RecommendPair.other_id, RecommendPair.buyers).where(
        RecommendPair.product_id == product_id).order_by(RecommendPair.buyers.desc(), RecommendPair.other_id)
        .limit(scoring.MAX_NEIGHBOURS)).all())


def _on_sale(session: Session, product_ids: Iterable[str]) -> set[str]:
    ids = sorted(set(product_ids))
    found: set[str] = set()
    for chunk in _chunks(ids):
        found.update(session.scalars(select(Product.id).where(
            Product.id.in_(chunk), Product.status == ProductStatus.PUBLISHED, Product.kind.in_(RECOMMENDABLE))))
    return found


def _popular(session: Session, *, limit: int, kind: str | None = None) -> list[tuple[str, str]]:
    """(product, kind) of the most held products on sale, most held first."""
    stmt = (select(RecommendItem.product_id, Product.kind).join(Product, Product.id == RecommendItem.product_id)
            .where(Product.status == ProductStatus.PUBLISHED, Product.kind.in_(RECOMMENDABLE)))
    if kind:
        stmt = stmt.where(Product.kind == kind)
    return [(product_id, kind) for product_id, kind in session.execute(
        stmt.order_by(RecommendItem.buyers.desc(), RecommendItem.product_id).limit(limit))]


def _newest(session: Session, *, limit: int, kind: str | None = None) -> list[str]:
    """Products on sale, newest first: what is left to show when nothing has sold yet."""
    stmt = select(Product.id).where(Product.status == ProductStatus.PUBLISHED, Product.kind.in_(RECOMMENDABLE))
    if kind:
        stmt = stmt.where(Product.kind == kind)
    return list(session.scalars(stmt.order_by(Product.created_at.desc(), Product.id.desc()).limit(limit)))


def _load(session: Session, product_ids: list[str]) -> list[Product]:
    found = {p.id: p for p in session.scalars(select(Product).where(Product.id.in_(product_ids)))}
    return [found[pid] for pid in product_ids if pid in found]


def popular_for_cold_start(session: Session, *, limit: int, exclude: set[str]) -> list[str]:
    """Popular products taking turns by kind, then the newest, for a viewer with no history."""
    pad = limit + len(exclude)
    popular = _popular(session, limit=pad * 2)
    return scoring.interleave_kinds([p for p, _ in popular], dict(popular)) + _newest(session, limit=pad)


def similar_products(session: Session, product: Product, *, viewer_id: str | None,
                     limit: int = DEFAULT_LIMIT) -> list[Product]:
    """Buyers of `product` also bought: co-purchases weighed against popularity, then popular
    products of the same kind, then of any kind."""
    exclude = {product.id} | (owned_products(session, viewer_id) if viewer_id else set())
    co_counts = _neighbours(session, product.id)
    buyers = _buyers(session, [product.id, *co_counts])
    on_sale = _on_sale(session, co_counts)
    scores = {p: s for p, s in scoring.similar_scores(product.id, co_counts, buyers).items() if p in on_sale}
    pad = limit + len(exclude)
    fallback = chain((p for p, _ in _popular(session, limit=pad, kind=product.kind)),
                     (p for p, _ in _popular(session, limit=pad)), _newest(session, limit=pad, kind=product.kind),
                     _newest(session, limit=pad))
    return _load(session, scoring.best(scores, buyers=buyers, fallback=fallback, exclude=exclude, limit=limit))


def for_buyer(session: Session, buyer_id: str, *, limit: int = DEFAULT_LIMIT) -> list[Product]:
    """For you: products similar to what the buyer holds, most recent holdings first; a buyer
    with no history gets popular products of every kind."""
    exclude = owned_products(session, buyer_id)
    held = {row.product_id: row.since for row in session.scalars(
        select(RecommendHolding).where(RecommendHolding.buyer_id == buyer_id))}
    history = recent_first(held)[:scoring.MAX_HISTORY]
    co_counts_of = {product_id: _neighbours(session, product_id) for product_id in history}
    buyers = _buyers(session, chain(history, *(c.keys() for c in co_counts_of.values())))
    scores = scoring.for_buyer_scores(history, co_counts_of, buyers)
    on_sale = _on_sale(session, scores)
    scores = {p: s for p, s in scores.items() if p in on_sale}
    fallback = popular_for_cold_start(session, limit=limit, exclude=exclude)
    return _load(session, scoring.best(scores, buyers=buyers, fallback=fallback, exclude=exclude, limit=limit))
