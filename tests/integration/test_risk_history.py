"""Simulated history → training (reproducible, held-out time slice), scoring, back-tests and the CLI.

These run on one simulated SQLite history (made once for the module, copied per test)."""

from __future__ import annotations

import io
import shutil
import sqlite3
from datetime import datetime, timedelta

import joblib
import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from knowpay.cli import main
from knowpay.config import load_settings
from knowpay.context import build_context
from knowpay.domain.clock import FixedClock
from knowpay.risk.backtest import backtest
from knowpay.risk.engine import engine_for
from knowpay.risk.model import set_status, train
from knowpay.risk.models import RiskLabel, RiskModel
from knowpay.risk.replay import replay
from knowpay.risk.simulate import build_history, simulate
from knowpay.risk.subject import Subject

END = datetime(2026, 11, 25, 4, 0, 0)
SINCE = datetime(2026, 11, 5)


@pytest.fixture(scope="module")
def simulated_template(tmp_path_factory, sqlite_template):
    path = tmp_path_factory.mktemp("simulated") / "history.sqlite3"
    shutil.copyfile(sqlite_template, path)
    url = f"sqlite:///{path}"
    ctx = build_context(load_settings({"KNOWPAY_DATABASE_URL": url, "KNOWPAY_INSTANCE_PATH": str(path.parent)}),
                        clock=FixedClock(END))
    summary = simulate(ctx, buyers=60, days=16, seed=3, end=END)
    ctx.db.dispose()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path, summary


@pytest.fixture
def database_url(simulated_template, tmp_path):
    """Overrides the two-backend database: a copy of the simulated history."""
    path = tmp_path / "knowpay.sqlite3"
    shutil.copyfile(simulated_template[0], path)
    return f"sqlite:///{path}"


@pytest.fixture
def history_ctx(ctx):
    ctx.clock = FixedClock(END)
    return ctx


def test_the_simulation_is_the_same_for_the_same_seed_and_holds_every_kind_of_actor(simulated_template):
    _, summary = simulated_template
    assert set(summary.payments) == {"normal", "tester", "abuser", "farm"}
    assert summary.succeeded and summary.failed and summary.refunds
    assert summary.fraud_labels == sum(n for actor, n in summary.payments.items() if actor != "normal")
    one, two = (build_history(buyers=60, days=16, seed=3, end=END) for _ in range(2))
    strip = lambda h: [(p.at, p.actor, p.products, p.channel, p.outcome, p.ip, p.device, p.coupon)
                       for p in h.purchases]
    assert strip(one) == strip(two)
    assert strip(build_history(buyers=60, days=16, seed=4, end=END)) != strip(one)


def test_training_is_reproducible_with_a_seed_and_measured_on_the_latest_slice_of_time(history_ctx):
    first = train(history_ctx, seed=1)
    second = train(history_ctx, seed=1)
    assert (first.version, second.version, first.status) == (1, 2, "shadow")
    assert first.metrics == second.metrics
    m = first.metrics
    assert {"precision", "recall", "roc_auc"} <= set(m) and m["roc_auc"] > 0.9
    assert m["fraud_test"] >= 5 and m["n_train"] > m["n_test"]
    rows = [(attempt.at, row) for attempt, _, row in replay(history_ctx, with_vectors=True)]
    cut = sorted(at for at, _ in rows)[m["n_train"]]
    assert cut.isoformat() == m["test_from"]  # held out: everything from that moment on
    with history_ctx.db.transaction(write=False) as session:
        stored = {v: joblib.load(io.BytesIO(blob)) for v, blob in session.execute(
            select(RiskModel.version, RiskModel.estimator))}
        assert session.get(RiskModel, 1).metrics == m
    matrix = np.asarray([row for _, row in rows])
    assert np.array_equal(stored[1].predict_proba(matrix), stored[2].predict_proba(matrix))


def test_the_active_model_scores_checkout_and_a_shadow_version_is_scored_beside_it(history_ctx):
    train(history_ctx, seed=1)
    train(history_ctx, seed=2)
    set_status(history_ctx, 1, "active")
    engine = engine_for(history_ctx)
    engine.models.invalidate()
    tester = Subject(kind="payment", user_id="usr_new", email="x@mailinator.com",
                     account_created_at=END - timedelta(minutes=10), amount=990, currency="cny", channel="stripe",
                     ip="45.1.2.3", device_id="dev-burner", instruments={"card_fingerprint": "fp"})
    found = engine.assess(tester, now=END)
    assert found.model_version == 1 and 0 <= found.score <= 1
    assert [s["version"] for s in found.shadow_scores] == [2]
    assert found.features["log_account_age_days"] < 0.01
    with history_ctx.db.transaction() as session:
        session.execute(update(RiskModel).values(estimator=b"not a model"))
    engine.models._estimators.clear()
    engine.models.invalidate()
    broken = engine.assess(tester, now=END + timedelta(seconds=1))
    assert broken.score is None and broken.faults[0].startswith("model: unavailable")


def test_the_velocity_rule_would_have_stopped_card_testers_and_no_customer(history_ctx):
    result = backtest(history_ctx, "velocity", since=SINCE)
    with history_ctx.db.transaction(write=False) as session:
        testers = set(session.scalars(select(RiskLabel.payment_id).where(RiskLabel.note == "tester")))
    assert result.stopped > 0 and result.stopped_bad == result.stopped
    assert set(result.stopped_ids) <= testers
    assert result.stopped >= len(testers) // 2
    assert result.bad == len(simulated_fraud(history_ctx))
    loose, tight = (backtest(history_ctx, "velocity", since=SINCE, params={"limits": [
        {"counter": "failures", "per": "device", "window_seconds": 3600, "max": n}]}) for n in (8, 2))
    assert tight.stopped > loose.stopped and tight.stopped_bad > loose.stopped_bad


def simulated_fraud(ctx) -> set[str]:
    with ctx.db.transaction(write=False) as session:
        return set(session.scalars(select(RiskLabel.payment_id).where(RiskLabel.label == "fraud")))


def test_the_risk_commands(database_url, tmp_path):
    env = {"KNOWPAY_DATABASE_URL": database_url, "KNOWPAY_INSTANCE_PATH": str(tmp_path / "instance")}
    runner = CliRunner()

    def knowpay(*args: str):
        return runner.invoke(main, ["risk", *args], env=env, catch_exceptions=False)

    trained = knowpay("train", "--seed", "1", "--activate")
    assert trained.exit_code == 0, trained.output
    assert "model v1 (active), seed 1" in trained.output and "ROC AUC" in trained.output
    models = knowpay("models", "list")
    assert models.output.startswith("v1    active")
    tested = knowpay("backtest", "--rule", "velocity", "--since", "2026-11-05")
    assert tested.exit_code == 0, tested.output
    assert "would have stopped" in tested.output and "of them known bad" in tested.output
    refused = knowpay("rules", "set", "amount", "--param", "max_amount=-1")
    assert refused.exit_code != 0 and "params.max_amount" in refused.output
    saved = knowpay("rules", "set", "amount", "--shadow", "--param", "max_amount=50000")
    assert saved.exit_code == 0 and '"max_amount": 50000' in saved.output
    assert "amount         on  shadow" in knowpay("rules", "list").output
    report = knowpay("report", "--date", "2026-11-24")
    assert report.exit_code == 0, report.output
    assert report.output.startswith("risk report for 2026-11-24 (Asia/Shanghai):")
    assert knowpay("backtest", "--rule", "nope", "--since", "2026-11-05").exit_code != 0
    more = knowpay("simulate", "--buyers", "10", "--days", "2", "--seed", "1")
    assert more.exit_code == 0, more.output
    assert "accounts  tester" in more.output and "labelled fraud" in more.output
