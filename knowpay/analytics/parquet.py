"""Daily Parquet partitions of the analytics store, for engines beyond one machine (docs/analytics.md).

Layout: `<dir>/<table>/day=YYYY-MM-DD/part-0.parquet`, Hive-style, one partition per local day
of each row's creation. A day is written once it is over, and written again whenever the load
changes one of its rows (a refund changes an old order): the load marks such days dirty. Files are
written beside their final name and renamed into place, so a reader sees a whole file or the old one.
Only portable types: VARCHAR, INTEGER, BIGINT, DOUBLE and TIMESTAMP (microseconds, no zone).
"""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path

from knowpay.analytics.store import EXPORTED, TABLES, Store, local_today, store_for
from knowpay.context import Context

PARQUET_DIR = "analytics-parquet"


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")


def partition_path(out_dir: Path, table: str, day: date) -> Path:
    return out_dir / table / f"day={day.isoformat()}" / "part-0.parquet"


def export_parquet(ctx: Context, store: Store | None = None, *, out_dir: Path | None = None,
                   start: date | None = None, end: date | None = None) -> list[Path]:
    """Write the dirty days before today (or every day of start..end) and return the files written."""
    store = store or store_for(ctx.settings)
    out_dir = out_dir or Path(ctx.settings.instance_path) / PARQUET_DIR
    today = local_today(ctx)
    written: list[Path] = []
    with store.exclusive():
        if not store.path.exists():
            return written
        with store.reader() as con:
            if start is not None and end is not None:
                days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
                wanted = [(table, day) for table in EXPORTED for day in days]
            else:
                wanted = con.execute("SELECT DISTINCT tbl, day FROM dirty_days WHERE day < ? ORDER BY day, tbl",
                                     [today]).fetchall()
            for table, day in wanted:
                columns = ", ".join(name for name, _ in TABLES[table])
                target = partition_path(out_dir, table, day)
                nothing = con.execute(f"SELECT count(*) = 0 FROM {table} WHERE created_local >= ? AND "
                                      f"created_local < ?", [day, day + timedelta(days=1)]).fetchall()[0][0]
                if nothing:
                    target.unlink(missing_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(f".{target.name}.partial")
                day_start = f"TIMESTAMP '{day.isoformat()} 00:00:00'"
                con.execute(f"COPY (SELECT {columns} FROM {table} WHERE created_local >= {day_start} AND "
                            f"created_local < {day_start} + INTERVAL 1 DAY ORDER BY created_at) "
                            f"TO '{_quoted(partial)}' (FORMAT parquet, COMPRESSION zstd)")
                os.replace(partial, target)
                written.append(target)
        if start is None or end is None:
            with store.writer() as con:
                con.execute("DELETE FROM dirty_days WHERE day < ?", [today])
    return written
