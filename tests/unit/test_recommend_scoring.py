"""Ranking rules on hand-made histories whose answers can be worked out on paper."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from knowpay.recommend import scoring


def counts(baskets: list[list[str]]) -> tuple[dict[str, Counter], Counter]:
    """Co-purchase and buyer counts as the refresh keeps them."""
    co: dict[str, Counter] = {}
    buyers: Counter = Counter()
    for basket in baskets:
        buyers.update(set(basket))
        for a, b in scoring.basket_pairs(basket):
            co.setdefault(a, Counter())[b] += 1
    return co, buyers


# A B twice, A C once, D alone: A's buyers also bought B (2 of 3) before C (1 of 3).
HISTORY = [["A", "B"], ["A", "B"], ["A", "C"], ["D"]]


def test_similarity_is_cosine_shrunk_while_evidence_is_thin():
    assert scoring.similarity(2, 3, 2) == pytest.approx(2 / math.sqrt(6) * 2 / 4)
    assert scoring.similarity(1, 3, 1) == pytest.approx(1 / math.sqrt(3) * 1 / 3)
    assert scoring.similarity(0, 3, 1) == 0.0
    # the same share of buyers in common counts for more with more buyers behind it
    assert scoring.similarity(20, 30, 20) > scoring.similarity(2, 3, 2)


def test_buyers_of_a_also_bought_b_then_c():
    co, buyers = counts(HISTORY)
    scores = scoring.similar_scores("A", co["A"], buyers)
    assert scoring.best(scores, buyers=buyers, fallback=[], exclude={"A"}, limit=10) == ["B", "C"]


def test_a_popular_product_is_weighed_against_its_popularity():
    # P is in every basket; Q goes only with X. For X, Q is the better companion though P co-occurs as often.
    co, buyers = counts([["X", "P", "Q"], ["X", "P", "Q"], ["P", "A"], ["P", "B"], ["P", "C"], ["P", "D"]])
    scores = scoring.similar_scores("X", co["X"], buyers)
    assert co["X"]["P"] == co["X"]["Q"] == 2
    assert scoring.best(scores, buyers=buyers, fallback=[], exclude={"X"}, limit=2) == ["Q", "P"]


def test_for_a_buyer_sums_similarity_over_their_holdings_and_skips_what_they_own():
    co, buyers = counts(HISTORY + [["C", "E"]] * 3)
    scores = scoring.for_buyer_scores(["A", "C"], co, buyers)
    # B: 2 of A's 3 buyers → 2/√6 · 2/4 ≈ 0.41; E: 3 of C's 4 buyers → 3/√12 · 3/5 ≈ 0.52
    assert scores == pytest.approx({"B": 2 / math.sqrt(6) / 2, "E": 3 / math.sqrt(12) * 3 / 5,
                                    "C": 1 / math.sqrt(12) / 3, "A": 1 / math.sqrt(12) / 3})
    ranked = scoring.best(scores, buyers=buyers, fallback=["D"], exclude={"A", "C"}, limit=10)
    assert ranked == ["E", "B", "D"]


def test_the_fallback_fills_up_without_repeats_and_exclusions_hold():
    ranked = scoring.best({"B": 0.5}, buyers={}, fallback=["A", "B", "C", "D"], exclude={"A"}, limit=3)
    assert ranked == ["B", "C", "D"]


def test_a_cold_start_takes_turns_by_kind():
    popular = ["c1", "c2", "c3", "e1", "a1", "e2"]
    kinds = {"c1": "course", "c2": "course", "c3": "course", "e1": "ebook", "e2": "ebook", "a1": "audio"}
    assert scoring.interleave_kinds(popular, kinds) == ["c1", "e1", "a1", "c2", "e2", "c3"]


def test_only_the_most_recent_holdings_of_a_large_basket_form_pairs():
    basket = [f"p{i:03d}" for i in range(scoring.MAX_BASKET + 20)]
    pairs = scoring.basket_pairs(basket)
    assert len(pairs) == scoring.MAX_BASKET * (scoring.MAX_BASKET - 1)
    assert not any("p119" in pair for pair in pairs)
