"""The metrics, as queries on the analytics store. No Flask here: the API, the report and the web
pages all call `compute(con, query)` and get plain rows back.

Every row has a `period`: the first day of its day, ISO week (Monday) or month in the platform
time zone. A time series covers whole periods (the range is widened to the first period's start and
the last one's end) and has every period, zeros where nothing happened; rankings and breakdowns are
over the range as asked and carry its first day. Money is in integer minor units of `currency`;
rates are fractions rounded to 4 places.

Queries read the summaries the load keeps (store.DERIVED, buyer_months) where their filters allow:
platform-wide series, and the rankings' whole months; the others read the fact tables. Both give the
same answer (tests compare them). Times to pay are quantiles of 1 %-wide bins (timing.py) on both.

Scope: `creator_id` set means "only this creator's products" (what a creator sees); None is the
platform. Money of an order with several creators is split by its lines, so a creator's figures
never include another creator's lines.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import duckdb

from knowpay.analytics import timing

GRANULARITIES = ("day", "week", "month")
GROUPS = ("channel", "method", "kind", "creator", "product", "device_class", "amount_band")
STEP = {"day": "INTERVAL 1 DAY", "week": "INTERVAL 7 DAY", "month": "INTERVAL 1 MONTH"}


@dataclass(frozen=True)
class Query:
    metric: str
    start: date
    end: date  # inclusive
    granularity: str = "day"
    channel: str | None = None
    kind: str | None = None
    creator_id: str | None = None
    group_by: str | None = None
    currency: str = "cny"
    limit: int = 10
    timezone: str = "Asia/Shanghai"
    now: datetime | None = None  # naive UTC; for "as of now" figures (MRR, churn)
    rollups: bool = True  # False: always read the facts (tests compare the two)

    @property
    def lower(self) -> datetime:
        return datetime(self.start.year, self.start.month, self.start.day)

    @property
    def upper(self) -> datetime:
        after = self.end + timedelta(days=1)
        return datetime(after.year, after.month, after.day)

    @property
    def by_creator(self) -> bool:
        return self.creator_id is not None or self.group_by == "creator"

    @property
    def by_kind(self) -> bool:
        return self.kind is not None or self.group_by == "kind"


@dataclass(frozen=True)
class Metric:
    name: str
    title: str
    figures: tuple[str, ...]
    compute: Callable[[duckdb.DuckDBPyConnection, Query], list[dict]]
    filters: frozenset[str] = frozenset({"channel", "kind", "creator_id"})
    groups: tuple[str, ...] = ()
    series: bool = True  # one row per period; False: one set of rows for the whole range
    granularities: tuple[str, ...] = GRANULARITIES
    money: bool = True


METRICS: dict[str, Metric] = {}


def metric(name: str, title: str, figures: tuple[str, ...], **options) -> Callable:
    def register(fn: Callable) -> Callable:
        METRICS[name] = Metric(name, title, figures, fn, **options)
        return fn

    return register


# --- periods --------------------------------------------------------------------------------------


def period_start(day: date, granularity: str) -> date:
    if granularity == "week":
        return day - timedelta(days=day.weekday())
    if granularity == "month":
        return day.replace(day=1)
    return day


def next_period(start: date, granularity: str) -> date:
    if granularity == "day":
        return start + timedelta(days=1)
    if granularity == "week":
        return start + timedelta(days=7)
    return date(start.year + start.month // 12, start.month % 12 + 1, 1)


def widened(query: Query) -> Query:
    """A time series' range stretched to whole periods."""
    if not METRICS[query.metric].series:
        return query
    last = next_period(period_start(query.end, query.granularity), query.granularity) - timedelta(days=1)
    return replace(query, start=period_start(query.start, query.granularity), end=last)


def periods(query: Query) -> list[date]:
    out, current = [], period_start(query.start, query.granularity)
    while current <= query.end:
        out.append(current)
        current = next_period(current, query.granularity)
    return out


def _bucket(column: str, granularity: str) -> str:
    return f"CAST(date_trunc('{granularity}', {column}) AS DATE)"


def rate(part: float, whole: float) -> float:
    return round(part / whole, 4) if whole else 0.0


def ratio_int(part: int, whole: int) -> int:
    """part / whole rounded half up, for money per head."""
    return (2 * part + whole) // (2 * whole) if whole else 0


def to_utc(moment: datetime, tz: ZoneInfo) -> datetime:
    """A naive wall-clock time in the platform zone → naive UTC."""
    return moment.replace(tzinfo=tz).astimezone(UTC).replace(tzinfo=None)


def _local_now(q: Query) -> datetime:
    now = q.now or datetime.now(UTC).replace(tzinfo=None)
    return now.replace(tzinfo=UTC).astimezone(ZoneInfo(q.timezone)).replace(tzinfo=None)


# --- filters --------------------------------------------------------------------------------------


@dataclass
class Where:
    clauses: list[str] = field(default_factory=list)
    params: list = field(default_factory=list)

    def add(self, clause: str, *params: object) -> Where:
        self.clauses.append(clause)
        self.params.extend(params)
        return self

    @property
    def sql(self) -> str:
        return " AND ".join(self.clauses) if self.clauses else "TRUE"


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)


def _sales_where(q: Query, time_col: str = "paid_local", *, money: bool = True, alias: str = "",
                 outside: tuple[date, date] | None = None) -> Where:
    """Sales lines of the range and filters; `outside` = [first, after) leaves those days out (a summary has them)."""
    a = f"{alias}." if alias else ""
    t = f"{a}{time_col}"
    if outside:
        # Two ranges rather than NOT BETWEEN: each lets the scan skip the row groups of other days.
        where = Where().add(f"({t} >= ? AND {t} < ? OR {t} >= ? AND {t} < ?)", q.lower, _midnight(outside[0]),
                            _midnight(outside[1]), q.upper)
    else:
        where = Where().add(f"{t} >= ? AND {t} < ?", q.lower, q.upper)
    if money:
        where.add(f"{a}currency = ?", q.currency)
    if q.channel:
        where.add(f"{a}channel = ?", q.channel)
    if q.kind:
        where.add(f"{a}kind = ?", q.kind)
    if q.creator_id:
        where.add(f"{a}creator_id = ?", q.creator_id)
    return where


def _orders_in_scope(q: Query, alias_col: str = "order_key") -> tuple[str, list]:
    """A clause restricting order-level rows to orders holding lines of the creator / kind asked for."""
    parts, params = [], []
    if q.creator_id:
        parts.append("creator_id = ?")
        params.append(q.creator_id)
    if q.kind:
        parts.append("kind = ?")
        params.append(q.kind)
    if not parts:
        return "TRUE", []
    return f"{alias_col} IN (SELECT order_key FROM sales WHERE {' AND '.join(parts)})", params


GROUP_COLUMNS = {"channel": "channel", "method": "coalesce(method, '')", "kind": "kind", "creator": "creator_id",
                 "product": "product_id", "device_class": "device_class", "amount_band": "amount_band"}
GROUP_NAMES = {"creator": "creator_id", "product": "product_id"}


def _group_expr(q: Query) -> tuple[str, str | None]:
    if not q.group_by:
        return "", None
    return f", {GROUP_COLUMNS[q.group_by]} AS grp", GROUP_NAMES.get(q.group_by, q.group_by)


def _order_flag(q: Query) -> str:
    """The sales line that stands for its order among the lines a query keeps (see store.TABLES)."""
    if q.group_by == "product":
        return "TRUE"  # a product appears once in an order
    if q.by_creator and q.by_kind:
        return "first_of_creator_kind"
    return "first_of_creator" if q.by_creator else "first_of_kind" if q.by_kind else "first_line"


def _sales_summary_ok(q: Query) -> bool:
    """r_sales has channel, method, kind and currency; creators and products need the facts."""
    return q.rollups and q.creator_id is None and q.group_by in (None, "channel", "method", "kind")


def _summary_where(q: Query) -> Where:
    where = Where().add("hour >= ? AND hour < ? AND currency = ?", q.lower, q.upper, q.currency)
    if q.channel:
        where.add("channel = ?", q.channel)
    if q.kind:
        where.add("kind = ?", q.kind)
    return where


def _series(con: duckdb.DuckDBPyConnection, q: Query, sql: str, params: list, sums: tuple[str, ...],
            derive: Callable[[dict], dict]) -> list[dict]:
    """Run `sql` (columns: period, [grp], *sums) and lay it on the full grid of periods."""
    grouped = bool(q.group_by)
    found: dict[tuple, dict] = {}
    groups: set = set()
    for row in con.execute(sql, params).fetchall():
        period, rest = row[0], row[1:]
        grp = None
        if grouped:
            grp, rest = rest[0], rest[1:]
            groups.add(grp)
        found[(period, grp)] = {name: (value or 0) for name, value in zip(sums, rest, strict=True)}
    _, group_name = _group_expr(q)
    out = []
    for grp in sorted(groups, key=lambda g: (g is None, str(g))) if grouped else [None]:
        for period in periods(q):
            figures = found.get((period, grp)) or dict.fromkeys(sums, 0)
            row = {"period": period.isoformat()}
            if grouped:
                row[group_name] = grp
            row.update(derive(dict(figures)))
            out.append(row)
    return out


def _sales_series(con, q: Query, *, summary: str, facts: str, sums: tuple[str, ...], derive: Callable,
                  extra: str = "") -> list[dict]:
    """A sales time series from r_sales when it can answer, else from the sales lines.
    `summary` and `facts` are the aggregate expressions over each; `extra` an added condition."""
    grp, _ = _group_expr(q)
    if _sales_summary_ok(q):
        where = _summary_where(q)
        source, time_col = "r_sales", "hour"
        select = summary.format(orders="kind_orders" if q.by_kind else "orders",
                                refunded_orders="kind_refunded_orders" if q.by_kind else "refunded_orders")
    else:
        where = _sales_where(q)
        source, time_col = "sales", "paid_local"
        select = facts.format(flag=_order_flag(q))
    if extra:
        where.add(extra)
    sql = f"SELECT {_bucket(time_col, q.granularity)} AS period{grp}, {select} FROM {source} WHERE {where.sql} GROUP BY ALL"
    return _series(con, q, sql, where.params, sums, derive)


# --- money ----------------------------------------------------------------------------------------


@metric("gmv", "GMV: paid orders by the day they were paid", ("gross", "refunded", "net", "orders"),
        groups=("channel", "method", "kind", "creator", "product"))
def gmv(con, q: Query) -> list[dict]:
    return _sales_series(con, q, summary="sum(gross), sum(refunded), sum({orders})",
                         facts="sum(net), sum(refunded), count_if({flag})", sums=("gross", "refunded", "orders"),
                         derive=lambda f: {"gross": f["gross"], "refunded": f["refunded"],
                                           "net": f["gross"] - f["refunded"], "orders": f["orders"]})


@metric("net_revenue", "Net revenue after refunds and fees (coin top-ups excluded: they are wallet credit)",
        ("gross", "refunded", "channel_fees", "platform_fees", "creator_earnings", "net"),
        groups=("channel", "method", "kind", "creator", "product"))
def net_revenue(con, q: Query) -> list[dict]:
    creator = q.creator_id is not None

    def derive(f: dict) -> dict:
        kept = f["gross"] - f["refunded"]
        # The platform bears the channels' fees; a creator's net is what they earn.
        channel_fees = 0 if creator else f["channel_fee"]
        return {"gross": f["gross"], "refunded": f["refunded"], "channel_fees": channel_fees,
                "platform_fees": kept - f["creator_net"], "creator_earnings": f["creator_net"],
                "net": f["creator_net"] if creator else kept - channel_fees}

    return _sales_series(con, q, summary="sum(gross), sum(refunded), sum(channel_fee), sum(creator_net)",
                         facts="sum(net), sum(refunded), sum(channel_fee), sum(creator_net)",
                         sums=("gross", "refunded", "channel_fee", "creator_net"), derive=derive,
                         extra="kind <> 'coin_pack'")


@metric("coins", "Coins issued (top-ups and bonuses) and spent", ("issued", "spent", "refunded_to_wallet"),
        filters=frozenset({"kind", "creator_id"}))
def coins(con, q: Query) -> list[dict]:
    wallet = "FILTER (WHERE channel = 'wallet')"
    return _sales_series(con, q, summary=f"sum(coins_issued), sum(gross) {wallet}, sum(refunded) {wallet}",
                         facts=f"sum(coins_issued), sum(net) {wallet}, sum(refunded) {wallet}",
                         sums=("issued", "spent", "refunded_to_wallet"), derive=dict)


@metric("refunds", "Refunds of the orders paid in each period", ("paid_orders", "refunded_orders", "rate",
                                                                 "gross", "refunded", "amount_rate"),
        groups=("channel", "kind", "creator"))
def refunds(con, q: Query) -> list[dict]:
    from knowpay.analytics.store import REFUNDED

    return _sales_series(
        con, q, summary="sum({orders}), sum({refunded_orders}), sum(gross), sum(refunded)",
        facts=f"count_if({{flag}}), count_if({{flag}} AND {REFUNDED}), sum(net), sum(refunded)",
        sums=("paid_orders", "refunded_orders", "gross", "refunded"),
        derive=lambda f: {"paid_orders": f["paid_orders"], "refunded_orders": f["refunded_orders"],
                          "rate": rate(f["refunded_orders"], f["paid_orders"]), "gross": f["gross"],
                          "refunded": f["refunded"], "amount_rate": rate(f["refunded"], f["gross"])})


def _one_currency(con, q: Query) -> bool:
    """True when every sale is in the asked currency, so buyer counts need no currency filter."""
    return not con.execute("SELECT count(*) FROM r_sales WHERE currency <> ?", [q.currency]).fetchall()[0][0]


def _buyer_months_ok(con, q: Query) -> bool:
    return (q.rollups and q.granularity == "month" and not (q.channel or q.kind or q.creator_id or q.group_by))


@metric("arpu", "Average revenue per paying buyer (after refunds)", ("revenue", "buyers", "arpu"),
        groups=("channel", "kind", "creator"))
def arpu(con, q: Query) -> list[dict]:
    derive = (lambda f: {"revenue": f["revenue"], "buyers": f["buyers"], "arpu": ratio_int(f["revenue"], f["buyers"])})
    if _buyer_months_ok(con, q) and _one_currency(con, q):
        sql = f"""
            WITH r AS (SELECT {_bucket('hour', 'month')} AS period, sum(gross - refunded) AS revenue FROM r_sales
                       WHERE hour >= ? AND hour < ? AND currency = ? GROUP BY ALL),
                 b AS (SELECT month AS period, count(*) AS buyers FROM buyer_months
                       WHERE month >= ? AND month < ? GROUP BY ALL)
            SELECT period, coalesce(revenue, 0), coalesce(buyers, 0) FROM r FULL OUTER JOIN b USING (period)"""
        return _series(con, q, sql, [q.lower, q.upper, q.currency, q.start, q.upper.date()], ("revenue", "buyers"),
                       derive)
    where = _sales_where(q)
    grp, _ = _group_expr(q)
    sql = (f"SELECT {_bucket('paid_local', q.granularity)} AS period{grp}, sum(net - refunded), "
           f"count(DISTINCT buyer_key) FROM sales WHERE {where.sql} GROUP BY ALL")
    return _series(con, q, sql, where.params, ("revenue", "buyers"), derive)


@metric("repeat_purchase", "Buyers of the period who have bought at least twice by its end",
        ("buyers", "repeat_buyers", "rate"), money=False)
def repeat_purchase(con, q: Query) -> list[dict]:
    derive = (lambda f: {"buyers": f["buyers"], "repeat_buyers": f["repeat_buyers"],
                         "rate": rate(f["repeat_buyers"], f["buyers"])})
    if _buyer_months_ok(con, q):
        sql = (f"SELECT month, count(*), count_if(second_paid < month + {STEP['month']}) FROM buyer_months "
               "WHERE month >= ? AND month < ? GROUP BY month")
        return _series(con, q, sql, [q.start, q.upper.date()], ("buyers", "repeat_buyers"), derive)
    scope = _sales_where(replace(q, start=date(1970, 1, 1)), money=False)
    bucket = _bucket("paid_local", q.granularity)
    sql = f"""
        WITH o AS (SELECT buyer_key, order_key, min(paid_local) AS paid_local FROM sales
                   WHERE {scope.sql} GROUP BY ALL),
             second AS (SELECT buyer_key, min(paid_local, 2) AS firsts FROM o
                        WHERE buyer_key IN (SELECT buyer_key FROM o WHERE paid_local >= ?) GROUP BY buyer_key),
             active AS (SELECT DISTINCT buyer_key, {bucket} AS period FROM o WHERE paid_local >= ?)
        SELECT a.period, count(*), count_if(len(s.firsts) >= 2 AND s.firsts[2] < a.period + {STEP[q.granularity]})
        FROM active a JOIN second s USING (buyer_key) GROUP BY ALL"""
    return _series(con, q, sql, [*scope.params, q.lower, q.lower], ("buyers", "repeat_buyers"), derive)


def _whole_months(q: Query) -> tuple[date, date] | None:
    """[first, after): the whole months inside the range, if any."""
    first = q.start if q.start.day == 1 else next_period(period_start(q.start, "month"), "month")
    after = q.end + timedelta(days=1)
    after = after if after.day == 1 else period_start(after, "month")
    return (first, after) if first < after else None


def _product_sales(q: Query) -> tuple[str, list]:
    """The range's sales as rows (product_id, creator_id, kind, lines, units, gross, refunded, creator_orders,
    creator_kind_orders), to be summed per product or creator: the whole months from r_products, the
    days around them (or all, without rollups) from the sales lines."""
    months = _whole_months(q) if q.rollups else None
    facts = _sales_where(q, outside=months)
    parts, params = [], []
    if months:
        summary = Where().add("month >= ? AND month < ? AND currency = ?", *months, q.currency)
        for column in ("channel", "kind", "creator_id"):
            if getattr(q, column):
                summary.add(f"{column} = ?", getattr(q, column))
        parts.append("SELECT product_id, creator_id, kind, lines, units, gross, refunded, creator_orders, "
                     f"creator_kind_orders FROM r_products WHERE {summary.sql}")
        params += summary.params
    parts.append("SELECT product_id, creator_id, kind, 1, quantity, net, refunded, CAST(first_of_creator AS BIGINT), "
                 f"CAST(first_of_creator_kind AS BIGINT) FROM sales WHERE {facts.sql}")
    params += facts.params
    columns = "product_id, creator_id, kind, lines, units, gross, refunded, creator_orders, creator_kind_orders"
    return f"SELECT * FROM ({' UNION ALL '.join(parts)}) AS u({columns})", params


@metric("top_products", "Best-selling products of the range", ("orders", "units", "gross", "refunded", "net"),
        series=False)
def top_products(con, q: Query) -> list[dict]:
    lines, params = _product_sales(q)
    sql = (f"WITH t AS (SELECT product_id, any_value(kind) AS kind, any_value(creator_id) AS creator_id, "
           f"sum(lines) AS orders, sum(units) AS units, sum(gross) AS gross, sum(refunded) AS refunded "
           f"FROM ({lines}) GROUP BY product_id ORDER BY sum(gross) - sum(refunded) DESC, product_id LIMIT ?) "
           f"SELECT t.product_id, p.title, t.kind, t.creator_id, t.orders, t.units, t.gross, t.refunded "
           f"FROM t LEFT JOIN products p ON p.product_id = t.product_id ORDER BY t.gross - t.refunded DESC, t.product_id")
    return [{"period": q.start.isoformat(), "product_id": pid, "title": title, "kind": kind, "creator_id": cid,
             "orders": orders, "units": units, "gross": gross, "refunded": refunded, "net": gross - refunded}
            for pid, title, kind, cid, orders, units, gross, refunded in con.execute(sql, [*params, q.limit]).fetchall()]


@metric("top_creators", "Creators with the most sales in the range", ("orders", "products", "gross", "refunded", "net"),
        series=False)
def top_creators(con, q: Query) -> list[dict]:
    lines, params = _product_sales(q)
    orders = "creator_kind_orders" if q.kind else "creator_orders"
    # Per product first: then a creator's products sold is a plain count, not a distinct count over the lines.
    rows = con.execute(f"WITH p AS (SELECT creator_id, product_id, sum({orders}) AS orders, sum(gross) AS gross, "
                       f"sum(refunded) AS refunded FROM ({lines}) GROUP BY ALL) "
                       "SELECT creator_id, sum(orders), sum(gross), sum(refunded), count(*) FROM p GROUP BY creator_id "
                       "ORDER BY sum(gross) - sum(refunded) DESC, creator_id LIMIT ?", [*params, q.limit]).fetchall()
    return [{"period": q.start.isoformat(), "creator_id": cid, "orders": orders, "products": products,
             "gross": gross, "refunded": refunded, "net": gross - refunded}
            for cid, orders, gross, refunded, products in rows]


@metric("heatmap", "Paid orders by weekday (1 = Monday) and hour, in the platform time zone",
        ("orders", "gross"), series=False)
def heatmap(con, q: Query) -> list[dict]:
    if _sales_summary_ok(q):
        where = _summary_where(q)
        sql = (f"SELECT isodow(hour), hour(hour), sum({'kind_orders' if q.by_kind else 'orders'}), sum(gross) "
               f"FROM r_sales WHERE {where.sql} GROUP BY ALL")
    else:
        where = _sales_where(q)
        sql = (f"SELECT isodow(paid_local), hour(paid_local), count_if({_order_flag(q)}), sum(net) FROM sales "
               f"WHERE {where.sql} GROUP BY ALL")
    found = {(d, h): (n, g) for d, h, n, g in con.execute(sql, where.params).fetchall()}
    return [{"period": q.start.isoformat(), "weekday": d, "hour": h, "orders": found.get((d, h), (0, 0))[0],
             "gross": found.get((d, h), (0, 0))[1]} for d in range(1, 8) for h in range(24)]


# --- payments -------------------------------------------------------------------------------------


def _payments_where(q: Query) -> Where:
    where = Where().add("created_local >= ? AND created_local < ?", q.lower, q.upper)
    if q.channel:
        where.add("channel = ?", q.channel)
    clause, params = _orders_in_scope(q)
    return where.add(clause, *params)


def _payments_summary_ok(q: Query) -> bool:
    return q.rollups and q.creator_id is None and q.kind is None


def _payments_summary_where(q: Query) -> Where:
    where = Where().add("day >= ? AND day < ?", q.start, q.upper.date())
    if q.channel:
        where.add("channel = ?", q.channel)
    return where


@metric("success_rate", "Payment attempts that succeeded, by the day the attempt began",
        ("attempts", "succeeded", "failed", "rate"), groups=("channel", "method", "device_class", "amount_band"),
        money=False)
def success_rate(con, q: Query) -> list[dict]:
    grp, _ = _group_expr(q)
    if _payments_summary_ok(q):
        where = _payments_summary_where(q)
        sql = (f"SELECT {_bucket('day', q.granularity)} AS period{grp}, sum(attempts), "
               f"sum(attempts) FILTER (WHERE status = 'succeeded'), sum(attempts) FILTER (WHERE status = 'failed') "
               f"FROM r_payments WHERE {where.sql} GROUP BY ALL")
    else:
        where = _payments_where(q)
        sql = (f"SELECT {_bucket('created_local', q.granularity)} AS period{grp}, count(*), "
               f"count_if(status = 'succeeded'), count_if(status = 'failed') FROM payments "
               f"WHERE {where.sql} GROUP BY ALL")
    return _series(con, q, sql, where.params, ("attempts", "succeeded", "failed"),
                   lambda f: {**f, "rate": rate(f["succeeded"], f["attempts"])})


@metric("failure_reasons", "Why payment attempts failed, by channel and method", ("failures", "share"),
        series=False, money=False)
def failure_reasons(con, q: Query) -> list[dict]:
    if _payments_summary_ok(q):
        where = _payments_summary_where(q).add("status = 'failed'")
        sql = (f"SELECT channel, coalesce(method, ''), coalesce(failure_code, 'unknown'), sum(attempts) "
               f"FROM r_payments WHERE {where.sql} GROUP BY ALL ORDER BY 4 DESC, 1, 2, 3")
    else:
        where = _payments_where(q).add("status = 'failed'")
        sql = (f"SELECT channel, coalesce(method, ''), coalesce(failure_code, 'unknown'), count(*) "
               f"FROM payments WHERE {where.sql} GROUP BY ALL ORDER BY 4 DESC, 1, 2, 3")
    rows = con.execute(sql, where.params).fetchall()
    total = sum(r[3] for r in rows)
    return [{"period": q.start.isoformat(), "channel": c, "method": m or None, "failure_code": code,
             "failures": n, "share": rate(n, total)} for c, m, code, n in rows]


@metric("time_to_pay", "Seconds from opening a payment to its success: median and 90th percentile, within 1 %",
        ("payments", "p50_seconds", "p90_seconds"), groups=("channel", "method", "device_class", "amount_band"),
        money=False)
def time_to_pay(con, q: Query) -> list[dict]:
    """Quantiles of the times binned 1 % wide (timing.py), from r_timings where it can answer, else by
    binning the payments the same way: both paths give the same figures."""
    grp, _ = _group_expr(q)
    if _payments_summary_ok(q) and q.group_by in (None, "channel"):
        where, table, day, bucket, count = _payments_summary_where(q), "r_timings", "day", "bucket", "sum(payments)"
    else:
        where = _payments_where(q).add("status = 'succeeded' AND seconds_to_pay IS NOT NULL")
        table, day, bucket, count = "payments", "created_local", timing.BUCKET_SQL, "count(*)"
    binned = (f"SELECT {_bucket(day, q.granularity)} AS period{grp}, {bucket} AS bucket, {count} AS n "
              f"FROM {table} WHERE {where.sql} GROUP BY ALL")
    sql = timing.ranks_sql(binned, "period, grp" if grp else "period", (0.5, 0.9))

    def derive(f: dict) -> dict:
        n = f["payments"]
        return {"payments": n,
                "p50_seconds": round(timing.quantile(n, 0.5, f["p50_low"], f["p50_high"]), 1) if n else None,
                "p90_seconds": round(timing.quantile(n, 0.9, f["p90_low"], f["p90_high"]), 1) if n else None}

    return _series(con, q, sql, where.params, ("payments", "p50_low", "p50_high", "p90_low", "p90_high"), derive)


# --- funnel ---------------------------------------------------------------------------------------


@metric("funnel", "Product views → orders → payment attempts → paid, and abandoned orders, by order day",
        ("views", "orders", "attempted", "paid", "abandoned", "abandonment_rate", "view_to_order",
         "order_to_attempt", "attempt_to_paid"), money=False)
def funnel(con, q: Query) -> list[dict]:
    if q.rollups and not (q.channel or q.kind or q.creator_id):
        day_range = [q.start, q.upper.date()]
        sql = f"""
            WITH o AS (SELECT {_bucket('day', q.granularity)} AS period, sum(orders) AS orders,
                              sum(attempted) AS attempted, sum(paid) AS paid, sum(abandoned) AS abandoned
                       FROM r_orders WHERE day >= ? AND day < ? GROUP BY ALL),
                 v AS (SELECT {_bucket('day', q.granularity)} AS period, sum(views) AS views
                       FROM r_views WHERE day >= ? AND day < ? GROUP BY ALL)"""
        params = [*day_range, *day_range]
    else:
        scope, scope_params = _orders_in_scope(q)
        attempted, paid, channel_params = "attempts > 0", "paid_at IS NOT NULL", []
        if q.channel:
            attempted = "order_key IN (SELECT order_key FROM payments WHERE channel = ? AND created_local >= ?)"
            paid = "paid_at IS NOT NULL AND channel = ?"
            channel_params = [q.channel, q.lower, q.channel]
        views_where = Where().add("kind = 'product_view' AND created_local >= ? AND created_local < ?",
                                  q.lower, q.upper)
        if q.creator_id:
            views_where.add("creator_id = ?", q.creator_id)
        if q.kind:
            views_where.add("product_kind = ?", q.kind)
        bucket = _bucket("created_local", q.granularity)
        sql = f"""
            WITH o AS (SELECT {bucket} AS period, count(*) AS orders, count_if({attempted}) AS attempted,
                              count_if({paid}) AS paid, count_if(status IN ('expired', 'cancelled')) AS abandoned
                       FROM orders WHERE created_local >= ? AND created_local < ? AND {scope} GROUP BY ALL),
                 v AS (SELECT {bucket} AS period, count(*) AS views FROM views WHERE {views_where.sql} GROUP BY ALL)"""
        params = [*channel_params, q.lower, q.upper, *scope_params, *views_where.params]
    sql += """
        SELECT coalesce(o.period, v.period), coalesce(v.views, 0), coalesce(o.orders, 0),
               coalesce(o.attempted, 0), coalesce(o.paid, 0), coalesce(o.abandoned, 0)
        FROM o FULL OUTER JOIN v ON o.period = v.period"""

    def derive(f: dict) -> dict:
        return {**f, "abandonment_rate": rate(f["abandoned"], f["orders"]),
                "view_to_order": rate(f["orders"], f["views"]), "order_to_attempt": rate(f["attempted"], f["orders"]),
                "attempt_to_paid": rate(f["paid"], f["attempted"])}

    return _series(con, replace(q, group_by=None), sql, params,
                   ("views", "orders", "attempted", "paid", "abandoned"), derive)


@metric("refund_reasons", "Reasons given for refunds asked in the range", ("refunds", "share"),
        series=False, money=False)
def refund_reasons(con, q: Query) -> list[dict]:
    where = Where().add("kind = 'requested' AND created_local >= ? AND created_local < ?", q.lower, q.upper)
    if q.channel:
        where.add("channel = ?", q.channel)
    clause, params = _orders_in_scope(q)
    where.add(clause, *params)
    rows = con.execute(
        f"SELECT coalesce(nullif(lower(trim(left(reason, 80))), ''), '(none)') AS r, count(*) FROM refunds "
        f"WHERE {where.sql} GROUP BY ALL ORDER BY 2 DESC, 1", where.params).fetchall()
    total = sum(n for _, n in rows)
    return [{"period": q.start.isoformat(), "reason": r, "refunds": n, "share": rate(n, total)} for r, n in rows]


# --- customers ------------------------------------------------------------------------------------


@metric("cohorts", "Buyers by the month of their first purchase, and how many bought again in later months",
        ("buyers", "retained", "retention"), granularities=("month",),
        filters=frozenset({"kind", "creator_id"}), money=False)
def cohorts(con, q: Query) -> list[dict]:
    if _buyer_months_ok(con, q):
        sql = ("SELECT cohort, datediff('month', cohort, month), count(*) FROM buyer_months "
               "WHERE cohort >= ? AND month < ? GROUP BY ALL")
        params: list = [q.start, q.upper.date()]
    else:
        scope = _sales_where(replace(q, start=date(1970, 1, 1)), money=False)
        sql = f"""
            WITH p AS (SELECT DISTINCT buyer_key, CAST(date_trunc('month', paid_local) AS DATE) AS m FROM sales
                       WHERE {scope.sql}),
                 f AS (SELECT buyer_key, min(m) AS c FROM p GROUP BY buyer_key)
            SELECT f.c, datediff('month', f.c, p.m), count(*) FROM p JOIN f USING (buyer_key)
            WHERE f.c >= ? GROUP BY ALL"""
        params = [*scope.params, q.start]
    found: dict[date, dict[int, int]] = {}
    for cohort, offset, buyers in con.execute(sql, params).fetchall():
        found.setdefault(cohort, {})[offset] = buyers
    out = []
    for month in periods(q):
        span = (q.end.year - month.year) * 12 + q.end.month - month.month + 1
        counts = [found.get(month, {}).get(k, 0) for k in range(span)]
        size = counts[0] if counts else 0
        out.append({"period": month.isoformat(), "buyers": size, "retained": counts,
                    "retention": [rate(n, size) for n in counts]})
    return out


@metric("mrr", "Memberships: monthly recurring revenue and members at each period's end, new and churned members",
        ("mrr", "members", "new_members", "churned_members", "churn_rate"),
        filters=frozenset({"creator_id", "kind"}))
def mrr(con, q: Query) -> list[dict]:
    """Each membership is active over [start, stop). MRR and members at a period's end (now, for the
    period running) are the values active then: those active at the range's start plus what started
    minus what stopped since, counted per period. Renewals continue a membership (a renewal starts
    exactly when the previous one stops): new members are starts that continue nothing, churned
    members stops that nothing continues."""
    now = _local_now(q)
    grid = periods(q)
    params: dict = {"currency": q.currency, "first": datetime.combine(grid[0], datetime.min.time()),
                    "last": min(q.upper, now)}
    scope = "currency = $currency"
    if q.creator_id:
        scope += " AND creator_id = $creator"
        params["creator"] = q.creator_id
    if q.kind and q.kind != "membership":
        scope += " AND FALSE"
    # A move exactly at a period's boundary belongs to the period it closes (`active at t` includes t).
    bucket = _bucket("moment - INTERVAL 1 MICROSECOND", q.granularity)
    sql = f"""
        SELECT NULL, coalesce(sum(v), 0), count(*), 0, 0 FROM r_memberships
        WHERE {scope} AND s <= $first AND e > $first
        UNION ALL
        SELECT {bucket}, sum(v), sum(n), count_if(fresh), count_if(final) FROM (
            SELECT s AS moment, v, 1 AS n, fresh, FALSE AS final FROM r_memberships
            WHERE {scope} AND s > $first AND s <= $last
            UNION ALL
            SELECT e, -v, -1, FALSE, final FROM r_memberships WHERE {scope} AND e > $first AND e <= $last)
        GROUP BY ALL"""
    rows = con.execute(sql, params).fetchall()
    base = next(r for r in rows if r[0] is None)
    moves = {r[0]: r[1:] for r in rows if r[0] is not None}
    out, value, members = [], float(base[1]), int(base[2])
    for period in grid:
        moved, joined, fresh, final = moves.get(period, (0.0, 0, 0, 0))
        at_start = members
        running = datetime.combine(period, datetime.min.time()) <= now
        value, members = value + (moved or 0), members + (joined or 0)
        out.append({"period": period.isoformat(), "mrr": math.floor(value + 0.5) if running else 0,
                    "members": members if running else 0, "new_members": fresh, "churned_members": final,
                    "churn_rate": rate(final, at_start) if running else 0.0})
    return out


# --- entry point ----------------------------------------------------------------------------------


def compute(con: duckdb.DuckDBPyConnection, query: Query) -> list[dict]:
    """Rows of one metric; the caller has checked the query against `METRICS[query.metric]`."""
    return METRICS[query.metric].compute(con, widened(query))


def catalogue() -> list[dict]:
    return [{"metric": m.name, "title": m.title, "figures": list(m.figures), "series": m.series,
             "filters": sorted(m.filters), "group_by": list(m.groups), "granularities": list(m.granularities),
             "money": m.money} for m in METRICS.values()]
