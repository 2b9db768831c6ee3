"""The analytics store: a DuckDB file in the instance folder, loaded from the operational database.

One writer at a time (a file lock: the worker's minute load, a rebuild, the Parquet export), any
number of readers. DuckDB lets one process write a file, or many processes read it, so both sides
open it briefly and retry while the other holds it; in one process a readers-writer gate keeps
read-only and read-write connections from meeting.

The load is incremental from a watermark (a time): each minute it looks at what changed since a
little before the watermark (outbox events, new and closed orders, updated payments, page views),
skips what the store already holds at that version, and rewrites the fact rows of the rest. Events
and views are appended once, by id. `rebuild` recomputes a fresh file from the operational
database and swaps it in.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa
from sqlalchemy import func, select

from knowpay.access.models import Entitlement
from knowpay.analytics import source, timing
from knowpay.analytics.metrics import next_period, period_start
from knowpay.analytics.models import PageView
from knowpay.config import Settings
from knowpay.context import Context
from knowpay.domain.errors import KnowPayError
from knowpay.orders.models import Order
from knowpay.outbox.models import OutboxEvent
from knowpay.payments.models import Payment
from knowpay.refunds.models import Refund

STORE_FILE = "analytics.duckdb"
SCHEMA_VERSION = "4"
# Rows are stamped with the application's clock before their transaction commits, so a row may
# become visible with a time a little before the watermark: every load looks back this far.
LOOKBACK = timedelta(seconds=30)
# About this many outbox events per slice, so a backlog is worked off in bounded transactions.
SLICE_EVENTS = 20_000
READ_WAIT_SECONDS = 10.0
WRITE_WAIT_SECONDS = 30.0

T, S, I, B, D, F = "TIMESTAMP", "VARCHAR", "INTEGER", "BIGINT", "DOUBLE", "BOOLEAN"
TABLES: dict[str, list[tuple[str, str]]] = {
    "products": [("product_id", S), ("creator_id", S), ("kind", S), ("title", S), ("amount", B), ("currency", S),
                 ("plan_interval", S), ("plan_count", I), ("status", S), ("created_at", T), ("updated_at", T)],
    "orders": [("order_id", S), ("buyer_id", S), ("status", S), ("currency", S), ("amount_total", B),
               ("amount_discount", B), ("amount_refunded", B), ("created_at", T), ("created_local", T),
               ("paid_at", T), ("paid_local", T), ("closed_at", T), ("channel", S), ("method", S),
               ("attempts", I), ("version", I)],
    "sales": [("order_id", S), ("position", I), ("buyer_id", S), ("product_id", S), ("creator_id", S), ("kind", S),
              ("currency", S), ("quantity", I), ("net", B), ("refunded", B), ("creator_net", B),
              ("channel_fee", B), ("coins_issued", B), ("status", S), ("created_at", T), ("created_local", T),
              ("paid_at", T), ("paid_local", T), ("channel", S), ("method", S),
              # Which line stands for its order when orders are counted: the first line of the order, of the
              # creator's lines, of the kind's lines, of the creator's lines of the kind (no distinct counts).
              ("first_line", F), ("first_of_creator", F), ("first_of_kind", F), ("first_of_creator_kind", F)],
    "payments": [("payment_id", S), ("order_id", S), ("buyer_id", S), ("channel", S), ("method", S),
                 ("device_class", S), ("amount_band", S), ("status", S), ("amount", B), ("currency", S),
                 ("amount_refunded", B), ("failure_code", S), ("created_at", T), ("created_local", T),
                 ("succeeded_at", T), ("seconds_to_pay", D), ("updated_at", T), ("version", I)],
    "refunds": [("refund_id", S), ("payment_id", S), ("order_id", S), ("channel", S), ("amount", B),
                ("currency", S), ("status", S), ("kind", S), ("reason", S), ("created_at", T),
                ("created_local", T), ("succeeded_at", T), ("succeeded_local", T), ("version", I)],
    "entitlements": [("entitlement_id", S), ("user_id", S), ("product_id", S), ("creator_id", S), ("order_id", S),
                     ("kind", S), ("status", S), ("item_net", B), ("currency", S), ("plan_interval", S),
                     ("plan_count", I), ("starts_at", T), ("ends_at", T), ("revoked_at", T), ("created_at", T),
                     ("created_local", T), ("version", I),
                     # when access stops (its end, or its revocation if earlier), and both ends in local time
                     ("stop_at", T), ("starts_local", T), ("stop_local", T)],
    "views": [("view_id", B), ("kind", S), ("product_id", S), ("order_id", S), ("viewer_key", S),
              ("device_class", S), ("created_at", T), ("created_local", T), ("creator_id", S), ("product_kind", S)],
    "events": [("event_id", S), ("type", S), ("object_type", S), ("object_id", S), ("sequence", I),
               ("created_at", T), ("created_local", T)],
}
# Integer keys (hashes of the ids) for fast joins and distinct counts; never exported.
KEYS: dict[str, list[tuple[str, str]]] = {
    "orders": [("order_key", "order_id"), ("buyer_key", "buyer_id")],
    "sales": [("order_key", "order_id"), ("buyer_key", "buyer_id")],
    "payments": [("order_key", "order_id")],
    "refunds": [("order_key", "order_id")],
    "entitlements": [("pair_key", "user_id, product_id")],  # one member of one membership
}
# Table → (id column, immutable time column): facts are replaced by id; events and views only appended.
REPLACED = {"orders": ("order_id", "created_at"), "sales": ("order_id", "created_at"),
            "payments": ("payment_id", "created_at"), "refunds": ("refund_id", "created_at"),
            "entitlements": ("entitlement_id", "created_at"), "products": ("product_id", "created_at")}
APPENDED = {"views": ("view_id", "created_at"), "events": ("event_id", "created_at")}
# Parquet partitions follow each table's local creation day.
EXPORTED = ("orders", "sales", "payments", "refunds", "entitlements", "views", "events")

_ARROW = {T: pa.timestamp("us"), S: pa.string(), I: pa.int32(), B: pa.int64(), D: pa.float64(), F: pa.bool_()}

# Summaries kept beside the facts so that dashboards over long ranges read thousands of rows, not
# millions. Each is recomputed for the days (or months) a load touched (a refund touches the day its
# order was paid), and wholly by a rebuild; queries its columns cannot answer read the facts.
REFUNDED = "status IN ('refunded', 'partially_refunded')"


@dataclass(frozen=True)
class Summary:
    columns: str
    time_column: str  # its own, by which the rows of a day (or month, see `span`) are replaced
    origin: str  # "table.column": the facts it sums, and their time that picks the day
    select: str  # SELECT ... WHERE {where} ...
    span: str = "day"  # or "month": the stretch of time recomputed together (a row sums a whole one)


DERIVED: dict[str, Summary] = {
    "r_sales": Summary(
        columns=("hour TIMESTAMP, channel VARCHAR, method VARCHAR, kind VARCHAR, currency VARCHAR, gross BIGINT, "
                 "refunded BIGINT, channel_fee BIGINT, creator_net BIGINT, coins_issued BIGINT, orders BIGINT, "
                 "kind_orders BIGINT, refunded_orders BIGINT, kind_refunded_orders BIGINT"),
        time_column="hour", origin="sales.paid_local",
        select=("SELECT date_trunc('hour', paid_local), channel, method, kind, currency, sum(net), sum(refunded), "
                "sum(channel_fee), sum(creator_net), sum(coins_issued), count_if(first_line), "
                f"count_if(first_of_kind), count_if(first_line AND {REFUNDED}), "
                f"count_if(first_of_kind AND {REFUNDED}) FROM sales "
                "WHERE paid_local IS NOT NULL AND {where} GROUP BY ALL")),
    "r_orders": Summary(
        columns="day DATE, orders BIGINT, attempted BIGINT, paid BIGINT, abandoned BIGINT",
        time_column="day", origin="orders.created_local",
        select=("SELECT CAST(created_local AS DATE), count(*), count_if(attempts > 0), "
                "count_if(paid_at IS NOT NULL), count_if(status IN ('expired', 'cancelled')) FROM orders "
                "WHERE {where} GROUP BY ALL")),
    "r_views": Summary(
        columns="day DATE, product_kind VARCHAR, views BIGINT", time_column="day", origin="views.created_local",
        select=("SELECT CAST(created_local AS DATE), product_kind, count(*) FROM views "
                "WHERE kind = 'product_view' AND {where} GROUP BY ALL")),
    "r_payments": Summary(
        columns=("day DATE, channel VARCHAR, method VARCHAR, device_class VARCHAR, amount_band VARCHAR, "
                 "failure_code VARCHAR, status VARCHAR, attempts BIGINT"),
        time_column="day", origin="payments.created_local",
        select=("SELECT CAST(created_local AS DATE), channel, method, device_class, amount_band, failure_code, "
                "status, count(*) FROM payments WHERE {where} GROUP BY ALL")),
    # Succeeded payments' times to pay as counts per 1 % bin (timing.py), for p50/p90 without sorting.
    "r_timings": Summary(
        columns="day DATE, channel VARCHAR, bucket INTEGER, payments BIGINT", time_column="day",
        origin="payments.created_local",
        select=(f"SELECT CAST(created_local AS DATE), channel, {timing.BUCKET_SQL}, count(*) FROM payments "
                "WHERE status = 'succeeded' AND seconds_to_pay IS NOT NULL AND {where} GROUP BY ALL")),
    # Sales per product and month (by the month paid), for top products and creators: a product sells a
    # few times a day, so by day this would be nearly as long as the sales lines. Whole months of a
    # range read it, the days around them the lines. `creator_orders` counts the lines that stand for
    # their order among the creator's lines (summed over a creator's products: the creator's orders).
    "r_products": Summary(
        columns=("month DATE, product_id VARCHAR, creator_id VARCHAR, kind VARCHAR, channel VARCHAR, "
                 "currency VARCHAR, lines BIGINT, units BIGINT, gross BIGINT, refunded BIGINT, "
                 "creator_orders BIGINT, creator_kind_orders BIGINT"),
        time_column="month", origin="sales.paid_local", span="month",
        select=("SELECT CAST(date_trunc('month', paid_local) AS DATE), product_id, creator_id, kind, channel, "
                "currency, count(*), sum(quantity), sum(net), sum(refunded), count_if(first_of_creator), "
                "count_if(first_of_creator_kind) FROM sales WHERE paid_local IS NOT NULL AND {where} GROUP BY ALL")),
}
# A plan's price × this ÷ its interval count is its monthly value.
PER_MONTH = {"day": 365 / 12, "week": 52 / 12, "month": 1.0, "year": 1 / 12}


@dataclass(frozen=True)
class KeyedSummary:
    columns: str
    key: str  # its key column; a load recomputes the keys its facts touched
    origin: str  # the fact table whose rows touch keys
    touched: str  # SELECT DISTINCT ... over those rows (staged as `staged`) giving the keys
    select: str  # SELECT ... WHERE {where} ... over the facts


KEYED: dict[str, KeyedSummary] = {
    # Per buyer and month they bought in: the month of their first purchase and the time of their second.
    "buyer_months": KeyedSummary(
        columns="buyer_key UBIGINT, month DATE, cohort DATE, second_paid TIMESTAMP", key="buyer_key",
        origin="sales", touched="SELECT DISTINCT hash(buyer_id) FROM staged WHERE paid_local IS NOT NULL",
        select="""
            WITH o AS (SELECT buyer_key, order_key, min(paid_local) AS paid FROM sales
                       WHERE paid_local IS NOT NULL AND {where} GROUP BY ALL),
                 b AS (SELECT buyer_key, min(paid, 2) AS firsts FROM o GROUP BY buyer_key)
            SELECT DISTINCT o.buyer_key, CAST(date_trunc('month', o.paid) AS DATE),
                   CAST(date_trunc('month', b.firsts[1]) AS DATE), CASE WHEN len(b.firsts) > 1 THEN b.firsts[2] END
            FROM o JOIN b USING (buyer_key)"""),
    # Memberships as intervals of access [s, e) in local time with their monthly value; `fresh` when
    # the interval continues no earlier one of the same member (a renewal starts when the last ends),
    # `final` when no later one continues it.
    "r_memberships": KeyedSummary(
        columns=("pair_key UBIGINT, creator_id VARCHAR, currency VARCHAR, s TIMESTAMP, e TIMESTAMP, v DOUBLE, "
                 "fresh BOOLEAN, final BOOLEAN"), key="pair_key",
        origin="entitlements", touched="SELECT DISTINCT hash(user_id, product_id) FROM staged",
        select=f"""
            WITH iv AS (SELECT pair_key, creator_id, currency, starts_local AS s, stop_local AS e,
                               item_net * (CASE plan_interval {" ".join(f"WHEN '{k}' THEN {v!r}" for k, v in
                                                                        PER_MONTH.items())} ELSE 1.0 END)
                               / plan_count AS v
                        FROM entitlements WHERE kind = 'membership' AND stop_local > starts_local AND {{where}})
            SELECT pair_key, creator_id, currency, s, e, v,
                   NOT EXISTS (SELECT 1 FROM iv p WHERE p.pair_key = iv.pair_key AND p.e = iv.s),
                   NOT EXISTS (SELECT 1 FROM iv n WHERE n.pair_key = iv.pair_key AND n.s = iv.e)
            FROM iv"""),
}


def arrow_schema(table: str) -> pa.Schema:
    return pa.schema([(name, _ARROW[kind]) for name, kind in TABLES[table]])


def ddl() -> list[str]:
    statements = []
    for table, columns in TABLES.items():
        cols = [f"{name} {kind}" for name, kind in columns] + [f"{key} UBIGINT" for key, _ in KEYS.get(table, [])]
        statements.append(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(cols)})")
    for name, summary in DERIVED.items():
        statements.append(f"CREATE TABLE IF NOT EXISTS {name} ({summary.columns})")
    for name, keyed in KEYED.items():
        statements.append(f"CREATE TABLE IF NOT EXISTS {name} ({keyed.columns})")
    statements.append("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    statements.append("CREATE TABLE IF NOT EXISTS dirty_days (tbl VARCHAR, day DATE)")
    return statements


class StoreBusy(KnowPayError):
    """The analytics store cannot be read now (a writer holds it longer than we wait, or it awaits the
    rebuild of a new version); retry shortly."""

    code = "analytics_busy"
    type = "internal"


class _Gate:
    """Readers share, a writer is alone: DuckDB refuses read-only and read-write handles on one file in one process."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writing:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._readers:
                self._cond.wait()
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


def _is_lock_conflict(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text or "different configuration" in text


class _OpenConnections:
    """Every DuckDB handle this process holds, so that exit can stop and close them first.

    A worker is stopped while a job may be inside DuckDB (native code, in a daemon thread). If Python
    finalised around it, that thread would be torn down mid-call and abort the process; so at exit
    running queries are interrupted and their handles closed before finalisation, and no new one opens.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._open: set[duckdb.DuckDBPyConnection] = set()
        self._opening = 0
        self.closing = False

    def check(self) -> None:
        """Stop a long job at its next step once the process is exiting."""
        if self.closing:
            raise StoreBusy("The analytics store is closing with this process.")

    @contextmanager
    def open(self, connect: Callable[[], duckdb.DuckDBPyConnection]) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._cond:
            self.check()
            self._opening += 1
        try:
            con = connect()
        finally:
            with self._cond:
                self._opening -= 1
                self._cond.notify_all()
        with self._cond:
            if self.closing:
                con.close()
                self.check()
            self._open.add(con)
        try:
            yield con
        finally:
            con.close()
            with self._cond:
                self._open.discard(con)
                self._cond.notify_all()

    def close_all(self, timeout: float = 10.0) -> None:
        with self._cond:
            self.closing = True
            for con in list(self._open):
                try:
                    con.interrupt()
                except duckdb.Error:
                    pass
            deadline = time.monotonic() + timeout
            while (self._open or self._opening) and deadline > time.monotonic():
                self._cond.wait(deadline - time.monotonic())


_connections = _OpenConnections()
atexit.register(_connections.close_all)


def _connect(path: Path, *, read_only: bool, wait: float) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + wait
    delay = 0.02
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except (duckdb.IOException, duckdb.ConnectionException) as exc:
            if not _is_lock_conflict(exc) or time.monotonic() >= deadline:
                if _is_lock_conflict(exc):
                    raise StoreBusy("The analytics store is busy; retry in a few seconds.") from exc
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


class Store:
    """One DuckDB file; get it with `store_for(settings)` so every user in a process shares one gate."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.gate = _Gate()

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    @contextmanager
    def reader(self, *, current: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection (an empty in-memory store when nothing was loaded yet). `current`: for
        metrics, which need this schema's summaries; a store of an older one raises StoreBusy until the
        next load rebuilds it."""
        with self.gate.read():
            if not self.path.exists():
                with _connections.open(lambda: duckdb.connect(":memory:")) as con:
                    for statement in ddl():
                        con.execute(statement)
                    yield con
                return
            with _connections.open(lambda: _connect(self.path, read_only=True, wait=READ_WAIT_SECONDS)) as con:
                if current and get_meta(con, "schema_version") != SCHEMA_VERSION:
                    raise StoreBusy("The analytics store is being rebuilt for this version; retry in a minute.")
                yield con

    @contextmanager
    def exclusive(self, *, blocking: bool = True) -> Iterator[bool]:
        """Hold the writers' lock (across processes); yields False when not blocking and it is taken."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def writer(self, path: Path | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection to the store (or to a file being built); call inside `exclusive()`."""
        with self.gate.write() if path is None else nullcontext():
            target = path or self.path
            with _connections.open(lambda: _connect(target, read_only=False, wait=WRITE_WAIT_SECONDS)) as con:
                for statement in ddl():
                    con.execute(statement)
                yield con

    def replace_with(self, built: Path) -> None:
        """Swap a freshly built file in; readers that still hold the old one finish on it."""
        with self.gate.write():
            os.replace(built, self.path)
            wal = Path(str(self.path) + ".wal")
            if wal.exists():
                wal.unlink()


_stores: dict[Path, Store] = {}
_stores_lock = threading.Lock()


def store_for(settings: Settings) -> Store:
    path = (Path(settings.instance_path) / STORE_FILE).resolve()
    with _stores_lock:
        if path not in _stores:
            _stores[path] = Store(path)
        return _stores[path]


def get_meta(con: duckdb.DuckDBPyConnection, key: str) -> str | None:
    rows = con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchall()
    return rows[0][0] if rows else None


def set_meta(con: duckdb.DuckDBPyConnection, key: str, value: str) -> None:
    con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])


# --- writing facts --------------------------------------------------------------------------------


def write_facts(con: duckdb.DuckDBPyConnection, facts: source.Facts, *, derive: bool = True) -> dict[str, int]:
    """Replace fact rows by id, append new events and views once, and bring the summaries of the days
    and buyers they touch up to date (`derive=False` leaves that to `refresh_derived(full=True)`).
    Returns rows written per table; runs in the caller's transaction."""
    written = {}
    touched: dict[str, set[date]] = {}
    keys_touched: dict[str, set[int]] = {}
    for table, columns_of in TABLES.items():
        rows = getattr(facts, table)
        if not rows:
            continue
        _connections.check()
        staged = f"staged_{table}"
        con.register(staged, pa.Table.from_pylist(rows, schema=arrow_schema(table)))
        try:
            columns = ", ".join(name for name, _ in columns_of)
            keys = "".join(f", hash({col})" for _, col in KEYS.get(table, []))
            if table in REPLACED:
                id_col, time_col = REPLACED[table]
                # The time column never changes for an object, so old row groups are skipped by their zone maps.
                con.execute(f"DELETE FROM {table} WHERE {time_col} >= (SELECT min({time_col}) FROM {staged}) "
                            f"AND {id_col} IN (SELECT {id_col} FROM {staged})")
                con.execute(f"INSERT INTO {table} SELECT {columns}{keys} FROM {staged}")
                written[table] = len(rows)
            else:
                id_col, time_col = APPENDED[table]
                before = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
                con.execute(
                    f"INSERT INTO {table} SELECT DISTINCT ON ({id_col}) {columns}{keys} FROM {staged} s "
                    f"WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE t.{id_col} = s.{id_col} "
                    f"AND t.{time_col} >= (SELECT min({time_col}) FROM {staged}))")
                written[table] = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] - before
            if table in EXPORTED:
                con.execute(f"INSERT INTO dirty_days SELECT DISTINCT '{table}', CAST(created_local AS DATE) "
                            f"FROM {staged}")
            if derive:
                for name, summary in DERIVED.items():
                    origin_table, origin_col = summary.origin.split(".")
                    if origin_table == table:
                        touched.setdefault(name, set()).update(day for (day,) in con.execute(
                            f"SELECT DISTINCT CAST({origin_col} AS DATE) FROM {staged} "
                            f"WHERE {origin_col} IS NOT NULL").fetchall())
                for name, keyed in KEYED.items():
                    if keyed.origin == table:
                        keys_touched.setdefault(name, set()).update(
                            key for (key,) in con.execute(keyed.touched.replace("staged", staged)).fetchall())
        finally:
            con.unregister(staged)
    if derive:
        refresh_derived(con, days=touched, keys=keys_touched)
    return written


def refresh_derived(con: duckdb.DuckDBPyConnection, *, days: dict[str, set[date]] | None = None,
                    keys: dict[str, set[int]] | None = None, full: bool = False) -> None:
    """Recompute the summaries: of these days and keys, or (`full`) all of them."""
    for name, summary in DERIVED.items():
        origin_col, column = summary.origin.split(".")[1], summary.time_column
        if full:
            con.execute(f"DELETE FROM {name}")
            con.execute(f"INSERT INTO {name} " + summary.select.format(where="TRUE"))
            continue
        for first in sorted({period_start(day, summary.span) for day in (days or {}).get(name, ())}):
            _connections.check()
            after = next_period(first, summary.span)
            con.execute(f"DELETE FROM {name} WHERE {column} >= ? AND {column} < ?", [first, after])
            con.execute(f"INSERT INTO {name} " + summary.select.format(
                where=f"{origin_col} >= DATE '{first.isoformat()}' AND {origin_col} < DATE '{after.isoformat()}'"))
    for name, keyed in KEYED.items():
        if full:
            con.execute(f"DELETE FROM {name}")
            con.execute(f"INSERT INTO {name} " + keyed.select.format(where="TRUE"))
            continue
        wanted = sorted((keys or {}).get(name, ()))
        if not wanted:
            continue
        con.register("touched_keys", pa.table({"k": pa.array(wanted, pa.uint64())}))
        try:
            con.execute(f"DELETE FROM {name} WHERE {keyed.key} IN (SELECT k FROM touched_keys)")
            con.execute(f"INSERT INTO {name} " + keyed.select.format(
                where=f"{keyed.key} IN (SELECT k FROM touched_keys)"))
        finally:
            con.unregister("touched_keys")


# --- the incremental load -------------------------------------------------------------------------


@dataclass
class LoadResult:
    events: int = 0  # new outbox events taken in
    rows: int = 0  # fact rows written
    slices: int = 0
    rebuilt: bool = False
    watermark: datetime | None = None
    skipped: bool = False  # another writer held the store


def _fmt(moment: datetime) -> str:
    return moment.isoformat()


def _versions(con: duckdb.DuckDBPyConnection, table: str, id_col: str,
              wanted: dict[str, tuple[int, datetime]]) -> dict[str, int]:
    """The versions the store holds of these objects (id → (version, created_at) in the operational
    database); the creation time, which never changes, lets DuckDB skip all older row groups."""
    if not wanted:
        return {}
    oldest = min(at for _v, at in wanted.values())
    con.register("wanted_ids", pa.table({"id": pa.array(sorted(wanted), pa.string())}))
    try:
        return dict(con.execute(f"SELECT {id_col}, version FROM {table} WHERE created_at >= ? AND {id_col} IN "
                                "(SELECT id FROM wanted_ids)", [oldest]).fetchall())
    finally:
        con.unregister("wanted_ids")


def _new_event_ids(con: duckdb.DuckDBPyConnection, events: list[tuple]) -> set[str]:
    if not events:
        return set()
    oldest = min(e[5] for e in events)
    con.register("incoming_events", pa.table({"id": pa.array([e[0] for e in events], pa.string())}))
    try:
        known = {row[0] for row in con.execute(
            "SELECT event_id FROM events WHERE created_at >= ? AND event_id IN (SELECT id FROM incoming_events)",
            [oldest]).fetchall()}
    finally:
        con.unregister("incoming_events")
    return {e[0] for e in events} - known


def _read_slice(ctx: Context, store: Store, tz: ZoneInfo, watermark: datetime | None, *,
                now: datetime) -> tuple[source.Facts, int, datetime] | None:
    """The facts of the next slice after `watermark` that the store does not hold yet, and where the
    slice ends; None when the store must be rebuilt (never loaded, another schema, time zone or DuckDB).

    The store is only read here, briefly: the slow part, reading the operational database, runs with
    no DuckDB handle open, so dashboards keep reading meanwhile.
    """
    with ctx.db.transaction(write=False) as session:
        with store.reader() as con:
            if watermark is None:
                mark = get_meta(con, "watermark")
                # Integer keys are DuckDB hashes: a new DuckDB may hash differently, so it rebuilds too.
                current = (get_meta(con, "schema_version") == SCHEMA_VERSION
                           and get_meta(con, "timezone") == ctx.settings.timezone
                           and get_meta(con, "engine") == duckdb.__version__)
                if mark is None or not current:
                    return None
                watermark = datetime.fromisoformat(mark)
            since = watermark - LOOKBACK
            # Counted from the watermark, not from `since`: a slice always moves the watermark on.
            until = max(source.slice_end(session, watermark, now, SLICE_EVENTS), watermark)
            changes = source.changes_between(session, since, until)
            new_ids = _new_event_ids(con, changes.events)
            held_orders = _versions(con, "orders", "order_id", changes.order_versions)
            held_payments = _versions(con, "payments", "payment_id", changes.payment_versions)
        new_events = [e for e in changes.events if e[0] in new_ids]
        order_ids, payment_ids, refund_ids, entitlement_ids = set(), set(), set(), set()
        for _id, _type, object_type, object_id, _seq, _at in new_events:
            {"order": order_ids, "payment": payment_ids, "refund": refund_ids,
             "entitlement": entitlement_ids}.get(object_type, set()).add(object_id)
        order_ids.update(i for i, (v, _at) in changes.order_versions.items() if held_orders.get(i) != v)
        payment_ids.update(i for i, (v, _at) in changes.payment_versions.items() if held_payments.get(i) != v)
        facts = source.facts_for(session, order_ids=order_ids, payment_ids=payment_ids, refund_ids=refund_ids,
                                 entitlement_ids=entitlement_ids, tz=tz)
        facts.products = source.product_facts(session, since=since)
        facts.views = source.view_rows(session, changes.views, tz)
        facts.events = [source.event_row(e, tz) for e in new_events]
    return facts, len(new_events), until


def load_increment(ctx: Context, store: Store | None = None, *, budget_seconds: float = 45.0,
                   blocking: bool = False) -> LoadResult:
    """Take in what changed since the watermark; a store never loaded (or of another schema or time
    zone) is rebuilt instead. Returns at once, `skipped`, when another writer holds the store."""
    store = store or store_for(ctx.settings)
    with store.exclusive(blocking=blocking) as got:
        if not got:
            return LoadResult(skipped=True)
        if not store.path.exists():
            return _rebuild_locked(ctx, store)
        tz = ZoneInfo(ctx.settings.timezone)
        result = LoadResult()
        deadline = time.monotonic() + budget_seconds
        while True:
            _connections.check()
            now = ctx.clock.now()
            found = _read_slice(ctx, store, tz, result.watermark, now=now)
            if found is None:
                return _rebuild_locked(ctx, store)
            facts, events, until = found
            with store.writer() as con:
                con.execute("BEGIN")
                try:
                    written = write_facts(con, facts)
                    set_meta(con, "watermark", _fmt(until))
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
            result.events += events
            result.rows += sum(v for k, v in written.items() if k != "events")
            result.slices += 1
            result.watermark = until
            if until >= now or time.monotonic() > deadline:
                return result


# --- rebuild --------------------------------------------------------------------------------------

Progress = Callable[[int, int], None]
REBUILD_ORDERS = 2_000


def rebuild(ctx: Context, store: Store | None = None, *, progress: Progress | None = None) -> LoadResult:
    """Recompute the whole store from the operational database into a new file, then swap it in."""
    store = store or store_for(ctx.settings)
    with store.exclusive() as _:
        return _rebuild_locked(ctx, store, progress=progress)


def _rebuild_locked(ctx: Context, store: Store, *, progress: Progress | None = None) -> LoadResult:
    tz = ZoneInfo(ctx.settings.timezone)
    building = store.path.with_name(store.path.name + ".rebuild")
    for leftover in (building, Path(str(building) + ".wal")):
        leftover.unlink(missing_ok=True)
    result = LoadResult(rebuilt=True)
    # One snapshot of the operational database, taken before reading; what commits later is
    # picked up by the next incremental load, which looks back from this watermark.
    started = ctx.clock.now()
    with ctx.db.transaction(write=False) as session, store.writer(building) as con:
        if not ctx.db.is_sqlite:
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        total_orders = session.scalar(select(func.count()).select_from(Order)) or 0
        total_views = session.scalar(select(func.count()).select_from(PageView)) or 0
        total_events = session.scalar(select(func.count()).select_from(OutboxEvent)) or 0
        total = total_orders + total_views + total_events
        done = 0
        report = progress or (lambda _n, _t: None)
        report(0, total)
        write_facts(con, source.Facts(products=source.product_facts(session, since=None)), derive=False)
        cursor: tuple[datetime, str] | None = None
        while True:
            _connections.check()
            stmt = select(Order.id, Order.created_at).order_by(Order.created_at, Order.id).limit(REBUILD_ORDERS)
            if cursor is not None:
                stmt = stmt.where((Order.created_at > cursor[0])
                                  | ((Order.created_at == cursor[0]) & (Order.id > cursor[1])))
            page = session.execute(stmt).all()
            if not page:
                break
            cursor = (page[-1][1], page[-1][0])
            order_ids = [row[0] for row in page]
            payment_ids = list(session.scalars(select(Payment.id).where(Payment.order_id.in_(order_ids))))
            refund_ids = list(session.scalars(select(Refund.id).where(Refund.order_id.in_(order_ids))))
            entitlement_ids = list(session.scalars(select(Entitlement.id).where(Entitlement.order_id.in_(order_ids))))
            facts = source.facts_for(session, order_ids=order_ids, payment_ids=payment_ids, refund_ids=refund_ids,
                                     entitlement_ids=entitlement_ids, tz=tz)
            result.rows += sum(write_facts(con, facts, derive=False).values())
            done += len(page)
            report(done, total)
        views: list[PageView] = []
        for view in session.scalars(select(PageView).order_by(PageView.id)).yield_per(5_000):
            views.append(view)
            if len(views) == 5_000:
                done += _write_batch(con, source.Facts(views=source.view_rows(session, views, tz)), result)
                report(done, total)
                views = []
        if views:
            done += _write_batch(con, source.Facts(views=source.view_rows(session, views, tz)), result)
            report(done, total)
        events: list[dict] = []
        for row in session.execute(select(OutboxEvent.id, OutboxEvent.type, OutboxEvent.object_type,
                                          OutboxEvent.object_id, OutboxEvent.sequence, OutboxEvent.created_at)
                                   .order_by(OutboxEvent.created_at, OutboxEvent.id)).yield_per(5_000):
            events.append(source.event_row(tuple(row), tz))
            if len(events) == 5_000:
                done += _write_batch(con, source.Facts(events=events), result)
                report(done, total)
                events = []
        if events:
            done += _write_batch(con, source.Facts(events=events), result)
            report(done, total)
        refresh_derived(con, full=True)
        set_meta(con, "watermark", _fmt(started))
        set_meta(con, "schema_version", SCHEMA_VERSION)
        set_meta(con, "timezone", ctx.settings.timezone)
        set_meta(con, "engine", duckdb.__version__)
        set_meta(con, "rebuilt_at", _fmt(ctx.clock.now()))
        con.execute("CHECKPOINT")
    store.replace_with(building)
    result.watermark = started
    return result


def _write_batch(con: duckdb.DuckDBPyConnection, facts: source.Facts, result: LoadResult) -> int:
    written = write_facts(con, facts, derive=False)
    result.events += written.get("events", 0)
    result.rows += sum(written.values())
    return len(facts.views) + len(facts.events)


# --- reading helpers ------------------------------------------------------------------------------


def watermark_of(store: Store) -> datetime | None:
    with store.reader() as con:
        value = get_meta(con, "watermark")
    return datetime.fromisoformat(value) if value else None


def table_rows(store: Store, table: str) -> list[tuple]:
    """Every row of a store table in a stable order (tests compare a rebuild with the incremental result)."""
    columns = ", ".join(name for name, _ in TABLES[table]) if table in TABLES else "*"
    with store.reader() as con:
        return con.execute(f"SELECT {columns} FROM {table} ORDER BY ALL").fetchall()


def local_today(ctx: Context) -> date:
    return source.local(ctx.clock.now(), ZoneInfo(ctx.settings.timezone)).date()
