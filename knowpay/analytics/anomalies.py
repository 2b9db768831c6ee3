"""Scheduled anomaly detection on the analytics store (DESIGN: the origin document's §6.2 monitoring).

Each detector compares a recent window with a baseline and fires only when the difference is both
large (a stated minimum) and unlikely to be noise (about four standard deviations under a binomial
or Poisson model), with minimum volumes on both sides, so ordinary fluctuation stays quiet. A
finding is stored once per (kind, subject, window) and announced as an outbox event
`analytics.anomaly` carrying the numbers behind it.
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import duckdb
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from knowpay.analytics.models import Anomaly
from knowpay.analytics.store import Store, store_for
from knowpay.context import Context
from knowpay.domain.clock import isoformat
from knowpay.domain.ids import new_id
from knowpay.outbox.service import record_event

log = logging.getLogger(__name__)

Z = 4.0  # standard deviations
SETTLE = timedelta(minutes=10)  # attempts this young may still succeed
WINDOW = timedelta(hours=1)
BASELINE = timedelta(days=7)
MIN_ATTEMPTS, MIN_BASELINE_ATTEMPTS, MIN_DROP = 30, 200, 0.10
MIN_REASON_FAILURES, REASON_FACTOR = 10, 3.0
REFUND_WINDOW, REFUND_BASELINE = timedelta(hours=24), timedelta(days=28)
MIN_REFUNDS, REFUND_FACTOR, MIN_BASELINE_PAID = 10, 2.0, 100
GMV_WEEKS, MIN_GMV_ORDERS, GMV_MIN_SHIFT = 4, 5, 0.5
CREATOR_WINDOW, CREATOR_BASELINE_DAYS, CREATOR_HISTORY_DAYS = timedelta(hours=24), 28, 14
MIN_CREATOR_DAILY, CREATOR_DROP, CREATOR_SPIKE, MIN_CREATOR_SPIKE = 5.0, 0.3, 3.0, 10

KINDS = ("success_rate_drop", "failure_reason_spike", "refund_spike", "gmv_off_expectation", "creator_sales_shift")


@dataclass(frozen=True)
class Finding:
    kind: str
    subject: str
    bucket: str
    message: str
    observed: float
    expected: float
    window_start: datetime
    window_end: datetime
    numbers: dict = field(default_factory=dict)


def _hour(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H")


def _poisson_high(observed: float, expected: float) -> bool:
    return observed >= expected + Z * math.sqrt(max(expected, 1.0))


def success_rate_drops(con: duckdb.DuckDBPyConnection, now: datetime) -> list[Finding]:
    w1 = now - SETTLE
    w0, b0 = w1 - WINDOW, w1 - WINDOW - BASELINE
    rows = con.execute(
        "SELECT channel, count(*) FILTER (WHERE created_at >= $w0), count_if(status = 'succeeded' AND created_at >= $w0),"
        " count(*) FILTER (WHERE created_at < $w0), count_if(status = 'succeeded' AND created_at < $w0) "
        "FROM payments WHERE created_at >= $b0 AND created_at < $w1 GROUP BY channel ORDER BY channel",
        {"w0": w0, "w1": w1, "b0": b0}).fetchall()
    found = []
    for channel, n, s, bn, bs in rows:
        if n < MIN_ATTEMPTS or bn < MIN_BASELINE_ATTEMPTS:
            continue
        p, base = s / n, bs / bn
        spread = math.sqrt(max(base * (1 - base), 1e-6) / n)
        z = (p - base) / spread
        if base - p >= MIN_DROP and z <= -Z:
            found.append(Finding(
                "success_rate_drop", channel, _hour(w1),
                f"{channel}: {p:.0%} of {n} attempts succeeded in the last hour against {base:.0%} over 7 days",
                round(p, 4), round(base, 4), w0, w1,
                {"attempts": n, "succeeded": s, "baseline_attempts": bn, "baseline_succeeded": bs, "z": round(z, 2)}))
    return found


def failure_reason_spikes(con: duckdb.DuckDBPyConnection, now: datetime) -> list[Finding]:
    w1 = now - SETTLE
    w0, b0 = w1 - WINDOW, w1 - WINDOW - BASELINE
    rows = con.execute(
        "WITH a AS (SELECT channel, count(*) FILTER (WHERE created_at >= $w0) AS n, "
        "           count(*) FILTER (WHERE created_at < $w0) AS bn FROM payments "
        "           WHERE created_at >= $b0 AND created_at < $w1 GROUP BY channel), "
        "f AS (SELECT channel, coalesce(failure_code, 'unknown') AS code, count(*) FILTER (WHERE created_at >= $w0) AS k,"
        "      count(*) FILTER (WHERE created_at < $w0) AS bk FROM payments "
        "      WHERE status = 'failed' AND created_at >= $b0 AND created_at < $w1 GROUP BY ALL) "
        "SELECT f.channel, f.code, f.k, f.bk, a.n, a.bn FROM f JOIN a USING (channel) ORDER BY 1, 2",
        {"w0": w0, "w1": w1, "b0": b0}).fetchall()
    found = []
    for channel, code, k, bk, n, bn in rows:
        if k < MIN_REASON_FAILURES or bn < MIN_BASELINE_ATTEMPTS:
            continue
        expected = n * (bk + 0.5) / (bn + 1)
        if k >= REASON_FACTOR * expected and _poisson_high(k, expected):
            found.append(Finding(
                "failure_reason_spike", f"{channel}:{code}", _hour(w1),
                f"{channel}: {k} failures '{code}' in the last hour where about {expected:.1f} were expected",
                k, round(expected, 2), w0, w1,
                {"failures": k, "attempts": n, "baseline_failures": bk, "baseline_attempts": bn}))
    return found


def refund_spikes(con: duckdb.DuckDBPyConnection, now: datetime, currency: str) -> list[Finding]:
    w0, b0 = now - REFUND_WINDOW, now - REFUND_WINDOW - REFUND_BASELINE
    refunds, base_refunds = con.execute(
        "SELECT count(*) FILTER (WHERE created_at >= $w0), count(*) FILTER (WHERE created_at < $w0) FROM refunds "
        "WHERE kind = 'requested' AND created_at >= $b0 AND created_at < $now",
        {"w0": w0, "b0": b0, "now": now}).fetchall()[0]
    paid, base_paid = con.execute(
        "SELECT count(*) FILTER (WHERE paid_at >= $w0), count(*) FILTER (WHERE paid_at < $w0) FROM orders "
        "WHERE paid_at >= $b0 AND paid_at < $now AND currency = $currency",
        {"w0": w0, "b0": b0, "now": now, "currency": currency}).fetchall()[0]
    if refunds < MIN_REFUNDS or base_paid < MIN_BASELINE_PAID:
        return []
    base_rate = base_refunds / base_paid
    expected = base_rate * max(paid, 1)
    if refunds >= REFUND_FACTOR * expected and _poisson_high(refunds, expected):
        return [Finding("refund_spike", "platform", _hour(now),
                        f"{refunds} refunds asked in 24 hours where about {expected:.1f} were expected",
                        refunds, round(expected, 2), w0, now,
                        {"refunds": refunds, "paid_orders": paid, "baseline_refunds": base_refunds,
                         "baseline_paid_orders": base_paid, "baseline_rate": round(base_rate, 4)})]
    return []


def gmv_off_expectation(con: duckdb.DuckDBPyConnection, now: datetime, tz: ZoneInfo, currency: str) -> list[Finding]:
    """The last complete hour's GMV against the same hour of the week in the previous weeks."""
    local_now = now.replace(tzinfo=UTC).astimezone(tz).replace(tzinfo=None)
    h1 = local_now.replace(minute=0, second=0, microsecond=0)
    h0 = h1 - timedelta(hours=1)
    first = con.execute("SELECT min(paid_local) FROM orders WHERE paid_local IS NOT NULL").fetchall()[0][0]
    if first is None or first > h0 - timedelta(weeks=GMV_WEEKS):
        return []
    starts = [h0 - timedelta(weeks=k) for k in range(GMV_WEEKS + 1)]
    rows = {s: (g, n) for s, g, n in con.execute(
        "SELECT h, coalesce(sum(amount_total), 0), count(*) FROM (SELECT date_trunc('hour', paid_local) AS h, "
        "amount_total FROM orders WHERE currency = ? AND paid_local >= ? AND paid_local < ?) "
        "WHERE h IN (SELECT unnest(?::TIMESTAMP[])) GROUP BY h",
        [currency, starts[-1], h1, starts]).fetchall()}
    observed, orders = rows.get(h0, (0, 0))
    history = [rows.get(s, (0, 0)) for s in starts[1:]]
    mean = statistics.fmean(g for g, _ in history)
    mean_orders = statistics.fmean(n for _, n in history)
    if mean_orders < MIN_GMV_ORDERS:
        return []
    # Orders in an hour vary at least like a Poisson count; the mean of a few weeks is itself uncertain.
    variance = max(mean_orders, statistics.variance(n for _, n in history)) * (1 + 1 / GMV_WEEKS)
    z = (orders - mean_orders) / math.sqrt(variance)
    if abs(z) < Z or abs(observed - mean) < GMV_MIN_SHIFT * mean:
        return []
    direction = "above" if observed > mean else "below"
    return [Finding("gmv_off_expectation", "platform", _hour(h0),
                    f"GMV {observed} in the hour from {h0:%Y-%m-%d %H:00} is {direction} the usual {mean:.0f} "
                    f"for that hour of the week", observed, round(mean, 2), h0, h1,
                    {"gross": observed, "orders": orders, "previous_weeks": [g for g, _ in history],
                     "previous_orders": [n for _, n in history], "z": round(z, 2), "direction": direction,
                     "currency": currency})]


def creator_sales_shifts(con: duckdb.DuckDBPyConnection, now: datetime) -> list[Finding]:
    w0 = now - CREATOR_WINDOW
    b0 = w0 - timedelta(days=CREATOR_BASELINE_DAYS)
    rows = con.execute(
        "SELECT creator_id, count(DISTINCT order_key) FILTER (WHERE paid_at >= $w0), "
        "count(DISTINCT order_key) FILTER (WHERE paid_at < $w0), min(paid_at) FROM sales "
        "WHERE paid_at >= $b0 AND paid_at < $now GROUP BY creator_id ORDER BY creator_id",
        {"w0": w0, "b0": b0, "now": now}).fetchall()
    found = []
    for creator_id, recent, before, first in rows:
        history_days = min(CREATOR_BASELINE_DAYS, (w0 - first).total_seconds() / 86400)
        if history_days < CREATOR_HISTORY_DAYS:
            continue
        daily = before / history_days
        if daily < MIN_CREATOR_DAILY:
            continue
        drop = recent <= CREATOR_DROP * daily and recent <= daily - Z * math.sqrt(daily)
        spike = recent >= CREATOR_SPIKE * daily and recent >= MIN_CREATOR_SPIKE and _poisson_high(recent, daily)
        if drop or spike:
            word = "fell to" if drop else "jumped to"
            found.append(Finding(
                "creator_sales_shift", creator_id, w0.strftime("%Y-%m-%d"),
                f"creator {creator_id}: orders in 24 hours {word} {recent} from about {daily:.1f} a day",
                recent, round(daily, 2), w0, now,
                {"orders": recent, "daily_mean": round(daily, 2), "baseline_orders": before,
                 "baseline_days": round(history_days, 1), "direction": "down" if drop else "up"}))
    return found


def detect(con: duckdb.DuckDBPyConnection, *, now: datetime, timezone: str, currency: str) -> list[Finding]:
    """Every detector over the store as of `now` (naive UTC)."""
    return [*success_rate_drops(con, now), *failure_reason_spikes(con, now), *refund_spikes(con, now, currency),
            *gmv_off_expectation(con, now, ZoneInfo(timezone), currency), *creator_sales_shifts(con, now)]


def anomaly_payload(anomaly: Anomaly) -> dict:
    return {"id": anomaly.id, "kind": anomaly.kind, "subject": anomaly.subject, "message": anomaly.message,
            "observed": anomaly.observed, "expected": anomaly.expected, "numbers": anomaly.numbers,
            "window_start": isoformat(anomaly.window_start), "window_end": isoformat(anomaly.window_end),
            "created_at": isoformat(anomaly.created_at)}


def record_findings(ctx: Context, findings: list[Finding]) -> list[Anomaly]:
    """Store each new finding with its `analytics.anomaly` event in one transaction; repeats are skipped."""
    recorded = []
    for finding in findings:
        with ctx.db.transaction() as session:
            known = session.scalar(select(Anomaly.id).where(Anomaly.kind == finding.kind,
                                                            Anomaly.subject == finding.subject,
                                                            Anomaly.bucket == finding.bucket))
            if known:
                continue
            fields = asdict(finding)
            anomaly = Anomaly(id=new_id("evt"), created_at=ctx.clock.now(), **fields)
            try:
                with session.begin_nested():
                    session.add(anomaly)
                    session.flush()
            except IntegrityError:
                continue  # another checker recorded it first
            event = record_event(session, type="analytics.anomaly", object_type="analytics_anomaly",
                                 object_id=anomaly.id, sequence=1, payload=anomaly_payload(anomaly), clock=ctx.clock)
            # The anomaly is known by the id of the event that announced it.
            event.id = anomaly.id
            recorded.append(anomaly)
    for anomaly in recorded:
        log.warning("analytics anomaly %s %s: %s", anomaly.kind, anomaly.subject, anomaly.message)
    return recorded


def check_anomalies(ctx: Context, store: Store | None = None) -> list[Anomaly]:
    store = store or store_for(ctx.settings)
    with store.reader() as con:
        findings = detect(con, now=ctx.clock.now(), timezone=ctx.settings.timezone, currency=ctx.settings.currency)
    return record_findings(ctx, findings)
