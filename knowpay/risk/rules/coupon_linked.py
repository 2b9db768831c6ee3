"""Coupon abuse: the same coupon (or a trial given as one) used again by accounts linked through a
device or an IP address."""

from __future__ import annotations

from pydantic import Field

from knowpay.risk.outcomes import Outcome
from knowpay.risk.rules.base import Hit, Rule, RuleInput, RuleParams, SubjectKind, Unavailable


class CouponLinkedParams(RuleParams):
    subjects: list[SubjectKind] = Field(default_factory=lambda: ["payment", "topup"])
    max_linked_uses: int = Field(0, ge=0, description="other linked accounts allowed to have used it")


class CouponLinked(Rule):
    name = "coupon_linked"
    description = "The same coupon used across accounts linked by device or IP."
    Params = CouponLinkedParams
    default_action = Outcome.REVIEW

    def check(self, data: RuleInput, params: CouponLinkedParams) -> Hit | None:  # type: ignore[override]
        s = data.signals
        if not s["coupon_code"]:
            return None
        if not s["counters_ok"]:
            raise Unavailable("linked accounts unknown")
        uses = s["coupon_linked_uses"]
        if uses > params.max_linked_uses:
            return Hit(f"coupon {s['coupon_code']} already used by {uses} linked account(s)", uses)
        return None


RULE = CouponLinked()
