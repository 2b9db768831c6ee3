"""Imitations of real channels inside the sandbox gateway, one module each.

A module here defines `install(app, gateway, settings) -> WireFormat`: it adds the channel's own
endpoints to the sandbox app (sharing the trade store and the pay page) and returns how that
channel's notifications are rendered. The registry finds every module, so adding one is one file.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def gateway_plugins() -> dict[str, ModuleType]:
    return {m.name: importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)}
