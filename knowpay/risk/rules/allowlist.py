"""Allow list: a trusted e-mail, domain, IP, device or instrument is let through whatever else fired
(except the block list)."""

from __future__ import annotations

from knowpay.risk.outcomes import Outcome
from knowpay.risk.rules.blocklist import ListRule


class AllowList(ListRule):
    name = "allowlist"
    description = "The user, their IP, device or instrument is on the allow list: allow."
    list_name = "allow"
    default_action = Outcome.ALLOW
    actions = (Outcome.ALLOW,)
    tier = 1


RULE = AllowList()
