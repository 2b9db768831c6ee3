"""Analytics at size: 10 million payments with their orders, refunds, views and events in the DuckDB store.

Prints how long generating and loading the store takes, each dashboard query's latency (the API's
path: open the file read-only, run the metric, close), and the incremental load rate from the
operational database beside the checkout benchmark's purchase rate (bench/README.md, or
--checkout-rate). The history is generated directly in DuckDB, not through the services: the point
is query latency at this size. The incremental part writes real operational rows (orders, items,
payments, ledger postings, outbox events) and loads them into the big store with the worker's code.

    .venv/bin/python bench/analytics.py                       # 10M payments
    .venv/bin/python bench/analytics.py --payments 1000000    # a quicker run
    .venv/bin/python bench/analytics.py --pg --purchases 20000 --checkout-rate 180
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TZ_OFFSET = timedelta(hours=8)  # Asia/Shanghai, which keeps no daylight saving time
DAYS = 365


def generate_store(path: Path, payments: int, *, now: datetime) -> dict[str, int]:
    """Fill a store file with about `payments` attempts over the last year; returns rows per table."""
    import duckdb

    from knowpay.analytics.store import SCHEMA_VERSION, ddl, refresh_derived

    orders = int(payments / 1.12)
    buyers, creators, products = max(orders // 9, 10), max(orders // 5000, 5), max(orders // 500, 50)
    start = now - timedelta(days=DAYS)
    step_us = DAYS * 86_400_000_000 // orders
    con = duckdb.connect(str(path))
    for statement in ddl():
        con.execute(statement)
    con.execute(f"""
        CREATE TEMP TABLE g AS
        SELECT i, TIMESTAMP '{start:%Y-%m-%d %H:%M:%S}' + to_microseconds(CAST(i * {step_us} + hash(i, 0) % {step_us} AS BIGINT))
                   AS created_at,
               hash(i, 1) % {buyers} AS buyer, hash(i, 2) % {products} AS product,
               hash(i, 3) % 100 AS fate, hash(i, 4) % 100 AS ch, hash(i, 5) % 100 AS retry,
               CAST(3 + pow(hash(i, 6) % 1000 / 1000.0, 3) * 900 AS DOUBLE) AS seconds,
               hash(i, 7) % 100 AS refund
        FROM range({orders}) t(i)""")
    con.execute(f"""
        CREATE TEMP TABLE o AS
        SELECT *, 'ord_' || i AS order_id, 'usr_b' || buyer AS buyer_id, 'prd_' || product AS product_id,
               'usr_c' || (product % {creators}) AS creator_id,
               CASE product % 20 WHEN 0 THEN 'membership' WHEN 1 THEN 'membership' WHEN 2 THEN 'coin_pack'
                    WHEN 3 THEN 'ebook' WHEN 4 THEN 'audio' WHEN 5 THEN 'video' WHEN 6 THEN 'consulting'
                    ELSE 'course' END AS kind,
               990 + (hash(product) % 60) * 500 AS amount,
               CASE WHEN ch < 45 THEN 'alipay' WHEN ch < 85 THEN 'wechat' WHEN ch < 92 THEN 'stripe'
                    WHEN ch < 97 THEN 'wallet' ELSE 'bank_transfer' END AS channel,
               CASE WHEN ch < 25 THEN 'qr' WHEN ch < 45 THEN 'wap' WHEN ch < 65 THEN 'native'
                    WHEN ch < 85 THEN 'jsapi' END AS method,
               CASE WHEN fate < 82 THEN 'paid' WHEN fate < 94 THEN 'expired' ELSE 'cancelled' END AS fate_status,
               created_at + to_microseconds(CAST(seconds * 1e6 AS BIGINT)) AS paid_at
        FROM g""")
    con.execute("""
        CREATE TEMP TABLE r AS
        SELECT *, CASE WHEN fate_status = 'paid' AND refund < 4 THEN (CASE WHEN refund < 2 THEN amount
                       ELSE amount // 2 END) ELSE 0 END AS refunded FROM o""")
    local = f"INTERVAL {int(TZ_OFFSET.total_seconds() // 3600)} HOUR"
    con.execute(f"""
        INSERT INTO products SELECT DISTINCT product_id, creator_id, kind, 'Product ' || product, amount, 'cny',
            CASE WHEN kind = 'membership' THEN 'month' END, CASE WHEN kind = 'membership' THEN 1 END, 'published',
            TIMESTAMP '{start:%Y-%m-%d}', TIMESTAMP '{start:%Y-%m-%d}' FROM o""")
    paid_status = ("CASE WHEN fate_status <> 'paid' THEN fate_status WHEN refunded = amount THEN 'refunded' "
                   "WHEN refunded > 0 THEN 'partially_refunded' ELSE 'paid' END")
    con.execute(f"""
        INSERT INTO orders SELECT order_id, buyer_id, {paid_status}, 'cny', amount, 0, refunded, created_at,
            created_at + {local}, CASE WHEN fate_status = 'paid' THEN paid_at END,
            CASE WHEN fate_status = 'paid' THEN paid_at + {local} END,
            CASE WHEN fate_status <> 'paid' THEN created_at + INTERVAL 15 MINUTE END,
            CASE WHEN fate_status = 'paid' THEN channel END, CASE WHEN fate_status = 'paid' THEN method END,
            CASE WHEN fate_status = 'paid' THEN 1 + (retry < 15)::INT WHEN fate < 90 THEN 1 ELSE 0 END, 2,
            hash(order_id), hash(buyer_id)
        FROM r ORDER BY created_at""")
    con.execute(f"""
        INSERT INTO sales SELECT order_id, 0, buyer_id, product_id, creator_id, kind, 'cny', 1, amount, refunded,
            CASE WHEN kind = 'coin_pack' OR fate_status <> 'paid' THEN 0
                 ELSE (amount - (amount + 5) // 10) - (refunded * (amount - (amount + 5) // 10)) // amount END,
            CASE WHEN fate_status = 'paid' AND channel <> 'wallet' THEN (amount * 60 + 5000) // 10000 ELSE 0 END,
            CASE WHEN kind = 'coin_pack' AND fate_status = 'paid' THEN amount ELSE 0 END,
            {paid_status}, created_at, created_at + {local},
            CASE WHEN fate_status = 'paid' THEN paid_at END, CASE WHEN fate_status = 'paid' THEN paid_at + {local} END,
            CASE WHEN fate_status = 'paid' THEN channel END, CASE WHEN fate_status = 'paid' THEN method END,
            TRUE, TRUE, TRUE, TRUE, hash(order_id), hash(buyer_id)
        FROM r ORDER BY created_at""")
    device = ("CASE WHEN method IN ('wap', 'jsapi') THEN 'mobile' WHEN method IS NOT NULL THEN 'desktop' "
              "ELSE 'unknown' END")
    band = ("CASE WHEN amount < 1000 THEN '0-10' WHEN amount < 5000 THEN '10-50' WHEN amount < 20000 THEN '50-200' "
            "WHEN amount < 100000 THEN '200-1000' ELSE '1000+' END")
    con.execute(f"""
        INSERT INTO payments
        SELECT * FROM (
            SELECT 'pay_' || i || '_1', order_id, buyer_id, channel, method, {device}, {band},
                CASE WHEN fate_status = 'paid' AND retry >= 15 THEN 'succeeded'
                     WHEN fate_status = 'paid' OR fate < 88 THEN 'failed' ELSE 'expired' END,
                amount, 'cny', CASE WHEN retry >= 15 THEN refunded ELSE 0 END,
                CASE WHEN (fate_status = 'paid' AND retry < 15) OR (fate_status <> 'paid' AND fate < 88)
                     THEN (['card_declined', 'insufficient_funds', 'user_cancelled', 'risk_rejected',
                            'bank_unavailable'])[CAST(1 + hash(i, 8) % 5 AS BIGINT)] END,
                created_at, created_at + {local},
                CASE WHEN fate_status = 'paid' AND retry >= 15 THEN paid_at END,
                CASE WHEN fate_status = 'paid' AND retry >= 15 THEN seconds END,
                created_at + INTERVAL 1 MINUTE, 2, hash(order_id)
            FROM r WHERE fate_status = 'paid' OR fate < 90
            UNION ALL
            SELECT 'pay_' || i || '_2', order_id, buyer_id, channel, method, {device}, {band}, 'succeeded', amount,
                'cny', refunded, NULL, created_at + INTERVAL 40 SECOND, created_at + INTERVAL 40 SECOND + {local},
                paid_at, seconds - 40, paid_at, 2, hash(order_id)
            FROM r WHERE fate_status = 'paid' AND retry < 15
        ) ORDER BY 13""")
    con.execute(f"""
        INSERT INTO refunds SELECT 'ref_' || i, 'pay_' || i || CASE WHEN retry < 15 THEN '_2' ELSE '_1' END, order_id,
            channel, refunded, 'cny', 'succeeded', 'requested',
            (['changed my mind', 'not as described', 'bought twice', 'poor audio quality'])[CAST(1 + hash(i, 9) % 4 AS BIGINT)],
            paid_at + INTERVAL 2 DAY, paid_at + INTERVAL 2 DAY + {local}, paid_at + INTERVAL 2 DAY,
            paid_at + INTERVAL 2 DAY + {local}, 2, hash(order_id)
        FROM r WHERE refunded > 0 ORDER BY paid_at""")
    con.execute(f"""
        INSERT INTO entitlements SELECT 'ent_' || i, buyer_id, product_id, creator_id, order_id, kind,
            CASE WHEN refunded = amount THEN 'revoked' ELSE 'active' END, amount, 'cny',
            CASE WHEN kind = 'membership' THEN 'month' END, CASE WHEN kind = 'membership' THEN 1 END,
            paid_at, CASE WHEN kind = 'membership' THEN paid_at + INTERVAL 1 MONTH END,
            CASE WHEN refunded = amount THEN paid_at + INTERVAL 2 DAY END, paid_at, paid_at + {local}, 1,
            stop, paid_at + {local}, stop + {local}, hash(buyer_id, product_id)
        FROM (SELECT *, CASE WHEN refunded = amount THEN paid_at + INTERVAL 2 DAY
                             WHEN kind = 'membership' THEN paid_at + INTERVAL 1 MONTH END AS stop FROM r)
        WHERE fate_status = 'paid' AND kind <> 'coin_pack' ORDER BY paid_at""")
    con.execute(f"""
        INSERT INTO views SELECT i * 2 + k, 'product_view', 'prd_' || seen, NULL, md5(buyer_id)[:24],
            CASE WHEN (i + k) % 3 = 0 THEN 'desktop' ELSE 'mobile' END, seen_at, seen_at + {local},
            'usr_c' || (seen % {creators}), p.kind
        FROM (SELECT i, k, buyer_id, (product + k * 7) % {products} AS seen,
                     created_at - to_microseconds(((k + 1) * 600000000)::BIGINT) AS seen_at FROM o, range(2) t(k)) v
        JOIN products p ON p.product_id = 'prd_' || v.seen ORDER BY seen_at""")
    con.execute(f"""
        INSERT INTO events SELECT 'evt_' || i || '_' || k,
            (['payment.succeeded', 'order.paid'])[k + 1], (['payment', 'order'])[k + 1],
            CASE k WHEN 0 THEN 'pay_' || i || '_1' ELSE order_id END, 2, paid_at, paid_at + {local}
        FROM r, range(2) t(k) WHERE fate_status = 'paid' ORDER BY paid_at""")
    refresh_derived(con, full=True)
    con.execute(
        "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?), ('timezone', 'Asia/Shanghai'), "
        "('watermark', ?), ('engine', ?)",
        [SCHEMA_VERSION, now.isoformat(), duckdb.__version__],
    )
    counts = {
        t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
        for t in (
            "orders",
            "sales",
            "payments",
            "refunds",
            "entitlements",
            "views",
            "events",
            "r_sales",
            "r_payments",
            "r_timings",
            "r_products",
            "buyer_months",
        )
    }
    con.execute("CHECKPOINT")
    con.close()
    return counts


def dashboard_queries(today: date, creator: str) -> list[tuple[str, dict]]:
    month, year = today - timedelta(days=29), today - timedelta(days=364)
    d30 = {"start": month, "end": today, "granularity": "day"}
    y1 = {"start": year, "end": today, "granularity": "month"}
    return [
        ("gmv 30d by day", {"metric": "gmv", **d30}),
        ("gmv 1y by month", {"metric": "gmv", **y1}),
        ("gmv 1y by week, by channel", {"metric": "gmv", **y1, "granularity": "week", "group_by": "channel"}),
        ("net_revenue 1y by month", {"metric": "net_revenue", **y1}),
        ("success_rate 30d by channel", {"metric": "success_rate", **d30, "group_by": "channel"}),
        ("success_rate 1y by method", {"metric": "success_rate", **y1, "group_by": "method"}),
        ("failure_reasons 30d", {"metric": "failure_reasons", **d30}),
        ("time_to_pay 30d by channel", {"metric": "time_to_pay", **d30, "group_by": "channel"}),
        ("time_to_pay 1y by channel", {"metric": "time_to_pay", **y1, "group_by": "channel"}),
        ("funnel 30d", {"metric": "funnel", **d30}),
        ("funnel 1y by month", {"metric": "funnel", **y1}),
        ("refunds 1y by month", {"metric": "refunds", **y1}),
        ("refund_reasons 1y", {"metric": "refund_reasons", **y1}),
        ("cohorts 1y", {"metric": "cohorts", **y1}),
        ("mrr 1y by month", {"metric": "mrr", **y1}),
        ("mrr 30d by day", {"metric": "mrr", **d30}),
        ("arpu 1y by month", {"metric": "arpu", **y1}),
        ("repeat_purchase 1y by month", {"metric": "repeat_purchase", **y1}),
        ("top_products 30d", {"metric": "top_products", **d30}),
        ("top_products 1y", {"metric": "top_products", **y1}),
        ("top_creators 1y", {"metric": "top_creators", **y1}),
        ("coins 1y by month", {"metric": "coins", **y1}),
        ("heatmap 30d", {"metric": "heatmap", **d30}),
        ("creator: gmv 1y by month", {"metric": "gmv", **y1, "creator_id": creator}),
        ("creator: success_rate 30d", {"metric": "success_rate", **d30, "creator_id": creator}),
        ("creator: funnel 30d", {"metric": "funnel", **d30, "creator_id": creator}),
        ("creator: cohorts 1y", {"metric": "cohorts", **y1, "creator_id": creator}),
        ("creator: mrr 1y", {"metric": "mrr", **y1, "creator_id": creator}),
        ("creator: top_products 1y", {"metric": "top_products", **y1, "creator_id": creator}),
    ]


def time_queries(store, now: datetime, runs: int) -> list[tuple[str, float, float]]:
    from knowpay.analytics import metrics

    today = (now + TZ_OFFSET).date()
    results = []
    for name, params in dashboard_queries(today, "usr_c1"):
        query = metrics.Query(**params, timezone="Asia/Shanghai", now=now)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            with store.reader() as con:  # what one API request does
                metrics.compute(con, query)
            times.append(time.perf_counter() - started)
        results.append((name, times[0], statistics.median(times)))
    return results


def time_dashboards(
    store, now: datetime, runs: int
) -> list[tuple[str, float, float, list[tuple[str, float]]]]:
    """A whole dashboard page's figures: every panel of it read in one visit to the store, as the pages do;
    with each page its three slowest panels (the median of each panel's times over the runs)."""
    from knowpay.analytics import metrics
    from knowpay.analytics.dashboard import CREATOR_PANELS, PLATFORM_PANELS

    today = (now + TZ_OFFSET).date()
    pages = [("admin", PLATFORM_PANELS, None), ("creator", CREATOR_PANELS, "usr_c1")]
    ranges = [("30 days by day", today - timedelta(days=29), "day"), ("1 year by month", today - timedelta(days=364),
                                                                        "month")]
    results = []
    for who, panels, creator in pages:
        for span, start, granularity in ranges:
            queries = {
                key: metrics.Query(
                    metric=name,
                    start=start,
                    end=today,
                    creator_id=creator,
                    timezone="Asia/Shanghai",
                    now=now,
                    **{"granularity": granularity, **extra},
                )
                for key, (name, extra) in panels.items()
            }
            times, panel_times = [], {key: [] for key in queries}
            for _ in range(runs):
                started = time.perf_counter()
                with store.reader() as con:
                    for key, query in queries.items():
                        began = time.perf_counter()
                        metrics.compute(con, query)
                        panel_times[key].append(time.perf_counter() - began)
                times.append(time.perf_counter() - started)
            slowest = sorted(
                ((k, statistics.median(v)) for k, v in panel_times.items()), key=lambda kv: -kv[1]
            )[:3]
            results.append(
                (
                    f"{who} dashboard, {span} ({len(queries)} panels)",
                    times[0],
                    statistics.median(times),
                    slowest,
                )
            )
    return results


def seed_operational(url: str, purchases: int, *, now: datetime) -> tuple[object, int]:
    """An operational database with `purchases` course purchases written as the services write them
    (order, item, payment, ledger capture, entitlement, three outbox events), stamped in the last minute."""
    from sqlalchemy import insert, select

    from knowpay.access.models import Entitlement
    from knowpay.accounts import service as accounts
    from knowpay.catalog import service as catalog
    from knowpay.config import load_settings
    from knowpay.domain.clock import FixedClock
    from knowpay.domain.ids import new_id
    from knowpay.ledger.models import JournalTransaction, LedgerAccount, Posting
    from knowpay.migrate import upgrade
    from knowpay.orders.models import Order, OrderItem
    from knowpay.outbox.models import OutboxEvent
    from knowpay.payments.models import Payment
    from knowpay.web import create_app

    upgrade(url)
    clock = FixedClock(now - timedelta(minutes=2))
    settings = load_settings({"KNOWPAY_DATABASE_URL": url, "KNOWPAY_INSTANCE_PATH": str(Path(tempfile.mkdtemp()))})
    app = create_app(settings, clock=clock, config={"SECURITY_PASSWORD_HASH_PASSLIB_OPTIONS": {
        "argon2__rounds": 1, "argon2__memory_cost": 1024}})
    ctx = app.extensions["knowpay"]
    with app.app_context(), ctx.db.transaction() as session:
        creator = accounts.register_user(session, email="c@bench.example.com", password="bench-password-1",
                                         username="bench_c", roles=("creator",), clock=clock)
        buyers = [accounts.register_user(session, email=f"b{i}@bench.example.com", password="bench-password-1",
                                         username=f"bench_b{i}", clock=clock).id for i in range(20)]
        product = catalog.create_product(session, creator=creator, title="Bench course", kind="course", amount=9900,
                                         currency="cny", clock=clock)
        product_id, creator_id = product.id, creator.id
        for code, kind in (("clearing:alipay:cny", "asset"), ("channel_fees:alipay:cny", "expense"),
                           ("platform:fees:cny", "revenue"), (f"creator:{creator_id}:pending:cny", "liability")):
            session.add(LedgerAccount(code=code, type=kind, currency="cny", allow_negative=True, balance=0,
                                      created_at=clock.now()))
    with ctx.db.transaction() as session:
        account = {code: id_ for id_, code in session.execute(select(LedgerAccount.id, LedgerAccount.code))}
    fee, platform = (9900 * 60 + 5000) // 10000, 990
    legs = [("clearing:alipay:cny", 9900 - fee), ("channel_fees:alipay:cny", fee), ("platform:fees:cny", -platform),
            (f"creator:{creator_id}:pending:cny", platform - 9900)]
    batch = 2_000
    for first in range(0, purchases, batch):
        rows: dict[type, list[dict]] = {m: [] for m in (Order, OrderItem, Payment, JournalTransaction, Posting,
                                                        Entitlement, OutboxEvent)}
        for n in range(first, min(first + batch, purchases)):
            at = now - timedelta(seconds=90) + timedelta(microseconds=n * 60_000_000 // purchases)
            paid = at + timedelta(seconds=20)
            oid, iid, pid, tid, eid = (new_id(p) for p in ("ord", "oit", "pay", "txn", "ent"))
            buyer = buyers[n % len(buyers)]
            rows[Order].append({
                "id": oid, "buyer_id": buyer, "status": "paid", "currency": "cny", "amount_subtotal": 9900,
                "amount_discount": 0, "amount_total": 9900, "amount_refunded": 0,
                "expires_at": at + timedelta(minutes=15), "paid_at": paid, "created_at": at, "version": 2})
            rows[OrderItem].append({
                "id": iid, "order_id": oid, "position": 0, "product_id": product_id, "creator_id": creator_id,
                "title": "Bench course", "kind": "course", "amount": 9900, "quantity": 1, "amount_discount": 0})
            rows[Payment].append({
                "id": pid, "order_id": oid, "buyer_id": buyer, "channel": "alipay", "method": "qr",
                "status": "succeeded", "amount": 9900, "currency": "cny", "channel_extra": {}, "amount_refunded": 0,
                "version": 3, "query_attempts": 0, "created_at": at, "updated_at": paid, "succeeded_at": paid})
            rows[JournalTransaction].append({
                "id": tid, "idempotency_key": f"payment:{pid}:captured", "kind": "capture", "description": "",
                "meta": {}, "created_at": paid})
            rows[Posting].extend({
                "id": new_id("pst"), "transaction_id": tid, "position": k, "account_id": account[code],
                "amount": amount, "currency": "cny"} for k, (code, amount) in enumerate(legs))
            rows[Entitlement].append({
                "id": eid, "user_id": buyer, "product_id": product_id, "order_id": oid, "order_item_id": iid,
                "status": "active", "starts_at": paid, "version": 1, "created_at": paid})
            for type_, object_type, object_id, seq in (("payment.succeeded", "payment", pid, 3),
                                                       ("entitlement.granted", "entitlement", eid, 1),
                                                       ("order.paid", "order", oid, 2)):
                rows[OutboxEvent].append({
                    "id": new_id("evt"), "type": type_, "object_type": object_type, "object_id": object_id,
                    "sequence": seq, "payload": {}, "created_at": paid})
        with ctx.db.transaction() as session:
            for model, values in rows.items():
                session.execute(insert(model), values)
    return ctx, purchases * 3


def checkout_rate(given: float | None) -> tuple[float | None, str]:
    if given:
        return given, "--checkout-rate"
    readme = Path(__file__).resolve().parent / "README.md"
    if readme.exists():
        # the checkout table's "plain" run: | plain | <purchases/s> | ...
        match = re.search(r"^\| plain \| ([\d.]+) \|", readme.read_text(encoding="utf-8"), re.MULTILINE)
        if match:
            return float(match.group(1)), "bench/README.md, checkout plain run"
    return None, "unknown (pass --checkout-rate)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=10_000_000)
    parser.add_argument("--purchases", type=int, default=20_000, help="purchases for the incremental load")
    parser.add_argument("--runs", type=int, default=3, help="runs of each query (first = cold)")
    parser.add_argument("--dir", type=Path, help="where to put the store (default: a temporary folder)")
    parser.add_argument("--pg", action="store_true", help="operational database on PostgreSQL (default SQLite)")
    parser.add_argument("--checkout-rate", type=float, help="purchases/s of bench/checkout.py on this machine")
    parser.add_argument("--reuse", action="store_true", help="keep the store already in --dir (no generation)")
    parser.add_argument("--no-queries", action="store_true", help="only the incremental load")
    args = parser.parse_args()

    from knowpay.analytics.store import Store, load_increment, set_meta

    folder = args.dir or Path(tempfile.mkdtemp(prefix="knowpay-analytics-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "analytics.duckdb"
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    store = Store(path)
    if args.reuse and path.exists():
        print(f"store {path}: reused ({path.stat().st_size / 2**30:.2f} GiB)")
        with store.exclusive(), store.writer() as con:
            set_meta(con, "watermark", (now - timedelta(minutes=5)).isoformat())
    else:
        path.unlink(missing_ok=True)
        print(f"store {path}; {args.payments:,} payments over {DAYS} days")
        started = time.perf_counter()
        counts = generate_store(path, args.payments, now=now - timedelta(minutes=5))
        load_seconds = time.perf_counter() - started
        total = sum(counts.values())
        print(f"generated and loaded in {load_seconds:.1f} s ({total / load_seconds:,.0f} rows/s; "
              f"{path.stat().st_size / 2**30:.2f} GiB): " + ", ".join(f"{t} {n:,}" for t, n in counts.items()))

    if not args.no_queries:
        results = time_queries(store, now, args.runs)
        print(f"\ndashboard queries (open read-only + query + close; cold, then median of {args.runs}):")
        for name, cold, warm in results:
            flag = "" if warm < 1.0 else "   <-- over 1 s"
            print(f"  {name:32s} {cold * 1000:8.0f} ms {warm * 1000:8.0f} ms{flag}")
        slowest = max(results, key=lambda r: r[2])
        print(f"  slowest: {slowest[0]} at {slowest[2] * 1000:.0f} ms; "
              f"all under 1 s: {all(r[2] < 1 for r in results)}")
        print(f"\ndashboard pages (every panel in one read of the store; cold, then median of {args.runs}):")
        for name, cold, warm, slowest in time_dashboards(store, now, args.runs):
            print(
                f"  {name:48s} {cold * 1000:8.0f} ms {warm * 1000:8.0f} ms   slowest panels: "
                + ", ".join(f"{key} {seconds * 1000:.0f} ms" for key, seconds in slowest)
            )

    if args.pg:
        from bench.harness import fresh_database

        url = fresh_database("knowpay_analytics_bench")
    else:
        url = f"sqlite:///{folder / 'operational.sqlite3'}"
        (folder / "operational.sqlite3").unlink(missing_ok=True)
    ctx, events = seed_operational(url, args.purchases, now=now)
    ctx.settings = ctx.settings.with_overrides(instance_path=folder)
    ctx.clock.advance(minutes=2)
    started = time.perf_counter()
    result = load_increment(ctx, store, blocking=True, budget_seconds=3600)
    took = time.perf_counter() - started
    assert result.events == events, (result.events, events)
    rate = args.purchases / took
    print(f"\nincremental load into the {args.payments:,}-payment store ({'PostgreSQL' if args.pg else 'SQLite'} "
          f"operational database): {events:,} events ({args.purchases:,} purchases, {result.rows:,} rows, "
          f"{result.slices} slices) in {took:.2f} s = {events / took:,.0f} events/s = {rate:,.0f} purchases/s")
    checkout, where = checkout_rate(args.checkout_rate)
    if checkout:
        print(f"checkout purchase rate ({where}): {checkout:,.1f} purchases/s → the load keeps up "
              f"{rate / checkout:,.1f}× over (aim ≥ 10×)")
    else:
        print(f"checkout purchase rate: {where}")


if __name__ == "__main__":
    main()
