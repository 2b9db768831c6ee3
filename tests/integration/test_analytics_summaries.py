"""The summaries the load keeps (r_products by month, r_timings in 1 % bins) stay equal to the raw
aggregation of the facts as loads bring new sales, refunds and late rows; quantiles read from the bins
stay within their stated accuracy; a store of an older layout is rebuilt, never read half-made."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from datetime import date, datetime, timedelta

import pytest

from knowpay.analytics import timing
from knowpay.analytics.metrics import Query, compute
from knowpay.analytics.source import Facts
from knowpay.analytics.store import (
    DERIVED,
    SCHEMA_VERSION,
    TABLES,
    Store,
    StoreBusy,
    get_meta,
    load_increment,
    set_meta,
    store_for,
    write_facts,
)

EIGHT_HOURS = timedelta(hours=8)  # the platform's zone, Asia/Shanghai
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def sale(order: str, product: str, creator: str, *, paid: datetime | None, net: int, refunded: int = 0,
         channel: str = "alipay", kind: str = "course", position: int = 0, first_of_creator: bool = True) -> dict:
    """One sales line as source.Facts carries it (naive UTC times; *_local in the platform zone); the lines
    of one order here are of different kinds, so each stands for its order among its kind's lines."""
    created = (paid or datetime(2026, 1, 1)) - timedelta(minutes=3)
    row = dict.fromkeys(name for name, _ in TABLES["sales"])
    row.update(order_id=order, position=position, buyer_id=f"usr_{order}", product_id=product, creator_id=creator,
               kind=kind, currency="cny", quantity=1, net=net, refunded=refunded, creator_net=net * 9 // 10,
               channel_fee=net * 6 // 1000, coins_issued=0, status="paid" if paid else "pending",
               created_at=created, created_local=created + EIGHT_HOURS, paid_at=paid,
               paid_local=paid + EIGHT_HOURS if paid else None, channel=channel if paid else None, method="qr",
               first_line=position == 0, first_of_creator=first_of_creator, first_of_kind=True,
               first_of_creator_kind=True)
    if refunded:
        row["status"] = "refunded" if refunded == net else "partially_refunded"
    return row


def payment(pid: str, *, created: datetime, seconds: float | None, channel: str = "alipay") -> dict:
    row = dict.fromkeys(name for name, _ in TABLES["payments"])
    done = seconds is not None
    row.update(payment_id=pid, order_id=f"ord_{pid}", buyer_id="usr_b", channel=channel, method="qr",
               device_class="mobile", amount_band="50-200", status="succeeded" if done else "requires_action",
               amount=9900, currency="cny", amount_refunded=0, created_at=created, created_local=created + EIGHT_HOURS,
               succeeded_at=created + timedelta(seconds=seconds) if done else None, seconds_to_pay=seconds,
               updated_at=created, version=2 if done else 1)
    return row


def assert_summaries_match_the_facts(store: Store) -> None:
    """Each summary as kept equals its query over all the facts now."""
    with store.reader() as con:
        for name, summary in DERIVED.items():
            kept = con.execute(f"SELECT * FROM {name} ORDER BY ALL").fetchall()
            fresh = con.execute(f"SELECT * FROM ({summary.select.format(where='TRUE')}) ORDER BY ALL").fetchall()
            assert kept == fresh, name


def load(store: Store, **facts: list[dict]) -> None:
    with store.exclusive(), store.writer() as con:
        write_facts(con, Facts(**facts))


def rankings(store: Store, start: date, end: date, **filters) -> dict[str, tuple[list[dict], list[dict]]]:
    """Top products and creators from the summary and from the facts alone."""
    out = {}
    with store.reader() as con:
        for metric in ("top_products", "top_creators"):
            q = Query(metric=metric, start=start, end=end, limit=100, **filters)
            out[metric] = (compute(con, q), compute(con, replace(q, rollups=False)))
    return out


def test_month_summaries_follow_new_sales_refunds_and_late_rows(tmp_path):
    store = Store(tmp_path / "analytics.duckdb")
    # Paid on both sides of a month's end in local time: 15:59 UTC on Jan 31 is 23:59 in Shanghai.
    load(store, sales=[sale("o1", "p_course", "c_ann", paid=datetime(2026, 1, 31, 15, 59), net=9900),
                       sale("o2", "p_course", "c_ann", paid=datetime(2026, 1, 31, 16, 1), net=9900),
                       sale("o3", "p_book", "c_bob", paid=datetime(2026, 2, 3, 2), net=1990, kind="ebook",
                            channel="wechat"),
                       sale("o3", "p_call", "c_bob", paid=datetime(2026, 2, 3, 2), net=20000, kind="consulting",
                            channel="wechat", position=1, first_of_creator=False)])
    assert_summaries_match_the_facts(store)
    with store.reader() as con:
        months = dict(con.execute("SELECT month, sum(gross) FROM r_products GROUP BY ALL").fetchall())
    assert months == {date(2026, 1, 1): 9900, date(2026, 2, 1): 9900 + 1990 + 20000}
    # A later load: a partial refund of January's order, a sale paid in January that arrives late,
    # and an order still pending (no month yet).
    load(store, sales=[sale("o1", "p_course", "c_ann", paid=datetime(2026, 1, 31, 15, 59), net=9900, refunded=3300),
                       sale("o4", "p_book", "c_bob", paid=datetime(2026, 1, 10, 9), net=1990, kind="ebook"),
                       sale("o5", "p_course", "c_ann", paid=None, net=9900)])
    assert_summaries_match_the_facts(store)
    with store.reader() as con:
        january = con.execute("SELECT product_id, gross, refunded FROM r_products WHERE month = DATE '2026-01-01' "
                              "ORDER BY ALL").fetchall()
    assert january == [("p_book", 1990, 0), ("p_course", 9900, 3300)]
    # The rankings answer the same from the summary as from the lines, to the fen, whether the range
    # holds whole months, starts or ends inside one, or holds none.
    for start, end in ((date(2026, 1, 1), date(2026, 2, 28)), (date(2026, 1, 5), date(2026, 2, 28)),
                       (date(2026, 1, 1), date(2026, 2, 2)), (date(2026, 1, 11), date(2026, 2, 10))):
        for filters in ({}, {"kind": "ebook"}, {"channel": "wechat"}, {"creator_id": "c_bob"}):
            for metric, (summary, facts) in rankings(store, start, end, **filters).items():
                assert summary == facts, (metric, start, end, filters)
    both = rankings(store, date(2026, 1, 1), date(2026, 2, 28))
    assert {r["creator_id"]: (r["orders"], r["products"], r["net"]) for r in both["top_creators"][0]} == {
        "c_ann": (2, 1, 9900 + 9900 - 3300), "c_bob": (2, 2, 1990 + 1990 + 20000)}


def test_time_to_pay_bins_follow_the_payments_and_stay_within_one_percent(tmp_path):
    store = Store(tmp_path / "analytics.duckdb")
    rng = random.Random(3)
    day = datetime(2026, 3, 2, 4)
    times = [0.0, 0.004, 1.5, 3.0] + [rng.lognormvariate(4, 1.2) for _ in range(400)]
    load(store, payments=[payment(f"pay_{i}", created=day + timedelta(minutes=i), seconds=s)
                          for i, s in enumerate(times)] + [payment("pay_open", created=day, seconds=None)])
    assert_summaries_match_the_facts(store)
    # The open one is paid in a later load; a late row of the same day arrives too.
    load(store, payments=[payment("pay_open", created=day, seconds=42.0),
                          payment("pay_late", created=day + timedelta(hours=3), seconds=7.25)])
    assert_summaries_match_the_facts(store)
    times += [42.0, 7.25]
    with store.reader() as con:
        q = Query(metric="time_to_pay", start=date(2026, 3, 2), end=date(2026, 3, 2), group_by="channel")
        from_bins, from_payments = compute(con, q), compute(con, replace(q, rollups=False))
    assert from_bins == from_payments
    row = from_bins[0]
    assert row["payments"] == len(times)
    for figure, q_ in (("p50_seconds", 0.5), ("p90_seconds", 0.9)):
        xs = sorted(times)
        position = (len(xs) - 1) * q_
        exact = xs[math.floor(position)] + (xs[math.ceil(position)] - xs[math.floor(position)]) * (position % 1)
        assert abs(row[figure] - exact) <= timing.ACCURACY * exact + 0.05, figure


@pytest.mark.parametrize("seconds", [0.0, 0.01, 0.0101, 0.5, 3.0, 59.99, 600.0, 86_400.0])
def test_a_bin_stands_for_its_times_within_the_accuracy(seconds):
    value = timing.seconds_of(timing.bucket_of(seconds))
    assert abs(value - seconds) <= timing.ACCURACY * seconds + timing.FLOOR_SECONDS


@SQLITE_ONLY
def test_a_store_of_an_older_layout_is_refused_to_readers_then_rebuilt_by_the_load(ctx, client, admin):
    store = store_for(ctx.settings)
    with store.exclusive(), store.writer() as con:  # what schema 3 left: no r_products, no r_timings
        con.execute("DROP TABLE r_products")
        con.execute("DROP TABLE r_timings")
        set_meta(con, "schema_version", "3")
        set_meta(con, "watermark", ctx.clock.now().isoformat())
    with pytest.raises(StoreBusy), store.reader(current=True):
        pass
    answer = client.get("/api/v1/analytics/top_products", headers=admin.headers)
    assert answer.status_code == 503 and answer.get_json()["error"]["code"] == "analytics_busy"
    result = load_increment(ctx, store, blocking=True)
    assert result.rebuilt
    with store.reader(current=True) as con:
        assert get_meta(con, "schema_version") == SCHEMA_VERSION
        assert con.execute("SELECT count(*) FROM r_products").fetchall() == [(0,)]
    assert client.get("/api/v1/analytics/top_products", headers=admin.headers).status_code == 200
