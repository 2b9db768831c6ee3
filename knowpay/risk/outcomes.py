"""The four outcomes of an assessment and how the rules that fired combine into one."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    ALLOW = "allow"
    CHALLENGE = "challenge"
    REVIEW = "review"
    BLOCK = "block"


SEVERITY = {Outcome.ALLOW: 0, Outcome.CHALLENGE: 1, Outcome.REVIEW: 2, Outcome.BLOCK: 3}


@dataclass(frozen=True)
class Fired:
    """A rule that fired: what it asks for, whether it only watches (shadow), and why."""

    rule: str
    action: Outcome
    shadow: bool
    reason: str
    value: float | int | None = None
    # Higher tiers decide alone: the block list (2) over the allow list (1) over everything else (0).
    tier: int = 0

    def to_json(self) -> dict:
        return {"rule": self.rule, "action": str(self.action), "shadow": self.shadow, "reason": self.reason,
                "value": self.value, "tier": self.tier}


def resolve(fired: Iterable[Fired]) -> Outcome:
    """The outcome of these firings: the highest tier that fired decides, by its most severe action."""
    fired = list(fired)
    if not fired:
        return Outcome.ALLOW
    top = max(f.tier for f in fired)
    return max((f.action for f in fired if f.tier == top), key=SEVERITY.__getitem__)
