"""Refund abuse: a user who asks for refunds of a large share of what they bought."""

from __future__ import annotations

from pydantic import Field

from knowpay.risk.outcomes import Outcome
from knowpay.risk.rules.base import Hit, Rule, RuleInput, RuleParams, SubjectKind, Unavailable


class RefundAbuseParams(RuleParams):
    subjects: list[SubjectKind] = Field(default_factory=lambda: ["refund"])
    min_refunds: int = Field(3, ge=1, description="refunded payments (this request included) before it fires")
    max_rate_percent: int = Field(50, ge=0, le=100, description="refunded payments per 100 paid")


class RefundAbuse(Rule):
    name = "refund_abuse"
    description = "The user's refund rate is too high."
    Params = RefundAbuseParams
    default_action = Outcome.REVIEW

    def check(self, data: RuleInput, params: RefundAbuseParams) -> Hit | None:  # type: ignore[override]
        s = data.signals
        if not s["history_ok"]:
            raise Unavailable("history missing")
        # A refund request counts itself (a repeat partial refund of one payment is counted once too many).
        refunded = s["refunded_payments"] + (1 if s["subject"] == "refund" else 0)
        paid = max(s["history_count"], 1)
        if refunded >= params.min_refunds and refunded * 100 > params.max_rate_percent * paid:
            return Hit(f"{refunded} refunded of {s['history_count']} paid (max {params.max_rate_percent}%)",
                       refunded * 100 // paid)
        return None


RULE = RefundAbuse()
