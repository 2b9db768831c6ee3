"""The model: fitting on the earlier slice of time, reproducible with a seed, and the fast scorer equal
to scikit-learn's predict_proba."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import numpy as np
import pytest

from knowpay.domain.errors import InvalidRequest
from knowpay.risk.model import TreeScorer, fit

START = datetime(2026, 10, 1)


def history(n: int = 600, seed: int = 0):
    rng = random.Random(seed)
    rows, labels, times = [], [], []
    for i in range(n):
        fraud = rng.random() < 0.15
        rows.append([rng.gauss(3 if fraud else 1, 1), rng.random(), float(rng.randint(0, 9)), rng.gauss(0, 1)])
        labels.append(int(fraud))
        times.append(START + timedelta(minutes=7 * i + rng.random()))
    return rows, labels, times


def test_the_same_history_and_seed_give_the_same_model_measured_on_the_latest_slice():
    rows, labels, times = history()
    shuffled = list(zip(rows, labels, times, strict=True))
    random.Random(5).shuffle(shuffled)  # the order rows arrive in does not matter, their times do
    one, m1 = fit(rows, labels, times, seed=3, test_fraction=0.25, trees=40)
    two, m2 = fit(*map(list, zip(*shuffled, strict=True)), seed=3, test_fraction=0.25, trees=40)
    assert m1 == m2
    assert np.array_equal(one.predict_proba(np.asarray(rows)), two.predict_proba(np.asarray(rows)))
    assert (m1["n_train"], m1["n_test"]) == (450, 150)
    assert m1["test_from"] == sorted(times)[450].isoformat()
    assert 0.5 < m1["roc_auc"] <= 1 and 0 <= m1["precision"] <= 1 and 0 <= m1["recall"] <= 1


def test_training_without_enough_labels_in_the_held_out_slice_is_refused():
    rows, labels, times = history()
    late = sorted(times)[400]
    labels = [0 if at >= late else label for label, at in zip(labels, times, strict=True)]
    with pytest.raises(InvalidRequest) as refused:
        fit(rows, labels, times, seed=0, test_fraction=0.25)
    assert refused.value.code == "not_enough_labels"


def test_the_flattened_trees_score_exactly_like_predict_proba():
    rows, labels, times = history(500, seed=2)
    estimator, _ = fit(rows, labels, times, seed=1, test_fraction=0.25, trees=60)
    scorer = TreeScorer(estimator)
    probe = [[random.Random(i).uniform(-3, 6) for _ in range(4)] for i in range(300)] + rows[:100]
    expected = estimator.predict_proba(np.asarray(probe))[:, 1]
    assert np.allclose([scorer.score(row) for row in probe], expected, rtol=0, atol=1e-9)
