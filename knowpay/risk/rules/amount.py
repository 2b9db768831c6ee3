"""Amount: above an absolute limit, or far above what this user has paid before."""

from __future__ import annotations

from pydantic import Field

from knowpay.risk.outcomes import Outcome
from knowpay.risk.rules.base import Hit, Rule, RuleInput, RuleParams, SubjectKind


class AmountParams(RuleParams):
    subjects: list[SubjectKind] = Field(default_factory=lambda: ["payment", "topup", "payout"])
    max_amount: int = Field(2_000_000, gt=0, description="minor units; above it the rule fires")
    history_multiple: int = Field(10, ge=2, description="fires above this many times the user's mean")
    history_min_count: int = Field(3, ge=1, description="payments needed before history is compared")
    history_min_amount: int = Field(50_000, ge=0, description="smaller amounts are never compared to history")


class Amount(Rule):
    name = "amount"
    description = "Amount above a limit, or far above the user's own history."
    Params = AmountParams
    default_action = Outcome.REVIEW

    def check(self, data: RuleInput, params: AmountParams) -> Hit | None:  # type: ignore[override]
        s = data.signals
        amount = s["amount"]
        if amount > params.max_amount:
            return Hit(f"amount {amount} above the limit {params.max_amount}", amount)
        # Compared as integers (amount × count against multiple × total): no float near money.
        if (s["history_ok"] and s["history_count"] >= params.history_min_count
                and amount >= params.history_min_amount
                and amount * s["history_count"] > params.history_multiple * s["history_total"]):
            return Hit(f"amount {amount} over {params.history_multiple}× the user's mean of "
                       f"{s['history_total'] // s['history_count']} ({s['history_count']} earlier)", amount)
        return None


RULE = Amount()
