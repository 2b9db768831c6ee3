"""The fraud score: a scikit-learn gradient-boosting model trained on the platform's own labelled
history, versioned in the database, scored in process.

Training replays history through the same feature code as checkout (replay.py), holds out the
latest slice of time, and stores precision, recall and ROC AUC measured on it. The same history and
seed give the same model. A new version starts in shadow (scored and stored, not acted on) unless
it is activated.
"""

from __future__ import annotations

import io
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import joblib
import numpy as np
import sklearn
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import precision_score, recall_score, roc_auc_score
from sqlalchemy import func, select, update

from knowpay.db import Database
from knowpay.domain.errors import InvalidRequest
from knowpay.risk.features import FEATURE_NAMES
from knowpay.risk.models import RiskModel

log = logging.getLogger(__name__)

ALGORITHM = "sklearn.GradientBoostingClassifier"
MODEL_TTL_SECONDS = 30.0
THRESHOLD = 0.5
MIN_CLASS_SAMPLES = 5


class TreeScorer:
    """A fitted binary GradientBoostingClassifier as flat arrays, scoring one row in a few numpy steps.

    The same arithmetic as `predict_proba` (the row is rounded to float32 as the trees compare it,
    then every tree is walked) without its per-call input checks, which cost more than the trees
    themselves at one row. `score` equals `predict_proba(row)[0, 1]` (tests hold it to 1e-9).
    """

    def __init__(self, estimator: GradientBoostingClassifier) -> None:
        if estimator.estimators_.shape[1] != 1:
            raise ValueError("only a binary classifier can be flattened")
        trees = [stage[0].tree_ for stage in estimator.estimators_]
        # Every tree's nodes side by side in one array; a node's children are indexes into it.
        sizes = [t.node_count for t in trees]
        self.roots = np.cumsum([0, *sizes[:-1]]).astype(np.intp)
        self.feature = np.zeros(sum(sizes), dtype=np.intp)
        self.threshold = np.zeros(sum(sizes))
        self.left = np.zeros(sum(sizes), dtype=np.intp)
        self.right = np.zeros(sum(sizes), dtype=np.intp)
        self.value = np.zeros(sum(sizes))
        for root, tree in zip(self.roots, trees, strict=True):
            nodes = slice(root, root + tree.node_count)
            here = root + np.arange(tree.node_count)
            leaf = tree.children_left < 0
            # A leaf points at itself, so walking the deepest tree's depth leaves shallower walks in place.
            self.feature[nodes] = np.where(leaf, 0, tree.feature)
            self.threshold[nodes] = tree.threshold
            self.left[nodes] = np.where(leaf, here, root + tree.children_left)
            self.right[nodes] = np.where(leaf, here, root + tree.children_right)
            self.value[nodes] = tree.value[:, 0, 0]
        self.depth = max(t.max_depth for t in trees)
        self.rate = float(estimator.learning_rate)
        origin = np.zeros((1, estimator.n_features_in_))
        self.init = float(estimator.decision_function(origin)[0]) - self._trees(origin[0])

    def _trees(self, row: np.ndarray) -> float:
        x = row.astype(np.float32).astype(np.float64)
        # Where every node sends this row, decided at once; then each level of every walk is one lookup.
        step = np.where(x[self.feature] <= self.threshold, self.left, self.right)
        node = self.roots
        for _ in range(self.depth):
            node = step[node]
        return self.rate * float(self.value[node].sum())

    def score(self, row: list[float]) -> float:
        raw = self.init + self._trees(np.asarray(row, dtype=np.float64))
        return 1.0 / (1.0 + math.exp(-raw))


def scorer_of(estimator: object):  # type: ignore[no-untyped-def]
    """The fast scorer when the estimator is a binary gradient-boosting model, else predict_proba."""
    if isinstance(estimator, GradientBoostingClassifier):
        try:
            return TreeScorer(estimator).score
        except (ValueError, AttributeError):
            pass

    def score(row: list[float]) -> float:
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            return float(estimator.predict_proba(np.asarray([row], dtype=np.float64))[0, 1])  # type: ignore[attr-defined]

    return score


@dataclass(frozen=True)
class ModelScores:
    active: tuple[int, float] | None = None
    shadows: list[tuple[int, float]] = field(default_factory=list)
    fault: str | None = None


class ModelCache:
    """The active and shadow models of one database, loaded once per version, re-checked every 30 s."""

    def __init__(self, db: Database, ttl: float = MODEL_TTL_SECONDS) -> None:
        self.db = db
        self.ttl = ttl
        self._estimators: dict[int, Callable[[list[float]], float]] = {}
        self._active: int | None = None
        self._shadows: list[int] = []
        self._checked_at = -1e9
        self._broken: str | None = None
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        self._checked_at = -1e9

    def _refresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._checked_at < self.ttl:
                return
            with self.db.transaction(write=False) as session:
                rows = session.execute(select(RiskModel.version, RiskModel.status, RiskModel.feature_names).where(
                    RiskModel.status.in_(("active", "shadow")))).all()
                for version, _, names in rows:
                    if version not in self._estimators:
                        if tuple(names) != FEATURE_NAMES:
                            raise ValueError(f"model v{version} was trained on other features")
                        blob = session.scalar(select(RiskModel.estimator).where(RiskModel.version == version))
                        self._estimators[version] = scorer_of(joblib.load(io.BytesIO(blob)))
            self._broken = None
            self._active = next((v for v, status, _ in rows if status == "active"), None)
            self._shadows = sorted(v for v, status, _ in rows if status == "shadow")
            self._checked_at = time.monotonic()

    def score(self, row: list[float]) -> ModelScores:
        try:
            self._refresh()
        except Exception as exc:  # noqa: BLE001 - without a model the rules decide alone
            # Do not retry a broken load on every request: once per TTL.
            self._broken = f"model: unavailable ({exc.__class__.__name__}: {exc}); rules alone"
            self._checked_at = time.monotonic()
            log.warning("risk %s", self._broken)
        if self._broken:
            return ModelScores(fault=self._broken)
        if self._active is None and not self._shadows:
            return ModelScores()
        try:
            active = (self._active, self._estimators[self._active](row)) if self._active is not None else None
            return ModelScores(active, [(v, self._estimators[v](row)) for v in self._shadows])
        except Exception as exc:  # noqa: BLE001
            log.warning("risk model failed to score (%s: %s); rules alone", exc.__class__.__name__, exc)
            return ModelScores(fault=f"model: scoring failed ({exc.__class__.__name__}: {exc}); rules alone")


@dataclass(frozen=True)
class Training:
    version: int
    status: str
    metrics: dict


def _metrics(labels: np.ndarray, scores: np.ndarray) -> dict:
    predicted = (scores >= THRESHOLD).astype(int)
    return {
        "precision": round(float(precision_score(labels, predicted, zero_division=0)), 4),
        "recall": round(float(recall_score(labels, predicted, zero_division=0)), 4),
        "roc_auc": round(float(roc_auc_score(labels, scores)), 4),
        "threshold": THRESHOLD,
    }


def fit(rows: list[list[float]], labels: list[int], times: list[datetime], *, seed: int,
        test_fraction: float, trees: int = 150) -> tuple[GradientBoostingClassifier, dict]:
    """Train on the earlier part of time, measure on the latest `test_fraction` of it."""
    if not 0 < test_fraction < 1:
        raise InvalidRequest("test_fraction must be between 0 and 1.", code="invalid_parameter",
                             param="test_fraction")
    order = sorted(range(len(rows)), key=lambda i: times[i])
    X = np.asarray([rows[i] for i in order], dtype=np.float64)
    y = np.asarray([labels[i] for i in order], dtype=np.int64)
    cut = round(len(order) * (1 - test_fraction))
    train_y, test_y = y[:cut], y[cut:]
    for name, part in (("training", train_y), ("held-out", test_y)):
        if part.sum() < MIN_CLASS_SAMPLES or (len(part) - part.sum()) < MIN_CLASS_SAMPLES:
            raise InvalidRequest(f"The {name} slice needs at least {MIN_CLASS_SAMPLES} fraudulent and "
                                 f"{MIN_CLASS_SAMPLES} good payments; label more history first.",
                                 code="not_enough_labels")
    estimator = GradientBoostingClassifier(n_estimators=trees, max_depth=3, learning_rate=0.1, subsample=1.0,
                                           random_state=seed)
    estimator.fit(X[:cut], train_y)
    metrics = _metrics(test_y, estimator.predict_proba(X[cut:])[:, 1])
    ordered_times = [times[i] for i in order]
    metrics.update(n_train=int(cut), n_test=int(len(order) - cut), fraud_train=int(train_y.sum()),
                   fraud_test=int(test_y.sum()), train_from=ordered_times[0].isoformat(),
                   test_from=ordered_times[cut].isoformat(), test_to=ordered_times[-1].isoformat())
    return estimator, metrics


def train(ctx, *, seed: int = 0, test_fraction: float = 0.25, activate: bool = False) -> Training:  # type: ignore[no-untyped-def]
    """Replay the labelled history, fit, measure on the held-out time slice, store a new version."""
    from knowpay.risk.replay import replay

    rows, labels, times = [], [], []
    for attempt, signals, row in replay(ctx, with_vectors=True):
        rows.append(row)
        labels.append(int(attempt.fraud))
        times.append(attempt.at)
    if not rows:
        raise InvalidRequest("There is no payment history to train on.", code="not_enough_labels")
    estimator, metrics = fit(rows, labels, times, seed=seed, test_fraction=test_fraction)
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    with ctx.db.transaction() as session:
        version = int(session.scalar(select(func.coalesce(func.max(RiskModel.version), 0))) or 0) + 1
        status = "active" if activate else "shadow"
        if activate:
            session.execute(update(RiskModel).where(RiskModel.status == "active").values(status="retired"))
        session.add(RiskModel(version=version, status=status, algorithm=ALGORITHM, feature_names=list(FEATURE_NAMES),
                              params={"seed": seed, "test_fraction": test_fraction, "n_estimators": 150,
                                      "max_depth": 3, "learning_rate": 0.1, "sklearn": sklearn.__version__},
                              metrics=metrics, estimator=buffer.getvalue(), trained_at=ctx.clock.now()))
    return Training(version, status, metrics)


def set_status(ctx, version: int, status: str) -> RiskModel:  # type: ignore[no-untyped-def]
    """active (the previous active one retires), shadow or retired."""
    from knowpay.domain.errors import NotFound

    if status not in ("active", "shadow", "retired"):
        raise InvalidRequest("status must be active, shadow or retired.", code="invalid_parameter", param="status")
    with ctx.db.transaction() as session:
        model = session.get(RiskModel, version)
        if model is None:
            raise NotFound(f"No model version {version}.", param="version")
        if status == "active":
            session.execute(update(RiskModel).where(RiskModel.status == "active", RiskModel.version != version)
                            .values(status="retired"))
        model.status = status
        session.flush()
        return model
