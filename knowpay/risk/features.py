"""Signals and model features, computed by this one module online (Redis or database counters, the
database) and offline (the same code over in-memory stores while history is replayed).

`collect` turns a Subject into signals: the request's facts, velocity counts, the user's history.
`vector` turns signals into the model's numbers. Rules read signals; the model reads the vector.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from zoneinfo import ZoneInfo

from knowpay.risk.counters import (
    ACCOUNT_WINDOWS,
    ATTEMPT_WINDOWS,
    FAILURE_WINDOWS,
    INSTRUMENT_WINDOWS,
    KEEP_SECONDS,
    CounterStore,
    Counts,
    Hit,
    Observation,
    Pending,
    Read,
)
from knowpay.risk.profiles import History, ProfileSource
from knowpay.risk.subject import COUNTER_SCOPE, Subject

DIMENSIONS = ("user", "ip", "device")
ACCOUNT_DIMENSIONS = ("ip", "device")
CHANNELS = ("alipay", "wechat", "stripe", "wallet", "bank_transfer")


def countable_ip(ip: str | None) -> str | None:
    """The address to count by, or None: an internal address (loopback, private, reserved) says
    nothing about who is buying, and counting by it would lump every buyer behind a proxy together."""
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    return str(address) if address.is_global else None


def _dimension_values(subject: Subject) -> dict[str, str]:
    values = {"user": subject.user_id}
    ip = countable_ip(subject.ip)
    if ip:
        values["ip"] = ip
    if subject.device_id:
        values["device"] = subject.device_id.strip()[:128]
    return values


def instrument_of(subject: Subject) -> str | None:
    for kind in ("card_fingerprint", "alipay_buyer_id", "wechat_openid"):
        if subject.instruments.get(kind):
            return f"{kind}:{subject.instruments[kind]}"
    return None


def key(family: str, subject_kind: str, dimension: str, value: str) -> str:
    return f"{family}:{COUNTER_SCOPE[subject_kind]}:{dimension}:{value}"


def observation(subject: Subject, attempt_id: str) -> Observation:
    """What one assessment records and reads: its attempt (per user, IP, device), its instrument,
    the account on this IP/device; and the failures so far."""
    values = _dimension_values(subject)
    instrument = instrument_of(subject)
    hits: list[Hit] = []
    reads: list[Read] = []
    linked: list[str] = []
    for dimension, value in values.items():
        hits.append(Hit(key("att", subject.kind, dimension, value), attempt_id, ATTEMPT_WINDOWS))
        reads.append(Read(key("fail", subject.kind, dimension, value), FAILURE_WINDOWS))
        if instrument:
            hits.append(Hit(key("ins", subject.kind, dimension, value), instrument, INSTRUMENT_WINDOWS))
        else:
            reads.append(Read(key("ins", subject.kind, dimension, value), INSTRUMENT_WINDOWS))
        if dimension in ACCOUNT_DIMENSIONS:
            account_key = key("acct", subject.kind, dimension, value)
            hits.append(Hit(account_key, subject.user_id, ACCOUNT_WINDOWS))
            linked.append(account_key)
    return Observation(tuple(hits), tuple(reads), tuple(linked), KEEP_SECONDS)


def failure_hits(subject: Subject, failure_id: str) -> list[Hit]:
    """What a failed attempt records (a block, a wrong one-time code, a decline, a rejected review)."""
    return [Hit(key("fail", subject.kind, dimension, value), failure_id, FAILURE_WINDOWS)
            for dimension, value in _dimension_values(subject).items()]


def local_hour(moment: datetime, tz: str) -> int:
    return moment.replace(tzinfo=UTC).astimezone(ZoneInfo(tz)).hour


def assemble(subject: Subject, counts: Counts | None, history: History | None, coupon_linked_uses: int,
             now: datetime, tz: str) -> dict:
    """The signals of one request: plain JSON values, stored with the decision."""
    values = _dimension_values(subject)
    email = (subject.email or "").strip().lower()
    signals: dict = {
        "subject": subject.kind,
        "amount": subject.amount,
        "currency": subject.currency,
        "channel": subject.channel,
        "method": subject.method,
        "quantity": subject.quantity,
        "coupon_code": subject.coupon_code,
        "email": email,
        "email_domain": email.split("@", 1)[1] if "@" in email else None,
        "ip": subject.ip,
        "ip_counted": "ip" in values,
        "device_id": subject.device_id,
        "instruments": dict(subject.instruments),
        "hour": local_hour(now, tz),
        "account_age_seconds": max(0, int((now - subject.account_created_at).total_seconds())),
        "counters_ok": counts is not None,
        "history_ok": history is not None,
    }
    for family, prefix, windows, dimensions in (
            ("att", "attempts", ATTEMPT_WINDOWS, DIMENSIONS), ("fail", "failures", FAILURE_WINDOWS, DIMENSIONS),
            ("ins", "instruments", INSTRUMENT_WINDOWS, DIMENSIONS),
            ("acct", "accounts", ACCOUNT_WINDOWS, ACCOUNT_DIMENSIONS)):
        for dimension in dimensions:
            value = values.get(dimension)
            for window in windows:
                found = counts.get(key(family, subject.kind, dimension, value), window) if counts and value else 0
                signals[f"{prefix}_{dimension}_{window}"] = found
    history = history or History()
    signals.update(history_count=history.count, history_total=history.total, history_largest=history.largest,
                   refunded_payments=history.refunded_payments, refunded_amount=history.refunded_amount,
                   coupon_linked_uses=coupon_linked_uses)
    return signals


def collect(subject: Subject, *, counters: CounterStore, profiles: ProfileSource, now: datetime, tz: str,
            attempt_id: str) -> tuple[dict, list[str], str]:
    """(signals, faults, counter store used). A store that fails leaves its signals marked not ok
    (counters_ok / history_ok) and says why in the faults; the rules decide what that means.

    The counters are sent first and their answer taken after the history is read, so Redis's round
    trip and the database's overlap; the two touch different data, so their order changes nothing."""
    pending = failure = None
    try:
        pending = counters.begin(observation(subject, attempt_id), now)
    except Exception as exc:  # noqa: BLE001 - a counter store failure must not stop the checkout
        failure = exc
    history: History | None = None
    history_fault = None
    try:
        history = profiles.history(subject, now)
    except Exception as exc:  # noqa: BLE001
        history_fault = f"history: unavailable ({exc.__class__.__name__}); history signals missing"
    finally:
        # Always taken, so that a call in flight gives its connection back.
        counts, faults, store = _answer(pending, failure)
    if history_fault:
        faults.append(history_fault)
    coupon_uses = 0
    if subject.coupon_code and counts is not None:
        linked = sorted({m for members in counts.members.values() for m in members} - {subject.user_id})
        if linked:
            try:
                coupon_uses = profiles.coupon_uses(subject.coupon_code, linked, subject.order_id, now)
            except Exception as exc:  # noqa: BLE001
                faults.append(f"coupons: unavailable ({exc.__class__.__name__})")
    return assemble(subject, counts, history, coupon_uses, now, tz), faults, store


def _answer(pending: Pending | None, failure: Exception | None) -> tuple[Counts | None, list[str], str]:
    if pending is not None:
        try:
            counts = pending()
            return counts, list(counts.faults), counts.store
        except Exception as exc:  # noqa: BLE001
            failure = exc
    return None, [f"counters: unavailable ({failure.__class__.__name__}); velocity signals missing"], "none"


def _is_channel(channel: str, signals: Mapping) -> float:
    return float(signals["channel"] == channel)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def _log(value: float) -> float:
    return math.log1p(max(value, 0))


FEATURES: tuple[tuple[str, Callable[[Mapping], float]], ...] = (
    ("log_amount", lambda s: _log(s["amount"])),
    ("is_topup", lambda s: float(s["subject"] == "topup")),
    *((f"channel_{channel}", partial(_is_channel, channel)) for channel in CHANNELS),
    ("log_account_age_days", lambda s: _log(s["account_age_seconds"] / 86400)),
    ("quantity", lambda s: float(s["quantity"])),
    ("attempts_user_600", lambda s: float(s["attempts_user_600"])),
    ("attempts_user_86400", lambda s: float(s["attempts_user_86400"])),
    ("attempts_ip_3600", lambda s: float(s["attempts_ip_3600"])),
    ("attempts_device_3600", lambda s: float(s["attempts_device_3600"])),
    ("failures_user_3600", lambda s: float(s["failures_user_3600"])),
    ("failures_user_86400", lambda s: float(s["failures_user_86400"])),
    ("failures_ip_3600", lambda s: float(s["failures_ip_3600"])),
    ("failures_device_86400", lambda s: float(s["failures_device_86400"])),
    ("instruments_user_86400", lambda s: float(s["instruments_user_86400"])),
    ("instruments_device_86400", lambda s: float(s["instruments_device_86400"])),
    ("accounts_ip_2592000", lambda s: float(s["accounts_ip_2592000"])),
    ("accounts_device_2592000", lambda s: float(s["accounts_device_2592000"])),
    ("has_device", lambda s: float(bool(s["device_id"]))),
    ("log_history_count", lambda s: _log(s["history_count"])),
    ("amount_over_largest", lambda s: _ratio(s["amount"], s["history_largest"])),
    ("amount_over_mean", lambda s: _ratio(s["amount"] * s["history_count"], s["history_total"])),
    ("refund_rate", lambda s: _ratio(s["refunded_payments"], s["history_count"])),
    ("coupon_linked_uses", lambda s: float(s["coupon_linked_uses"])),
    ("hour_sin", lambda s: math.sin(2 * math.pi * s["hour"] / 24)),
    ("hour_cos", lambda s: math.cos(2 * math.pi * s["hour"] / 24)),
)
FEATURE_NAMES = tuple(name for name, _ in FEATURES)


def vector(signals: Mapping) -> list[float]:
    """The model's input row, in FEATURE_NAMES order."""
    return [compute(signals) for _, compute in FEATURES]
