"""The risk engine: gather signals, score them, run the rules, combine what fired into one outcome.

A fault (Redis down, the model unreadable, a rule that raises) never stops an assessment: counters
fall back to the database, the score is dropped, a fail-open rule is skipped and a fail-closed rule
holds the request for review, and the assessment lists what happened in `faults`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from pydantic import ValidationError
from sqlalchemy import select

from knowpay.config import Settings
from knowpay.db import Database
from knowpay.domain.errors import InvalidRequest
from knowpay.risk.counters import CounterStore, DbCounters, RedisCounters, ResilientCounters
from knowpay.risk.features import FEATURE_NAMES, collect, failure_hits, vector
from knowpay.risk.lists import ListIndex
from knowpay.risk.models import RiskListEntry, RiskRule
from knowpay.risk.outcomes import Fired, Outcome, resolve
from knowpay.risk.profiles import DbProfiles, ProfileSource
from knowpay.risk.rules import registry
from knowpay.risk.rules.base import Rule, RuleInput, RuleParams, Unavailable
from knowpay.risk.subject import Subject

if TYPE_CHECKING:
    from knowpay.context import Context
    from knowpay.risk.model import ModelCache

log = logging.getLogger(__name__)

# How long a process keeps rule settings and lists before reading them again (a change made through
# this process is seen at once; other processes see it within this time).
CONFIG_TTL_SECONDS = 5.0


@dataclass(frozen=True)
class RuleConfig:
    """A rule with the settings it runs on now."""

    rule: Rule
    enabled: bool
    action: Outcome
    shadow: bool
    params: RuleParams
    updated_at: datetime | None = None
    updated_by: str | None = None
    # Why stored settings were not usable (the defaults run instead).
    problem: str | None = None

    @property
    def name(self) -> str:
        return self.rule.name

    def to_json(self) -> dict:
        return {"name": self.name, "description": self.rule.description, "enabled": self.enabled,
                "action": str(self.action), "shadow": self.shadow, "params": self.params.model_dump(mode="json"),
                "fail": self.rule.fail, "actions": [str(a) for a in self.rule.actions],
                "updated_at": self.updated_at, "updated_by": self.updated_by, "problem": self.problem}


def default_config(rule: Rule) -> RuleConfig:
    return RuleConfig(rule, rule.default_enabled, rule.default_action, False, rule.defaults())


def config_from_row(rule: Rule, row: RiskRule | None) -> RuleConfig:
    if row is None:
        return default_config(rule)
    try:
        params = rule.Params.model_validate(row.params or {})
        action = Outcome(row.action)
        if action not in rule.actions:
            raise ValueError(f"action {action} not allowed")
    except (ValidationError, ValueError) as exc:
        log.error("risk rule %s: stored settings are not valid (%s); running on defaults", rule.name, exc)
        return RuleConfig(rule, row.enabled, rule.default_action, row.shadow, rule.defaults(), row.updated_at,
                          row.updated_by, problem=f"stored settings not valid: {exc}"[:300])
    return RuleConfig(rule, row.enabled, action, row.shadow, params, row.updated_at, row.updated_by)


def _param_name(error: ValidationError) -> tuple[str, str]:
    first = error.errors(include_url=False)[0]
    path = "params"
    for part in first["loc"]:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path, first["msg"].removeprefix("Value error, ")


def changed_config(current: RuleConfig, *, enabled: bool | None = None, action: str | None = None,
                   shadow: bool | None = None, params: dict | None = None) -> RuleConfig:
    """The rule's settings after an admin's change, validated; InvalidRequest names the bad field.

    `params` is merged over the current parameters: name only the ones to change.
    """
    rule = current.rule
    new_action = current.action
    if action is not None:
        try:
            new_action = Outcome(action)
        except ValueError:
            new_action = None  # type: ignore[assignment]
        if new_action not in rule.actions:
            raise InvalidRequest(f"action of {rule.name} must be one of {', '.join(rule.actions)}.",
                                 code="invalid_rule_config", param="action")
    new_params = current.params
    if params is not None:
        if not isinstance(params, dict):
            raise InvalidRequest("params must be an object.", code="invalid_rule_config", param="params")
        try:
            new_params = rule.Params.model_validate({**current.params.model_dump(mode="json"), **params})
        except ValidationError as exc:
            name, message = _param_name(exc)
            raise InvalidRequest(f"`{name}`: {message}.", code="invalid_rule_config", param=name) from None
    return RuleConfig(rule, current.enabled if enabled is None else enabled, new_action,
                      current.shadow if shadow is None else shadow, new_params)


@dataclass(frozen=True)
class Snapshot:
    rules: tuple[RuleConfig, ...]
    lists: ListIndex | None


class ConfigCache:
    """Rule settings and list entries, read at most every CONFIG_TTL_SECONDS."""

    def __init__(self, db: Database, ttl: float = CONFIG_TTL_SECONDS) -> None:
        self.db = db
        self.ttl = ttl
        self._snapshot: Snapshot | None = None
        self._loaded_at = 0.0
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        self._loaded_at = 0.0

    def current(self) -> tuple[Snapshot, list[str]]:
        if self._snapshot is not None and time.monotonic() - self._loaded_at < self.ttl:
            return self._snapshot, []
        with self._lock:
            if self._snapshot is not None and time.monotonic() - self._loaded_at < self.ttl:
                return self._snapshot, []
            try:
                self._snapshot = self._load()
                self._loaded_at = time.monotonic()
                return self._snapshot, []
            except Exception as exc:  # noqa: BLE001 - keep assessing on what we had, or on defaults
                log.warning("risk settings could not be read (%s); using the last known", exc)
                fault = f"settings: unreadable ({exc.__class__.__name__}); used the last known"
                if self._snapshot is None:
                    fault = f"settings: unreadable ({exc.__class__.__name__}); rule defaults, lists unknown"
                    return Snapshot(tuple(default_config(r) for r in registry().values()), None), [fault]
                return self._snapshot, [fault]

    def _load(self) -> Snapshot:
        with self.db.transaction(write=False) as session:
            rows = {row.name: row for row in session.scalars(select(RiskRule))}
            entries = session.execute(select(RiskListEntry.list_name, RiskListEntry.kind, RiskListEntry.value)).all()
        rules = tuple(config_from_row(rule, rows.get(name)) for name, rule in registry().items())
        return Snapshot(rules, ListIndex.of(tuple(e) for e in entries))


@dataclass
class Assessment:
    """One assessment, before it is stored: what was asked, seen, fired and decided."""

    subject: Subject
    attempt_id: str
    at: datetime
    signals: dict
    features: dict
    fired: list[Fired]
    outcome: Outcome
    shadow_outcome: Outcome
    score: float | None = None
    model_version: int | None = None
    shadow_scores: list[dict] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counters: str = ""
    challenge_passed: bool = False

    @property
    def holds(self) -> bool:
        """Whether the request waits (for a second factor or a reviewer) instead of going on now."""
        if self.outcome == Outcome.CHALLENGE:
            return not self.challenge_passed
        return self.outcome == Outcome.REVIEW

    def inputs(self) -> dict:
        return {"subject": self.subject.to_json(), "signals": self.signals, "counters": self.counters,
                "attempt_id": self.attempt_id, "notes": self.notes}


class RiskEngine:
    def __init__(self, *, settings: Settings, counters: CounterStore, profiles: ProfileSource,
                 config: ConfigCache, models: ModelCache | None) -> None:
        self.settings = settings
        self.counters = counters
        self.profiles = profiles
        self.config = config
        self.models = models

    def assess(self, subject: Subject, *, now: datetime, attempt_id: str | None = None) -> Assessment:
        attempt_id = attempt_id or uuid.uuid4().hex
        snapshot, faults = self.config.current()
        signals, gathered, store = collect(subject, counters=self.counters, profiles=self.profiles, now=now,
                                           tz=self.settings.timezone, attempt_id=attempt_id)
        faults = [*faults, *gathered]
        row = vector(signals)
        score = version = None
        shadow_scores: list[dict] = []
        if self.models is not None:
            scored = self.models.score(row)
            if scored.fault:
                faults.append(scored.fault)
            if scored.active is not None:
                version, score = scored.active
            shadow_scores = [{"version": v, "score": s} for v, s in scored.shadows]
        fired = evaluate(snapshot, subject, signals, score, faults)
        for shadow in shadow_scores:
            fired += [Fired(f"{f.rule}@v{shadow['version']}", f.action, True, f.reason, f.value, f.tier)
                      for f in evaluate(snapshot, subject, signals, shadow["score"], [], only_scored=True)]
        notes: list[str] = []
        outcome = self._feasible(subject, resolve(f for f in fired if not f.shadow), notes)
        shadow_outcome = self._feasible(subject, resolve(fired), [])
        return Assessment(subject=subject, attempt_id=attempt_id, at=now, signals=signals,
                          features=dict(zip(FEATURE_NAMES, row, strict=True)), fired=fired, outcome=outcome,
                          shadow_outcome=shadow_outcome, score=score, model_version=version,
                          shadow_scores=shadow_scores, faults=faults, notes=notes, counters=store)

    @staticmethod
    def _feasible(subject: Subject, outcome: Outcome, notes: list[str]) -> Outcome:
        if outcome == Outcome.CHALLENGE and not subject.can_challenge:
            notes.append("challenge not possible (no second factor, or the request cannot carry an otp): review")
            return Outcome.REVIEW
        return outcome

    def record_failure(self, subject: Subject, *, now: datetime, failure_id: str | None = None,
                       session=None) -> None:  # type: ignore[no-untyped-def]
        """Count a failed attempt (block, wrong one-time code, decline, rejected review) for velocity."""
        try:
            self.counters.record(failure_hits(subject, failure_id or uuid.uuid4().hex), now, session=session)
        except Exception as exc:  # noqa: BLE001 - a lost failure count must not fail the caller
            log.warning("risk: could not count a failure (%s: %s)", exc.__class__.__name__, exc)


def evaluate(snapshot: Snapshot, subject: Subject, signals: dict, score: float | None, faults: list[str], *,
             only_scored: bool = False) -> list[Fired]:
    """Run every enabled rule that looks at this kind of request; a rule that raises fails as it declares."""
    fired: list[Fired] = []
    data = RuleInput(signals, score, snapshot.lists)
    for config in snapshot.rules:
        rule = config.rule
        if not config.enabled or subject.kind not in config.params.subjects:
            continue
        if only_scored and not rule.uses_score:
            continue
        try:
            hit = rule.check(data, config.params)
        except Exception as exc:  # noqa: BLE001 - a broken rule must not stop the checkout
            why = str(exc) if isinstance(exc, Unavailable) else f"{exc.__class__.__name__}: {exc}"
            if rule.fail == "closed":
                faults.append(f"rule {rule.name}: could not be evaluated ({why}); fails closed: review")
                fired.append(Fired(rule.name, Outcome.REVIEW, config.shadow,
                                   "could not be evaluated; fails closed", None, rule.tier))
            else:
                faults.append(f"rule {rule.name}: could not be evaluated ({why}); fails open: skipped")
            continue
        if hit is not None:
            fired.append(Fired(rule.name, config.action, config.shadow, hit.reason, hit.value, rule.tier))
    return fired


# -- one engine per database, built on first use ------------------------------------------------------

_engines: WeakKeyDictionary[Database, RiskEngine] = WeakKeyDictionary()
_engines_lock = threading.Lock()


def build_engine(settings: Settings, db: Database, *, redis_namespace: str = "knowpay:risk",
                 use_redis: bool = True, use_model: bool = True,
                 redis_factory: Callable[[str], CounterStore] | None = None) -> RiskEngine:
    """The engine of one process: Redis counters (with database fall-back) when KNOWPAY_REDIS_URL is set."""
    from knowpay.risk.model import ModelCache

    primary = None
    if use_redis and settings.redis_url:
        primary = (redis_factory or (lambda url: RedisCounters.from_url(url, namespace=redis_namespace)))(
            settings.redis_url)
    counters = ResilientCounters(primary, DbCounters(db))
    return RiskEngine(settings=settings, counters=counters, profiles=DbProfiles(db), config=ConfigCache(db),
                      models=ModelCache(db) if use_model else None)


def engine_for(ctx: Context) -> RiskEngine:
    engine = _engines.get(ctx.db)
    if engine is None:
        with _engines_lock:
            engine = _engines.get(ctx.db)
            if engine is None:
                engine = _engines[ctx.db] = build_engine(ctx.settings, ctx.db)
    return engine


def install_engine(ctx: Context, engine: RiskEngine) -> None:
    """Use this engine for this context's database (tests, benchmarks)."""
    with _engines_lock:
        _engines[ctx.db] = engine
