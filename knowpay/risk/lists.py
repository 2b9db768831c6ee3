"""Block and allow lists: which kinds of value they hold, how values are written, how a request matches."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from knowpay.domain.errors import InvalidRequest

KINDS = ("email", "email_domain", "ip", "device", "alipay_buyer_id", "wechat_openid", "card_fingerprint")
LISTS = ("block", "allow")
INSTRUMENT_KINDS = ("alipay_buyer_id", "wechat_openid", "card_fingerprint")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InvalidRequest(f"kind must be one of {', '.join(KINDS)}.", code="invalid_list_kind", param="kind")
    return kind


def normalize(kind: str, value: str) -> str:
    """The one written form of a list value, so that a lookup finds it; InvalidRequest if it is not one."""
    check_kind(kind)
    text = (value or "").strip()
    if not text or len(text) > 255:
        raise InvalidRequest("value must be 1 to 255 characters.", code="invalid_list_value", param="value")
    if kind == "email":
        text = text.lower()
        if text.count("@") != 1 or not all(text.split("@")):
            raise InvalidRequest("value must be an e-mail address.", code="invalid_list_value", param="value")
    elif kind == "email_domain":
        text = text.lower().lstrip("@")
        if not _DOMAIN.match(text):
            raise InvalidRequest("value must be a domain such as example.com.", code="invalid_list_value",
                                 param="value")
    elif kind == "ip":
        try:
            text = str(ipaddress.ip_network(text, strict=False)) if "/" in text else str(ipaddress.ip_address(text))
        except ValueError:
            raise InvalidRequest("value must be an IP address or a CIDR range such as 203.0.113.0/24.",
                                 code="invalid_list_value", param="value") from None
    return text


def identifiers(signals: Mapping) -> list[tuple[str, str]]:
    """Every (kind, value) of a request that a list may hold."""
    found: list[tuple[str, str]] = []
    if signals.get("email"):
        found.append(("email", signals["email"]))
    if signals.get("email_domain"):
        found.append(("email_domain", signals["email_domain"]))
    if signals.get("ip"):
        found.append(("ip", signals["ip"]))
    if signals.get("device_id"):
        found.append(("device", signals["device_id"]))
    for kind, value in sorted((signals.get("instruments") or {}).items()):
        if kind in INSTRUMENT_KINDS and value:
            found.append((kind, value))
    return found


@dataclass
class ListIndex:
    """All list entries in memory: exact values in sets, CIDR ranges in a list per list."""

    values: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    networks: dict[str, list[Network]] = field(default_factory=dict)

    @classmethod
    def of(cls, entries: Iterable[tuple[str, str, str]]) -> ListIndex:
        index = cls()
        for list_name, kind, value in entries:
            if kind == "ip" and "/" in value:
                index.networks.setdefault(list_name, []).append(ipaddress.ip_network(value, strict=False))
            else:
                index.values.setdefault((list_name, kind), set()).add(value)
        return index

    def matches(self, list_name: str, found: Iterable[tuple[str, str]],
                kinds: Iterable[str] | None = None) -> list[tuple[str, str]]:
        wanted = set(kinds) if kinds is not None else set(KINDS)
        hits = []
        for kind, raw in found:
            if kind not in wanted:
                continue
            value = raw.strip().lower() if kind in ("email", "email_domain") else raw.strip()
            if kind == "ip":
                try:
                    address = ipaddress.ip_address(value)
                except ValueError:
                    continue
                value = str(address)
                network = next((n for n in self.networks.get(list_name, ()) if address in n), None)
                if network is not None:
                    hits.append(("ip", str(network)))
                    continue
            if value in self.values.get((list_name, kind), ()):
                hits.append((kind, value))
        return hits
