"""Allow list: a trusted e-mail, domain, IP, device or instrument is let through whatever else fired
(except the block list)."""

from __future__ import annotations

from knowpay.risk.lists import identifiers
from knowpay.risk.outcomes import Outcome
from knowpay.risk.rules.base import Hit, Rule, RuleInput, Unavailable
from knowpay.risk.rules.blocklist import ListParams


class AllowList(Rule):
    name = "allowlist"
    description = "The user, their IP, device or instrument is on the allow list: allow."
    Params = ListParams
    default_action = Outcome.ALLOW
    actions = (Outcome.ALLOW,)
    tier = 1

    def check(self, data: RuleInput, params: ListParams) -> Hit | None:  # type: ignore[override]
        if data.lists is None:
            raise Unavailable("lists not loaded")
        found = data.lists.matches("allow", identifiers(data.signals), params.kinds)
        if not found:
            return None
        return Hit("on the allow list: " + ", ".join(f"{kind} {value}" for kind, value in found))


RULE = AllowList()
