"""Opaque, unguessable ids with a type prefix (`ord_7kQ...`)."""

from __future__ import annotations

import secrets

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_LENGTH = 22  # 22 base62 characters carry about 131 bits of randomness

PREFIXES = frozenset(
    {"usr", "prd", "ord", "oit", "pay", "ref", "ent", "pyo", "evt", "whe", "whd", "tkt", "acc", "txn",
     "pst", "key", "tok", "cpn", "ntf", "rsk", "rcn", "job", "btr"}
)


def new_id(prefix: str) -> str:
    """A fresh random id such as `ord_3fJ9...`."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    return prefix + "_" + "".join(secrets.choice(_ALPHABET) for _ in range(_LENGTH))


def has_prefix(value: str, prefix: str) -> bool:
    """True when `value` looks like an id of this type (shape only, not existence)."""
    body = value[len(prefix) + 1 :]
    return (
        value.startswith(prefix + "_")
        and len(body) == _LENGTH
        and all(c in _ALPHABET for c in body)
    )
