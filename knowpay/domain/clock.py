"""Time as a dependency, so rules about expiry and windows can be tested with a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """The real time in UTC, without tzinfo (the database stores naive UTC)."""

    def now(self) -> datetime:
        return datetime.now(UTC).replace(tzinfo=None)


class FixedClock:
    """A clock that only moves when told to; for tests and simulations."""

    def __init__(self, at: datetime) -> None:
        self._at = at

    def now(self) -> datetime:
        return self._at

    def advance(self, **kwargs: float) -> None:
        self._at += timedelta(**kwargs)


def isoformat(moment: datetime | None) -> str | None:
    """ISO 8601 UTC with a `Z`, as the API promises."""
    if moment is None:
        return None
    return moment.replace(microsecond=(moment.microsecond // 1000) * 1000).isoformat(timespec="milliseconds") + "Z"
