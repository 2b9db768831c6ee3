"""The ranking rules, with no I/O: the service feeds them counts from the database, `evaluate` from
a slice of history, so what is measured is what is served.

Two products are similar when many of the same buyers hold both, weighed against how many
buyers each has on its own (cosine), and shrunk while the evidence is a buyer or two:

    similarity(a, b) = co(a, b) / sqrt(buyers(a) * buyers(b)) * co(a, b) / (co(a, b) + SHRINK)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain

SHRINK = 2.0
# Only a buyer's most recent holdings form pairs, so one collector cannot cost a quadratic refresh.
MAX_BASKET = 100
# "For you" looks at this many of the buyer's most recent holdings, and this many neighbours of each.
MAX_HISTORY = 20
MAX_NEIGHBOURS = 100


def similarity(co: int, buyers_a: int, buyers_b: int) -> float:
    if co <= 0 or buyers_a <= 0 or buyers_b <= 0:
        return 0.0
    return co / math.sqrt(buyers_a * buyers_b) * co / (co + SHRINK)


def basket_pairs(basket: Sequence[str]) -> set[tuple[str, str]]:
    """Every ordered pair of distinct products among the basket's first MAX_BASKET (most recent first)."""
    kept = list(dict.fromkeys(basket))[:MAX_BASKET]
    return {(a, b) for a in kept for b in kept if a != b}


def similar_scores(product: str, co_counts: Mapping[str, int], buyers: Mapping[str, int]) -> dict[str, float]:
    """Products bought by buyers of `product`, scored by similarity."""
    mine = buyers.get(product, 0)
    return {other: similarity(co, mine, buyers.get(other, 0)) for other, co in co_counts.items() if other != product}


def for_buyer_scores(holdings: Sequence[str], co_counts_of: Mapping[str, Mapping[str, int]],
                     buyers: Mapping[str, int]) -> dict[str, float]:
    """Products scored by their summed similarity to what the buyer holds (most recent first)."""
    scores: dict[str, float] = {}
    for held in holdings[:MAX_HISTORY]:
        for other, score in similar_scores(held, co_counts_of.get(held, {}), buyers).items():
            scores[other] = scores.get(other, 0.0) + score
    return scores


def best(scores: Mapping[str, float], *, buyers: Mapping[str, int], fallback: Iterable[str],
         exclude: set[str], limit: int) -> list[str]:
    """The `limit` best by score (ties: the more popular, then by id), then the fallback, skipping `exclude`."""
    ranked = sorted((p for p, s in scores.items() if s > 0), key=lambda p: (-scores[p], -buyers.get(p, 0), p))
    chosen: list[str] = []
    seen = set(exclude)
    for product in chain(ranked, fallback):
        if product not in seen:
            chosen.append(product)
            seen.add(product)
            if len(chosen) == limit:
                break
    return chosen


def by_popularity(buyers: Mapping[str, int]) -> list[str]:
    return sorted((p for p, n in buyers.items() if n > 0), key=lambda p: (-buyers[p], p))


def interleave_kinds(popular: Sequence[str], kind_of: Mapping[str, str]) -> list[str]:
    """Popular products taking turns by kind (the kinds in order of their best product): a cold start
    shows a course, an e-book, an audio... rather than ten of whatever kind sells most."""
    queues: dict[str, list[str]] = {}
    for product in popular:
        queues.setdefault(kind_of.get(product, ""), []).append(product)
    out: list[str] = []
    while any(queues.values()):
        for queue in queues.values():
            if queue:
                out.append(queue.pop(0))
    return out
