"""The engine: how fired rules combine, shadow mode, faults (fail open / closed, Redis, model), settings checks."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from knowpay.config import load_settings
from knowpay.domain.errors import InvalidRequest
from knowpay.risk.counters import MemoryCounters, Observation, ResilientCounters
from knowpay.risk.engine import RiskEngine, Snapshot, changed_config, default_config
from knowpay.risk.lists import ListIndex
from knowpay.risk.model import ModelScores
from knowpay.risk.outcomes import Fired, Outcome, resolve
from knowpay.risk.profiles import MemoryProfiles
from knowpay.risk.rules import registry
from knowpay.risk.rules.base import Rule
from knowpay.risk.subject import Subject

NOW = datetime(2026, 11, 25, 4, 0, 0)


def subject(**fields) -> Subject:
    values = {"kind": "payment", "user_id": "usr_ann", "email": "ann@example.com",
              "account_created_at": NOW - timedelta(days=90), "amount": 9900, "currency": "cny",
              "channel": "alipay", "ip": "36.112.0.7", "device_id": "dev-1"}
    values.update(fields)
    return Subject(**values)


class FixedConfig:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def current(self):
        return self.snapshot, []

    def invalidate(self) -> None:
        pass


class FixedModels:
    def __init__(self, scores: ModelScores) -> None:
        self.scores = scores

    def score(self, row):
        return self.scores


def configs(**changes) -> tuple:
    """Every rule on its defaults, with `name={...}` changes applied."""
    found = []
    for name, rule in registry().items():
        config = default_config(rule)
        if name in changes:
            config = changed_config(config, **changes[name])
        found.append(config)
    return tuple(found)


def engine(*, lists: ListIndex | None = None, counters=None, models=None, **changes) -> RiskEngine:
    return RiskEngine(settings=load_settings({}), counters=counters or MemoryCounters(), profiles=MemoryProfiles(),
                      config=FixedConfig(Snapshot(configs(**changes), lists if lists is not None else ListIndex())),
                      models=models)


def test_the_highest_tier_decides_then_the_most_severe_action():
    velocity = Fired("velocity", Outcome.BLOCK, False, "")
    review = Fired("amount", Outcome.REVIEW, False, "")
    allow = Fired("allowlist", Outcome.ALLOW, False, "", tier=1)
    listed = Fired("blocklist", Outcome.BLOCK, False, "", tier=2)
    assert resolve([]) == Outcome.ALLOW
    assert resolve([review, velocity]) == Outcome.BLOCK
    assert resolve([review, Fired("x", Outcome.CHALLENGE, False, "")]) == Outcome.REVIEW
    assert resolve([velocity, allow]) == Outcome.ALLOW
    assert resolve([velocity, allow, listed]) == Outcome.BLOCK


def test_a_shadow_rule_is_recorded_but_does_not_act():
    found = engine(amount={"shadow": True, "params": {"max_amount": 5000}}).assess(subject(), now=NOW)
    assert found.outcome == Outcome.ALLOW
    assert found.shadow_outcome == Outcome.REVIEW
    assert [(f.rule, f.shadow) for f in found.fired] == [("amount", True)]


def test_the_allow_list_lets_a_trusted_buyer_through_other_rules():
    lists = ListIndex.of([("allow", "email", "ann@example.com")])
    found = engine(lists=lists, amount={"action": "block", "params": {"max_amount": 5000}}).assess(subject(), now=NOW)
    assert found.outcome == Outcome.ALLOW
    assert sorted(f.rule for f in found.fired) == ["allowlist", "amount"]


def test_a_challenge_without_a_second_factor_is_a_review():
    run = engine(amount={"action": "challenge", "params": {"max_amount": 5000}})
    assert run.assess(subject(can_challenge=True), now=NOW).outcome == Outcome.CHALLENGE
    without = run.assess(subject(can_challenge=False), now=NOW)
    assert without.outcome == Outcome.REVIEW and "challenge not possible" in without.notes[0]


class Broken(Rule):
    name = "amount"
    description = "raises"
    fail = "open"

    def check(self, data, params):
        raise ZeroDivisionError("boom")


def test_a_rule_that_fails_open_is_skipped_and_one_that_fails_closed_holds_for_review(monkeypatch):
    snapshot_open = Snapshot(tuple(c if c.name != "amount" else c.__class__(Broken(), True, Outcome.BLOCK, False,
                                                                             c.params)
                                   for c in configs()), ListIndex())
    run = RiskEngine(settings=load_settings({}), counters=MemoryCounters(), profiles=MemoryProfiles(),
                     config=FixedConfig(snapshot_open), models=None)
    skipped = run.assess(subject(), now=NOW)
    assert skipped.outcome == Outcome.ALLOW
    assert skipped.faults == ["rule amount: could not be evaluated (ZeroDivisionError: boom); fails open: skipped"]
    monkeypatch.setattr(Broken, "fail", "closed")
    held = run.assess(subject(), now=NOW)
    assert held.outcome == Outcome.REVIEW
    assert held.faults[0].endswith("fails closed: review")


def test_lists_that_cannot_be_read_hold_the_payment_for_review_rather_than_let_it_through():
    run = RiskEngine(settings=load_settings({}), counters=MemoryCounters(), profiles=MemoryProfiles(),
                     config=FixedConfig(Snapshot(configs(), None)), models=None)
    found = run.assess(subject(), now=NOW)
    assert found.outcome == Outcome.REVIEW
    assert any(f.startswith("rule blocklist: could not be evaluated") for f in found.faults)


class DeadRedis:
    name = "redis"

    def __init__(self) -> None:
        self.calls = 0

    def begin(self, observation: Observation, now):
        self.calls += 1
        raise ConnectionError("Connection refused")

    observe = begin

    def record(self, hits, now, session=None):
        self.calls += 1
        raise ConnectionError("Connection refused")


def test_when_redis_fails_the_database_counters_take_over_and_the_decision_says_so():
    dead, fallback = DeadRedis(), MemoryCounters()
    counters = ResilientCounters(dead, fallback, pause_seconds=60)
    run = engine(counters=counters)
    first = run.assess(subject(), now=NOW)
    assert first.counters == "memory"
    assert first.faults == ["counters: redis unavailable (ConnectionError); used memory"]
    assert first.signals["attempts_user_600"] == 1
    second = run.assess(subject(), now=NOW + timedelta(seconds=1))
    assert second.faults == ["counters: redis paused after a failure; used memory"]
    assert second.signals["attempts_user_600"] == 2
    assert dead.calls == 1  # not asked again while paused


class RedisThatTimesOut:
    """Takes the request, then no answer comes (read timeout) while the history is being read."""

    name = "redis"

    def begin(self, observation: Observation, now):
        def answer():
            raise TimeoutError("Timeout reading from socket")

        return answer

    def observe(self, observation: Observation, now):
        return self.begin(observation, now)()

    def record(self, hits, now, session=None):
        pass


def test_when_redis_answers_nothing_the_database_counters_take_over_after_the_history_read():
    counters = ResilientCounters(RedisThatTimesOut(), MemoryCounters(), pause_seconds=60)
    found = engine(counters=counters).assess(subject(), now=NOW)
    assert found.counters == "memory"
    assert found.faults == ["counters: redis unavailable (TimeoutError); used memory"]
    assert (found.signals["attempts_user_600"], found.signals["history_ok"]) == (1, True)


class Answered(MemoryCounters):
    def __init__(self) -> None:
        super().__init__()
        self.open = 0

    def begin(self, observation: Observation, now):
        self.open += 1
        counts = self.observe(observation, now)

        def answer():
            self.open -= 1
            return counts

        return answer


class NoHistory(MemoryProfiles):
    def history(self, subject, now):
        raise OSError("database gone")


def test_a_history_read_that_fails_still_takes_the_counters_answer():
    counters = Answered()
    run = RiskEngine(settings=load_settings({}), counters=counters, profiles=NoHistory(),
                     config=FixedConfig(Snapshot(configs(), ListIndex())), models=None)
    found = run.assess(subject(), now=NOW)
    assert counters.open == 0  # a call in flight gives its connection back
    assert found.faults == ["history: unavailable (OSError); history signals missing"]
    assert (found.signals["attempts_user_600"], found.signals["history_ok"]) == (1, False)


class NoCounters:
    name = "none"

    def begin(self, observation, now):
        raise OSError("disk full")

    observe = begin

    def record(self, hits, now, session=None):
        raise OSError("disk full")


def test_without_any_counters_velocity_fails_open_and_the_rest_still_run():
    found = engine(counters=NoCounters(), amount={"params": {"max_amount": 5000}}).assess(subject(), now=NOW)
    assert found.outcome == Outcome.REVIEW  # amount still acts
    assert found.signals["counters_ok"] is False
    assert "counters: unavailable (OSError); velocity signals missing" in found.faults
    assert any(f.startswith("rule velocity: could not be evaluated") for f in found.faults)


def test_a_model_that_fails_leaves_the_rules_to_decide_and_is_recorded():
    broken = FixedModels(ModelScores(fault="model: unavailable (UnpicklingError: bad); rules alone"))
    found = engine(models=broken, model_score={"params": {"threshold": 0.5}}).assess(subject(), now=NOW)
    assert (found.outcome, found.score) == (Outcome.ALLOW, None)
    assert found.faults == ["model: unavailable (UnpicklingError: bad); rules alone"]


def test_the_active_model_acts_through_its_rule_and_a_shadow_version_is_compared():
    scores = FixedModels(ModelScores(active=(3, 0.2), shadows=[(4, 0.93)]))
    found = engine(models=scores).assess(subject(), now=NOW)
    assert (found.outcome, found.score, found.model_version) == (Outcome.ALLOW, 0.2, 3)
    assert found.shadow_scores == [{"version": 4, "score": 0.93}]
    assert found.shadow_outcome == Outcome.REVIEW
    assert [(f.rule, f.shadow) for f in found.fired] == [("model_score@v4", True)]


@pytest.mark.parametrize("name, changes, param", [
    ("velocity", {"params": {"limits": [{"counter": "attempts", "per": "user", "window_seconds": 120, "max": 3}]}},
     "params.limits[0]"),
    ("velocity", {"params": {"limits": [{"counter": "failures", "per": "planet", "window_seconds": 600, "max": 3}]}},
     "params.limits[0].per"),
    ("velocity", {"params": {"limits": []}}, "params.limits"),
    ("amount", {"params": {"max_amount": -1}}, "params.max_amount"),
    ("amount", {"params": {"max_amount": "lots"}}, "params.max_amount"),
    ("amount", {"params": {"max_amonut": 5}}, "params.max_amonut"),
    ("amount", {"params": {"subjects": ["gift"]}}, "params.subjects[0]"),
    ("model_score", {"params": {"threshold": 1.5}}, "params.threshold"),
    ("blocklist", {"params": {"kinds": ["shoe_size"]}}, "params.kinds"),
    ("blocklist", {"action": "challenge"}, "action"),
    ("allowlist", {"action": "block"}, "action"),
    ("shared_device", {"params": {"ip_window_seconds": 5}}, "params"),
])
def test_a_rule_setting_that_does_not_validate_is_refused_naming_the_field(name, changes, param):
    with pytest.raises(InvalidRequest) as refused:
        changed_config(default_config(registry()[name]), **changes)
    assert refused.value.param == param
    assert refused.value.code == "invalid_rule_config"
    assert refused.value.message.startswith(f"`{param}`") or param == "action"


def test_window_errors_say_which_windows_exist():
    with pytest.raises(InvalidRequest) as refused:
        changed_config(default_config(registry()["velocity"]), params={"limits": [
            {"counter": "attempts", "per": "user", "window_seconds": 120, "max": 3}]})
    assert "window_seconds of attempts must be one of 60, 600, 3600, 86400" in refused.value.message
