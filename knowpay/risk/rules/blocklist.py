"""Block list: a request whose e-mail, domain, IP (or CIDR range), device or instrument is listed."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from knowpay.risk.lists import KINDS, identifiers
from knowpay.risk.outcomes import Outcome
from knowpay.risk.rules.base import Hit, Rule, RuleInput, RuleParams, Unavailable


class ListParams(RuleParams):
    kinds: list[str] = Field(default_factory=lambda: list(KINDS))

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, value: list[str]) -> list[str]:
        unknown = [kind for kind in value if kind not in KINDS]
        if unknown:
            raise ValueError(f"unknown kind {unknown[0]!r}; one of {', '.join(KINDS)}")
        return value


class ListRule(Rule):
    """Fires when any of the request's identifiers of the chosen `kinds` is on `list_name`."""

    Params = ListParams
    list_name: ClassVar[str]

    def check(self, data: RuleInput, params: ListParams) -> Hit | None:  # type: ignore[override]
        if data.lists is None:
            raise Unavailable("lists not loaded")
        found = data.lists.matches(self.list_name, identifiers(data.signals), params.kinds)
        if not found:
            return None
        return Hit(f"on the {self.list_name} list: " + ", ".join(f"{kind} {value}" for kind, value in found))


class BlockList(ListRule):
    name = "blocklist"
    description = "The user, their IP, device or instrument is on the block list."
    list_name = "block"
    default_action = Outcome.BLOCK
    actions = (Outcome.REVIEW, Outcome.BLOCK)
    # Unknown whether listed: hold for review rather than let a listed buyer through.
    fail = "closed"
    tier = 2



RULE = BlockList()
