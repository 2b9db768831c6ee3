"""Payment channels, one module each. The registry finds every module that defines
`from_settings(settings) -> Channel | None` (None when the channel is not configured).
"""

from __future__ import annotations

import importlib
import pkgutil

from knowpay.channels.base import Channel
from knowpay.config import Settings
from knowpay.domain.errors import InvalidRequest

_SKIP = {"base", "http"}


def channel_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _SKIP)


def build_channels(settings: Settings) -> dict[str, Channel]:
    """Every configured channel by name (a channel whose settings are absent is off)."""
    channels: dict[str, Channel] = {}
    for name in channel_modules():
        module = importlib.import_module(f"{__name__}.{name}")
        channel = module.from_settings(settings)
        if channel is not None:
            channels[channel.name] = channel
    return channels


class Registry:
    """The channels this process may use, looked up by name."""

    def __init__(self, channels: dict[str, Channel]) -> None:
        self._channels = channels

    def get(self, name: str) -> Channel:
        try:
            return self._channels[name]
        except KeyError:
            raise InvalidRequest(f"The channel {name!r} is not enabled.", code="channel_unavailable",
                                 param="channel") from None

    def names(self) -> list[str]:
        return sorted(self._channels)

    def __contains__(self, name: str) -> bool:
        return name in self._channels
