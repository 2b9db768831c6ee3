"""Back-test a rule on stored history: what would it have stopped, and how much of that was known bad?

History is replayed (replay.py) so the rule sees each payment as it was then; the rule runs with its
current parameters (or the ones given), whether or not it is enabled or in shadow. "Stopped" means
it fired with an action other than allow.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from knowpay.context import Context
from knowpay.domain.errors import NotFound
from knowpay.domain.money import format_major
from knowpay.risk.engine import changed_config, engine_for
from knowpay.risk.outcomes import Outcome
from knowpay.risk.replay import replay
from knowpay.risk.rules import rule_named
from knowpay.risk.rules.base import RuleInput
from knowpay.risk.service import rule_configs


@dataclass
class Backtest:
    rule: str
    action: str
    params: dict
    since: datetime
    until: datetime | None
    assessed: int = 0
    assessed_amount: Counter = field(default_factory=Counter)
    stopped: int = 0
    stopped_amount: Counter = field(default_factory=Counter)
    stopped_bad: int = 0
    stopped_bad_amount: Counter = field(default_factory=Counter)
    bad: int = 0
    bad_amount: Counter = field(default_factory=Counter)
    stopped_ids: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float | None:
        return self.stopped_bad / self.stopped if self.stopped else None

    @property
    def recall(self) -> float | None:
        return self.stopped_bad / self.bad if self.bad else None

    def lines(self) -> list[str]:
        def money(amounts: Counter) -> str:
            return ", ".join(f"{format_major(v, c)} {c}" for c, v in sorted(amounts.items())) or "0"

        def percent(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.1%}"

        until = self.until.date().isoformat() if self.until else "now"
        return [
            f"back-test of {self.rule} ({self.action}) from {self.since.date().isoformat()} to {until}",
            f"  params: {self.params}",
            f"  payments assessed   {self.assessed:>8}   {money(self.assessed_amount)}",
            f"  would have stopped  {self.stopped:>8}   {money(self.stopped_amount)}",
            (f"    of them known bad {self.stopped_bad:>8}   {money(self.stopped_bad_amount)}"
             f"   (precision {percent(self.precision)})"),
            f"  known bad in all    {self.bad:>8}   {money(self.bad_amount)}   (caught {percent(self.recall)})",
        ]


def backtest(ctx: Context, rule_name: str, *, since: datetime, until: datetime | None = None,
             params: dict | None = None, action: str | None = None) -> Backtest:
    rule = rule_named(rule_name)
    if rule is None:
        raise NotFound(f"No risk rule {rule_name!r}.", param="rule")
    with ctx.db.transaction(write=False) as session:
        current = next(c for c in rule_configs(session) if c.name == rule_name)
    config = changed_config(current, params=params, action=action)
    engine = engine_for(ctx)
    snapshot, _ = engine.config.current()
    result = Backtest(rule_name, str(config.action), config.params.model_dump(mode="json"), since, until)
    for attempt, signals, row in replay(ctx, since=since, until=until, with_vectors=rule.uses_score):
        subject = attempt.subject
        if subject.kind not in config.params.subjects:
            continue
        score = None
        if rule.uses_score and engine.models is not None:
            scored = engine.models.score(row)
            score = scored.active[1] if scored.active else None
        result.assessed += 1
        result.assessed_amount[subject.currency] += subject.amount
        if attempt.fraud:
            result.bad += 1
            result.bad_amount[subject.currency] += subject.amount
        try:
            hit = rule.check(RuleInput(signals, score, snapshot.lists), config.params)
        except Exception:  # noqa: BLE001 - a rule that cannot run on an old record stops nothing
            hit = None
        if hit is None or config.action == Outcome.ALLOW:
            continue
        result.stopped += 1
        result.stopped_amount[subject.currency] += subject.amount
        result.stopped_ids.append(attempt.id)
        if attempt.fraud:
            result.stopped_bad += 1
            result.stopped_bad_amount[subject.currency] += subject.amount
    return result
