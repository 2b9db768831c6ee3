"""`knowpay recommend evaluate`: split the purchase history by time, rank for each buyer from the
earlier part with the same rules the service uses, and count how often what they bought later is
in the top k — beside plain popularity as the baseline.

hit rate@k: the share of buyers (with a purchase before the split and a new product after it) whose
top k held at least one of the products they went on to buy. Coverage: the share of the catalogue
that appears in anybody's top k.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from knowpay.catalog.models import Product
from knowpay.domain.states import ProductStatus
from knowpay.orders.models import Order, OrderItem
from knowpay.recommend import scoring
from knowpay.recommend.service import HOLDING, RECOMMENDABLE, recent_first


@dataclass(frozen=True)
class Purchase:
    buyer_id: str
    product_id: str
    kind: str
    at: datetime


@dataclass(frozen=True)
class Score:
    name: str
    hits: int
    buyers: int
    recommended: int  # distinct products shown to anybody
    catalogue: int

    @property
    def hit_rate(self) -> float:
        return self.hits / self.buyers if self.buyers else 0.0

    @property
    def coverage(self) -> float:
        return self.recommended / self.catalogue if self.catalogue else 0.0


@dataclass(frozen=True)
class Evaluation:
    k: int
    cutoff: datetime | None
    train: int
    test: int
    model: Score
    baseline: Score

    def lines(self) -> list[str]:
        if self.cutoff is None:
            return ["not enough history to evaluate: it needs purchases on both sides of a split"]
        return [
            f"split at {self.cutoff:%Y-%m-%d %H:%M:%S} UTC: {self.train} purchases before, {self.test} after",
            (f"{self.model.buyers} buyers bought something new after the split; catalogue of "
             f"{self.model.catalogue} products"),
            f"{'':<14}{'hit rate@' + str(self.k):>14}{'coverage':>11}",
            *(f"{s.name:<14}{s.hit_rate:>14.3f}{s.coverage:>11.3f}" for s in (self.model, self.baseline)),
        ]


def load_history(session: Session) -> list[Purchase]:
    """Each product each buyer holds (paid, not fully refunded), with when they first paid for it."""
    rows = session.execute(
        select(Order.buyer_id, OrderItem.product_id, OrderItem.kind, func.min(Order.paid_at))
        .join(OrderItem, OrderItem.order_id == Order.id)
        .where(Order.status.in_(HOLDING), OrderItem.kind.in_(RECOMMENDABLE))
        .group_by(Order.buyer_id, OrderItem.product_id, OrderItem.kind))
    return [Purchase(*row) for row in rows]


def load_catalogue(session: Session) -> set[str]:
    return set(session.scalars(select(Product.id).where(Product.status == ProductStatus.PUBLISHED,
                                                        Product.kind.in_(RECOMMENDABLE))))


def _top(co_counts: Counter) -> dict[str, int]:
    """The neighbours the service reads: the most co-purchased first, ties by id."""
    ranked = sorted(co_counts.items(), key=lambda item: (-item[1], item[0]))
    return dict(ranked[:scoring.MAX_NEIGHBOURS])


def evaluate(history: Iterable[Purchase], *, k: int = 10, test_share: float = 0.2,
             catalogue: set[str] | None = None) -> Evaluation:
    """Rank from the purchases before the split; score against the new products bought after it."""
    ordered = sorted(history, key=lambda p: (p.at, p.buyer_id, p.product_id))
    catalogue = set(catalogue or ()) | {p.product_id for p in ordered}
    empty = Score("", 0, 0, 0, len(catalogue))
    cut = min(len(ordered) - 1, max(1, round(len(ordered) * (1 - test_share))))
    cutoff = ordered[cut].at if len(ordered) >= 2 else None
    if cutoff is None or cutoff == ordered[0].at:
        return Evaluation(k, None, len(ordered), 0, empty, empty)
    train = [p for p in ordered if p.at < cutoff]
    test = [p for p in ordered if p.at >= cutoff]

    held: dict[str, dict[str, datetime]] = {}
    for purchase in train:
        held.setdefault(purchase.buyer_id, {})[purchase.product_id] = purchase.at
    buyers: Counter[str] = Counter(p.product_id for p in train)
    co: dict[str, Counter] = {}
    for basket in held.values():
        for a, b in scoring.basket_pairs(recent_first(basket)):
            co.setdefault(a, Counter())[b] += 1
    popular = scoring.by_popularity(buyers)
    cold_start = scoring.interleave_kinds(popular, {p.product_id: p.kind for p in ordered})

    wanted: dict[str, set[str]] = {}
    for purchase in test:
        if purchase.buyer_id in held and purchase.product_id not in held[purchase.buyer_id]:
            wanted.setdefault(purchase.buyer_id, set()).add(purchase.product_id)
    hits = {"model": 0, "baseline": 0}
    shown: dict[str, set[str]] = {"model": set(), "baseline": set()}
    for buyer_id, bought_later in sorted(wanted.items()):
        owned = set(held[buyer_id])
        recent = recent_first(held[buyer_id])[:scoring.MAX_HISTORY]
        scores = scoring.for_buyer_scores(recent, {h: _top(co.get(h, Counter())) for h in recent}, buyers)
        ranked = {
            "model": scoring.best(scores, buyers=buyers, fallback=cold_start, exclude=owned, limit=k),
            "baseline": scoring.best({}, buyers=buyers, fallback=popular, exclude=owned, limit=k),
        }
        for name, top in ranked.items():
            hits[name] += bool(bought_later & set(top))
            shown[name].update(top)
    scores_out = {name: Score("co-purchase" if name == "model" else "popularity", hits[name], len(wanted),
                              len(shown[name]), len(catalogue)) for name in hits}
    return Evaluation(k, cutoff, len(train), len(test), scores_out["model"], scores_out["baseline"])
