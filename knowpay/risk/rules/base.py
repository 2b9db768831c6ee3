"""What every rule is: a name, a default action, how it fails, its parameters (validated), and a check."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from knowpay.risk.lists import ListIndex
from knowpay.risk.outcomes import Outcome
from knowpay.risk.subject import SUBJECTS

SubjectKind = Literal["payment", "topup", "refund", "payout"]


class Unavailable(Exception):
    """The signals this rule needs could not be gathered; the rule's fail mode applies."""


class RuleParams(BaseModel):
    """Parameters every rule has: the kinds of request it looks at."""

    model_config = ConfigDict(extra="forbid", strict=True)

    subjects: list[SubjectKind] = Field(default_factory=lambda: list(SUBJECTS))

    @field_validator("subjects")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        return sorted(set(value), key=SUBJECTS.index)


@dataclass(frozen=True)
class RuleInput:
    signals: Mapping
    score: float | None
    lists: ListIndex | None


@dataclass(frozen=True)
class Hit:
    """Why the rule fired, and the measured value that crossed its line."""

    reason: str
    value: float | int | None = None


class Rule(ABC):
    """Subclass, set the class attributes, implement `check`; put one in a module of this package as RULE."""

    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[RuleParams]] = RuleParams
    default_action: ClassVar[Outcome] = Outcome.REVIEW
    actions: ClassVar[tuple[Outcome, ...]] = (Outcome.CHALLENGE, Outcome.REVIEW, Outcome.BLOCK)
    default_enabled: ClassVar[bool] = True
    # "open": a rule that cannot be evaluated is skipped; "closed": the request is held for review.
    fail: ClassVar[Literal["open", "closed"]] = "open"
    tier: ClassVar[int] = 0
    # Reads the model score: shadow model versions are tried against it too.
    uses_score: ClassVar[bool] = False

    def defaults(self) -> RuleParams:
        return self.Params()

    @abstractmethod
    def check(self, data: RuleInput, params: RuleParams) -> Hit | None:
        """The hit when the rule fires on `data`, else None; raise Unavailable when it cannot tell."""
