"""The rule registry: every module in this package that defines RULE is a rule. Adding a rule is one file."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from knowpay.risk.rules.base import Rule


@cache
def registry() -> dict[str, Rule]:
    """Every rule, by name, in a stable order (the order of their module names)."""
    found: dict[str, Rule] = {}
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module.name == "base" or module.name.startswith("_"):
            continue
        rule = getattr(importlib.import_module(f"{__name__}.{module.name}"), "RULE", None)
        if isinstance(rule, Rule):
            if rule.name in found:
                raise RuntimeError(f"two risk rules are called {rule.name!r}")
            found[rule.name] = rule
    return found


def rule_named(name: str) -> Rule | None:
    return registry().get(name)
