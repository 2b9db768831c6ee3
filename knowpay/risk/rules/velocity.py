"""Velocity: too many attempts, failures or distinct payment instruments per user, IP or device
within a sliding window (card testing, brute force, stolen-card cycling)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from knowpay.risk.counters import WINDOWS
from knowpay.risk.outcomes import Outcome
from knowpay.risk.rules.base import Hit, Rule, RuleInput, RuleParams, Unavailable


class Limit(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    counter: Literal["attempts", "failures", "instruments"]
    per: Literal["user", "ip", "device"]
    window_seconds: int
    max: int = Field(..., ge=0)

    @model_validator(mode="after")
    def _known_window(self) -> Limit:
        if self.window_seconds not in WINDOWS[self.counter]:
            raise ValueError(f"window_seconds of {self.counter} must be one of "
                             f"{', '.join(map(str, WINDOWS[self.counter]))}")
        return self

    @property
    def signal(self) -> str:
        return f"{self.counter}_{self.per}_{self.window_seconds}"


DEFAULT_LIMITS = [
    {"counter": "attempts", "per": "user", "window_seconds": 600, "max": 30},
    {"counter": "attempts", "per": "ip", "window_seconds": 600, "max": 60},
    {"counter": "attempts", "per": "device", "window_seconds": 600, "max": 30},
    {"counter": "failures", "per": "user", "window_seconds": 3600, "max": 5},
    {"counter": "failures", "per": "ip", "window_seconds": 3600, "max": 10},
    {"counter": "failures", "per": "device", "window_seconds": 3600, "max": 8},
    {"counter": "instruments", "per": "user", "window_seconds": 86400, "max": 4},
    {"counter": "instruments", "per": "ip", "window_seconds": 86400, "max": 8},
    {"counter": "instruments", "per": "device", "window_seconds": 86400, "max": 5},
]


class VelocityParams(RuleParams):
    limits: list[Limit] = Field(default_factory=lambda: [Limit(**limit) for limit in DEFAULT_LIMITS],
                                min_length=1, max_length=50)


class Velocity(Rule):
    name = "velocity"
    description = "Too many attempts, failures or distinct instruments per user, IP or device in a window."
    Params = VelocityParams
    default_action = Outcome.BLOCK

    def check(self, data: RuleInput, params: VelocityParams) -> Hit | None:  # type: ignore[override]
        if not data.signals["counters_ok"]:
            raise Unavailable("velocity counters missing")
        over = [(limit, data.signals[limit.signal]) for limit in params.limits
                if data.signals[limit.signal] > limit.max]
        if not over:
            return None
        count = over[0][1]
        reason = "; ".join(f"{n} {lim.counter} per {lim.per} in {lim.window_seconds} s (max {lim.max})"
                           for lim, n in over)
        return Hit(reason, count)


RULE = Velocity()
