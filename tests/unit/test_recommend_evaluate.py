"""`evaluate` on generated histories: with planted co-purchase structure it beats popularity."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from knowpay.recommend.evaluate import Purchase, evaluate

KINDS = ("course", "ebook", "audio", "video", "membership", "consulting")
START = datetime(2026, 1, 1)


def planted_history(*, buyers: int = 400, clusters: int = 12, size: int = 5, seed: int = 7) -> list[Purchase]:
    """Products in clusters of `size` that go together; each buyer keeps to one cluster, buying three or
    four of it over time, and half of them also buy one of a few bestsellers that everybody buys."""
    rng = random.Random(seed)
    kind_of = {}
    for c in range(clusters):
        for i in range(size):
            kind_of[f"prd_c{c:02d}_{i}"] = KINDS[(c + i) % len(KINDS)]
    bestsellers = [f"prd_best_{i}" for i in range(3)]
    kind_of.update({p: "course" for p in bestsellers})
    # Some clusters sell far more than others, so popularity has something to find.
    weights = [1 / (c + 1) for c in range(clusters)]
    history = []
    for b in range(buyers):
        cluster = rng.choices(range(clusters), weights)[0]
        picks = rng.sample([f"prd_c{cluster:02d}_{i}" for i in range(size)], rng.choice((3, 4)))
        if rng.random() < 0.5:
            picks.insert(rng.randrange(len(picks) + 1), rng.choice(bestsellers))
        at = START + timedelta(hours=rng.randrange(24 * 60))
        for product in picks:
            at += timedelta(days=rng.uniform(1, 20))
            history.append(Purchase(f"usr_{b:04d}", product, kind_of[product], at))
    return history


def test_with_planted_co_purchases_the_model_beats_popularity_on_hit_rate_and_coverage():
    result = evaluate(planted_history(), k=10)
    assert result.model.buyers > 50
    assert result.model.hit_rate > result.baseline.hit_rate + 0.2
    assert result.model.coverage > result.baseline.coverage
    assert result.train + result.test == len(planted_history())


def test_the_split_is_by_time_and_only_new_products_after_it_count():
    history = [
        Purchase("usr_a", "p1", "course", START),
        Purchase("usr_b", "p1", "course", START + timedelta(days=1)),
        Purchase("usr_b", "p2", "course", START + timedelta(days=2)),
        Purchase("usr_c", "p1", "course", START + timedelta(days=3)),
        Purchase("usr_a", "p2", "course", START + timedelta(days=4)),  # after the split: a hit for a
    ]
    result = evaluate(history, k=1, test_share=0.2)
    assert result.cutoff == START + timedelta(days=4)
    assert (result.train, result.test) == (4, 1)
    assert (result.model.hits, result.model.buyers) == (1, 1)  # a holds p1; b bought p1 then p2
    assert (result.baseline.hits, result.baseline.buyers) == (1, 1)  # p2 is also the only other product


def test_a_history_too_short_to_split_says_so():
    assert evaluate([], k=10).lines() == [("not enough history to evaluate: it needs purchases on both sides of "
                                          "a split")]
    same_moment = [Purchase("usr_a", "p1", "course", START), Purchase("usr_b", "p1", "course", START)]
    assert evaluate(same_moment).cutoff is None


def test_the_report_prints_both_rankings_side_by_side():
    lines = evaluate(planted_history(buyers=120), k=10).lines()
    assert lines[0].startswith("split at ")
    assert "hit rate@10" in lines[2] and "coverage" in lines[2]
    assert lines[3].startswith("co-purchase") and lines[4].startswith("popularity")
