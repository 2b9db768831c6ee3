"""New account buying a lot at once: a young account with a large amount or many items."""

from __future__ import annotations

from pydantic import Field

from knowpay.risk.outcomes import Outcome
from knowpay.risk.rules.base import Hit, Rule, RuleInput, RuleParams, SubjectKind


class NewAccountParams(RuleParams):
    subjects: list[SubjectKind] = Field(default_factory=lambda: ["payment", "topup"])
    max_age_seconds: int = Field(86400, gt=0, description="accounts younger than this are new")
    amount_at_least: int = Field(200_000, gt=0, description="minor units")
    quantity_at_least: int = Field(10, gt=0, description="items in one order")


class NewAccount(Rule):
    name = "new_account"
    description = "A new account buying a lot at once."
    Params = NewAccountParams
    default_action = Outcome.REVIEW

    def check(self, data: RuleInput, params: NewAccountParams) -> Hit | None:  # type: ignore[override]
        s = data.signals
        if s["account_age_seconds"] >= params.max_age_seconds:
            return None
        age = f"account {s['account_age_seconds']} s old"
        if s["amount"] >= params.amount_at_least:
            return Hit(f"{age} pays {s['amount']} (≥ {params.amount_at_least})", s["amount"])
        if s["quantity"] >= params.quantity_at_least:
            return Hit(f"{age} buys {s['quantity']} items (≥ {params.quantity_at_least})", s["quantity"])
        return None


RULE = NewAccount()
