"""Channel ordering at checkout: enabled channels ranked by predicted success and speed for the
buyer's device class and the order's amount, learned from the analytics store.

The learning runs in the worker (`refresh_channel_model`): it condenses the last 30 days of
attempts into a small table in the operational database, so checkout reads a few indexed rows and
never touches DuckDB. A prediction shrinks the cell's success rate (channel × device × amount band)
towards the channel's rate on that device, that towards the channel's overall rate, and that
towards the platform's: a cell with few attempts says little on its own.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import NamedTuple, Self

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from knowpay.accounts.models import User
from knowpay.analytics import source
from knowpay.analytics.models import ChannelStat
from knowpay.analytics.service import get_settings
from knowpay.analytics.store import Store, store_for
from knowpay.context import Context
from knowpay.domain.errors import NotFound
from knowpay.orders.models import Order
from knowpay.payments.models import Payment

LEARN_DAYS = 30
# Attempts younger than this may still be paid; they would count as failures if learned from now.
SETTLE = timedelta(minutes=15)
PRIOR_ATTEMPTS = 20  # how many attempts a level's rate is worth when shrinking the level below it
DEFAULT_RATE = 0.75
SPEED_WEIGHT = 0.10  # the score a 10-minute median time to pay costs, against 1.0 for certain success
SPEED_CAP_SECONDS = 600.0
RETURNING_BONUS = 0.03
CACHE_SECONDS = 60.0


@dataclass(frozen=True)
class Cell:
    attempts: int
    succeeded: int
    p50_seconds: float | None


# Why a channel stands where it does, clause by clause: a code, its English wording (what the API
# shows) and the numbers it names. Pages word the same codes in the reader's language.
CLAUSES = {
    "ordering_off": "channel ordering is turned off: the configured order",
    "predicted": ("{rate:.0%} predicted success ({paid}/{attempts} paid on {device} for {band} yuan in {days} days; "
                  "{channel_paid}/{channel_attempts} on every device and amount)"),
    "median": "median {seconds:.0f} s to pay",
    "no_timing": "no timing yet",
    "returning": "the buyer's last successful channel",
}


@dataclass(frozen=True)
class Clause:
    code: str  # a key of CLAUSES
    params: dict = field(default_factory=dict)


class Reason(str):
    """A ranking's reason: the English text the API gives (it is that string), and its clauses."""

    clauses: tuple[Clause, ...]

    def __new__(cls, *clauses: Clause) -> Self:
        reason = super().__new__(cls, "; ".join(CLAUSES[c.code].format(**c.params) for c in clauses))
        reason.clauses = clauses
        return reason


class RankedChannel(NamedTuple):
    channel: str
    score: float
    reason: Reason


def refresh_channel_model(ctx: Context, store: Store | None = None) -> int:
    """Recount attempts per channel, device class and amount band; returns how many cells were written."""
    store = store or store_for(ctx.settings)
    now = ctx.clock.now()
    with store.reader() as con:
        rows = con.execute(
            "SELECT channel, device_class, amount_band, count(*), count_if(status = 'succeeded'), "
            "quantile_cont(seconds_to_pay, 0.5) FILTER (WHERE status = 'succeeded') FROM payments "
            "WHERE created_at >= ? AND created_at < ? GROUP BY ALL",
            [now - timedelta(days=LEARN_DAYS), now - SETTLE]).fetchall()
    with ctx.db.transaction() as session:
        session.execute(delete(ChannelStat))
        session.add_all(ChannelStat(channel=c, device_class=d, amount_band=b, attempts=n, succeeded=s,
                                    p50_seconds=p50, refreshed_at=now) for c, d, b, n, s, p50 in rows)
    _cache.clear()
    return len(rows)


class _ModelCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: tuple[float, str, dict] | None = None

    def get(self, ctx: Context) -> dict[tuple[str, str, str], Cell]:
        with self._lock:
            if self._value and self._value[1] == ctx.db.url and time.monotonic() - self._value[0] < CACHE_SECONDS:
                return self._value[2]
        with ctx.db.transaction(write=False) as session:
            model = {(s.channel, s.device_class, s.amount_band): Cell(s.attempts, s.succeeded, s.p50_seconds)
                     for s in session.scalars(select(ChannelStat))}
        with self._lock:
            self._value = (time.monotonic(), ctx.db.url, model)
        return model

    def clear(self) -> None:
        with self._lock:
            self._value = None


_cache = _ModelCache()


def _shrink(succeeded: int, attempts: int, prior: float) -> float:
    return (succeeded + PRIOR_ATTEMPTS * prior) / (attempts + PRIOR_ATTEMPTS)


def _sum(cells: list[Cell]) -> tuple[int, int]:
    return sum(c.attempts for c in cells), sum(c.succeeded for c in cells)


def _median(cells: list[Cell]) -> float | None:
    """The median time of the cells with the most successes, weighted by them (a good-enough pooled median)."""
    timed = [c for c in cells if c.p50_seconds is not None and c.succeeded]
    total = sum(c.succeeded for c in timed)
    return sum(c.p50_seconds * c.succeeded for c in timed) / total if total else None


def _last_paid_channel(ctx: Context, buyer_id: str | None) -> str | None:
    if not buyer_id:
        return None
    with ctx.db.transaction(write=False) as session:
        return session.scalar(select(Payment.channel).where(Payment.buyer_id == buyer_id,
                                                            Payment.status == "succeeded")
                              .order_by(Payment.created_at.desc()).limit(1))


def channel_ordering_enabled(ctx: Context) -> bool:
    with ctx.db.transaction(write=False) as session:
        return bool(get_settings(session)["channel_ordering"])


def rank_channels(ctx: Context, *, buyer_id: str | None, device_class: str, amount: int, enabled: list[str],
                  respect_setting: bool = True) -> list[RankedChannel]:
    """`enabled` ordered best first as (channel, score, reason). With the `channel_ordering` setting
    off, `enabled` comes back in its own order with score 0."""
    if respect_setting and not channel_ordering_enabled(ctx):
        return [RankedChannel(channel, 0.0, Reason(Clause("ordering_off"))) for channel in enabled]
    device = device_class if device_class in source.DEVICE_CLASSES else "unknown"
    band = source.amount_band(amount)
    model = _cache.get(ctx)
    by_channel: dict[str, list[Cell]] = defaultdict(list)
    for (channel, _d, _b), cell in model.items():
        by_channel[channel].append(cell)
    everything = list(model.values())
    total_attempts, total_succeeded = _sum(everything)
    platform = total_succeeded / total_attempts if total_attempts else DEFAULT_RATE
    platform_median = _median(everything)
    returning = _last_paid_channel(ctx, buyer_id)
    ranked = []
    for position, channel in enumerate(enabled):
        cells = by_channel.get(channel, [])
        ch_attempts, ch_succeeded = _sum(cells)
        p = _shrink(ch_succeeded, ch_attempts, platform)
        on_device = [c for (ch, d, _b), c in model.items() if ch == channel and d == device]
        if device != "unknown":
            device_attempts, device_succeeded = _sum(on_device)
            p = _shrink(device_succeeded, device_attempts, p)
        cell = model.get((channel, device, band))
        if cell is not None:
            p = _shrink(cell.succeeded, cell.attempts, p)
        median = next((m for m in (cell.p50_seconds if cell and cell.succeeded >= 5 else None, _median(on_device),
                                   _median(cells), platform_median) if m is not None), None)
        penalty = SPEED_WEIGHT * (min(median, SPEED_CAP_SECONDS) / SPEED_CAP_SECONDS if median is not None else 0.5)
        score = p - penalty + (RETURNING_BONUS if channel == returning else 0.0)
        clauses = [Clause("predicted", {"rate": p, "paid": cell.succeeded if cell else 0,
                                        "attempts": cell.attempts if cell else 0, "device": device, "band": band,
                                        "days": LEARN_DAYS, "channel_paid": ch_succeeded,
                                        "channel_attempts": ch_attempts}),
                   Clause("median", {"seconds": median}) if median is not None else Clause("no_timing")]
        if channel == returning:
            clauses.append(Clause("returning"))
        ranked.append((position, RankedChannel(channel, round(score, 4), Reason(*clauses))))
    ranked.sort(key=lambda r: (-r[1].score, r[0]))
    return [entry for _, entry in ranked]


def enabled_channels(ctx: Context, order: Order) -> list[str]:
    """The channels this order can be paid with here: the configured ones, and coins for a platform-currency
    order without coin packs (coins cannot buy coins)."""
    names = list(ctx.channels.names())
    if (order.currency == ctx.settings.currency and "wallet" not in names
            and not any(item.kind == "coin_pack" for item in order.items)):
        names.append("wallet")
    return names


def checkout_channels(ctx: Context, session: Session, user: User, order_id: str, *, device_class: str) -> dict:
    """The caller's order's channels, best first; the reasons are for admins only."""
    order = session.get(Order, order_id)
    admin = user.has_any_role("admin")
    if order is None or (order.buyer_id != user.id and not admin):
        raise NotFound("No such order.", param="id")
    ordering = channel_ordering_enabled(ctx)
    ranked = rank_channels(ctx, buyer_id=order.buyer_id, device_class=device_class, amount=order.amount_total,
                           enabled=enabled_channels(ctx, order))
    data = []
    for rank, (channel, score, reason) in enumerate(ranked, start=1):
        row: dict = {"channel": channel, "rank": rank, "score": score}
        if admin:
            row["reason"] = reason
        data.append(row)
    return {"data": data, "ordering": "learned" if ordering else "configured", "device_class": device_class,
            "amount_band": source.amount_band(order.amount_total)}
