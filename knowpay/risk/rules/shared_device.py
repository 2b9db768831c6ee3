"""Account farms: many accounts paying from one device or one IP address."""

from __future__ import annotations

from pydantic import Field, model_validator

from knowpay.risk.counters import ACCOUNT_WINDOWS
from knowpay.risk.outcomes import Outcome
from knowpay.risk.rules.base import Hit, Rule, RuleInput, RuleParams, SubjectKind, Unavailable


class SharedDeviceParams(RuleParams):
    subjects: list[SubjectKind] = Field(default_factory=lambda: ["payment", "topup", "payout"])
    max_accounts_per_device: int = Field(3, ge=1)
    device_window_seconds: int = 2592000
    max_accounts_per_ip: int = Field(10, ge=1)
    ip_window_seconds: int = 86400

    @model_validator(mode="after")
    def _known_windows(self) -> SharedDeviceParams:
        for name in ("device_window_seconds", "ip_window_seconds"):
            if getattr(self, name) not in ACCOUNT_WINDOWS:
                raise ValueError(f"{name} must be one of {', '.join(map(str, ACCOUNT_WINDOWS))}")
        return self


class SharedDevice(Rule):
    name = "shared_device"
    description = "Many accounts on one device or IP."
    Params = SharedDeviceParams
    default_action = Outcome.REVIEW

    def check(self, data: RuleInput, params: SharedDeviceParams) -> Hit | None:  # type: ignore[override]
        s = data.signals
        if not s["counters_ok"]:
            raise Unavailable("account counters missing")
        on_device = s[f"accounts_device_{params.device_window_seconds}"]
        if on_device > params.max_accounts_per_device:
            return Hit(f"{on_device} accounts on this device (max {params.max_accounts_per_device})", on_device)
        on_ip = s[f"accounts_ip_{params.ip_window_seconds}"]
        if on_ip > params.max_accounts_per_ip:
            return Hit(f"{on_ip} accounts on this IP (max {params.max_accounts_per_ip})", on_ip)
        return None


RULE = SharedDevice()
