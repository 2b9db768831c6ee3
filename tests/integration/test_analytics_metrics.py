"""Every metric on a generated payment history, checked against answers this file works out itself
from what it did (plain Python over its own record, not the store's SQL)."""

from __future__ import annotations

import calendar
import math
import random
import shutil
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import duckdb
import pytest
from click.testing import CliRunner

from knowpay.accounts import service as accounts
from knowpay.accounts.models import User
from knowpay.analytics import timing
from knowpay.analytics.metrics import METRICS, Query, compute
from knowpay.analytics.parquet import export_parquet
from knowpay.analytics.report import ECHARTS, gather, html_report, terminal_summary
from knowpay.analytics.service import record_checkout_view, record_product_view
from knowpay.analytics.source import Facts
from knowpay.analytics.store import (
    DERIVED,
    KEYED,
    TABLES,
    Store,
    load_increment,
    rebuild,
    set_meta,
    store_for,
    table_rows,
    write_facts,
)
from knowpay.catalog import service as catalog
from knowpay.channels import Registry
from knowpay.cli import main
from knowpay.domain.clock import FixedClock
from knowpay.domain.states import ProductStatus
from knowpay.orders import service as orders
from knowpay.payments import service as payments
from knowpay.payments.capture import capture_payment, fail_payment
from knowpay.payments.maintenance import expire_due_orders
from knowpay.refunds.service import request_refund
from tests.conftest import FAST_PASSWORDS, Caller
from tests.fakes import FakeChannel

TZ = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 6, 1, 1, 0, 0)  # naive UTC
PLATFORM_FEE_BPS = 1000
FEES = {"sandbox": 60, "alipay": 55, "wallet": 0}


def local(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC).astimezone(TZ).replace(tzinfo=None)


def fee_bps(amount: int, bps: int) -> int:
    return (amount * bps + 5000) // 10000


@dataclass
class ProductRec:
    id: str
    creator: str
    kind: str
    amount: int
    title: str
    plan: tuple[str, int] | None = None
    coins: int = 0
    bonus: int = 0


@dataclass
class AttemptRec:
    id: str
    channel: str
    method: str | None
    created_at: datetime
    status: str = "requires_action"
    failure_code: str | None = None
    succeeded_at: datetime | None = None


@dataclass
class OrderRec:
    id: str
    buyer: str
    lines: list[tuple[ProductRec, int]]  # (product, quantity)
    created_at: datetime
    status: str = "pending"
    paid_at: datetime | None = None
    channel: str | None = None
    attempts: list[AttemptRec] = field(default_factory=list)
    refunded: int = 0
    refunds: list[tuple[int, str, datetime]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(p.amount * q for p, q in self.lines)

    def nets(self) -> list[int]:
        return [p.amount * q for p, q in self.lines]


def allocate(total: int, weights: list[int]) -> list[int]:
    """Proportional whole-unit split, the last weighted part taking what is left (the documented rule)."""
    s = sum(weights)
    if not s or not total:
        return [0] * len(weights)
    last = max(i for i, w in enumerate(weights) if w)
    parts = [total * w // s if i != last else 0 for i, w in enumerate(weights)]
    parts[last] = total - sum(parts)
    return parts


class History:
    """Drives the real services with a fixed clock and keeps its own record of what happened."""

    def __init__(self, app, ctx, clock: FixedClock) -> None:
        self.app, self.ctx, self.clock = app, ctx, clock
        self.users: dict[str, User] = {}
        self.callers: dict[str, Caller] = {}
        self.products: dict[str, ProductRec] = {}
        self.orders: list[OrderRec] = []
        self.views: list[tuple[str, datetime]] = []
        # (buyer, product id, start, end, price, plan, order id)
        self.memberships: list[tuple[str, str, datetime, datetime, int, tuple[str, int], str]] = []
        self.revoked: dict[str, datetime] = {}
        self.wallet: dict[str, int] = defaultdict(int)

    def user(self, name: str, role: str) -> str:
        with self.app.app_context(), self.ctx.db.transaction() as session:
            user = accounts.register_user(session, email=f"{name}@example.com", password="correct-horse-9",
                                          username=name, roles=(role,), clock=self.clock)
            token = accounts.issue_token(session, user, clock=self.clock, lifetime=timedelta(days=3650)).token
            _ = user.roles
            self.users[name] = user
            self.callers[name] = Caller(user.id, user.email, token)
        return user.id

    def product(self, key: str, creator: str, kind: str, amount: int, *, plan=None, coins=None, bonus=0) -> ProductRec:
        with self.ctx.db.transaction() as session:
            made = catalog.create_product(session, creator=self.users[creator], title=f"{key} title", kind=kind,
                                          amount=amount, currency="cny", refund_window_days=30,
                                          plan={"interval": plan[0], "interval_count": plan[1]} if plan else None,
                                          coins=coins, bonus_coins=bonus, clock=self.clock)
            catalog.change_status(session, made, ProductStatus.PUBLISHED, clock=self.clock)
            rec = ProductRec(made.id, self.users[creator].id, kind, amount, made.title, plan, coins or 0, bonus)
        self.products[key] = rec
        return rec

    def advance(self, **delta) -> None:
        self.clock.advance(**delta)

    def view(self, buyer: str, key: str) -> None:
        record_product_view(self.ctx, product_id=self.products[key].id, user_id=self.users[buyer].id,
                            user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile")
        self.views.append((key, self.clock.now()))

    def order(self, buyer: str, *keys: str) -> OrderRec:
        with self.ctx.db.transaction() as session:
            made = orders.create_order(session, buyer=self.users[buyer],
                                       items=[orders.ItemRequest(self.products[k].id, 1) for k in keys],
                                       coupon=None, ttl_seconds=900, clock=self.clock)
            rec = OrderRec(made.id, self.users[buyer].id, [(self.products[k], 1) for k in keys], self.clock.now())
        self.orders.append(rec)
        return rec

    def attempt(self, order: OrderRec, channel: str, method: str | None = None) -> AttemptRec:
        made = payments.create_payment(self.ctx, buyer=self.users_by_id(order.buyer), order_id=order.id,
                                       ask=payments.PaymentAsk(channel=channel, method=method))
        rec = AttemptRec(made.id, channel, made.method, self.clock.now(), made.status)
        order.attempts.append(rec)
        if made.status == "succeeded":  # the wallet pays at once
            rec.succeeded_at = self.clock.now()
            self._paid(order, rec)
        return rec

    def users_by_id(self, user_id: str) -> User:
        return next(u for u in self.users.values() if u.id == user_id)

    def succeed(self, order: OrderRec, attempt: AttemptRec, *, after_seconds: int) -> None:
        self.advance(seconds=after_seconds)
        with self.ctx.db.transaction() as session:
            capture_payment(session, attempt.id, channel_trade_no=f"T{attempt.id[-10:]}", ctx=self.ctx)
        attempt.succeeded_at = self.clock.now()
        self._paid(order, attempt)

    def _paid(self, order: OrderRec, attempt: AttemptRec) -> None:
        attempt.status = "succeeded"
        order.status, order.paid_at, order.channel = "paid", self.clock.now(), attempt.channel
        buyer = order.buyer
        if attempt.channel == "wallet":
            self.wallet[buyer] -= order.total
        for product, _q in order.lines:
            if product.kind == "coin_pack":
                self.wallet[buyer] += product.coins + product.bonus
            if product.kind == "membership":
                now = self.clock.now()
                current = [m for m in self.memberships if m[0] == buyer and m[1] == product.id
                           and m[3] > now and m[6] not in self.revoked]
                start = max([now, *[m[3] for m in current]])
                end = self._add(start, product.plan)
                self.memberships.append((buyer, product.id, start, end, product.amount, product.plan, order.id))

    @staticmethod
    def _add(moment: datetime, plan: tuple[str, int]) -> datetime:
        interval, count = plan
        if interval == "month":
            month = moment.month - 1 + count
            year, month = moment.year + month // 12, month % 12 + 1
            return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))
        return moment + timedelta(days=365 * count if interval == "year" else count)

    def fail(self, order: OrderRec, attempt: AttemptRec, code: str, *, after_seconds: int = 20) -> None:
        self.advance(seconds=after_seconds)
        with self.ctx.db.transaction() as session:
            fail_payment(session, attempt.id, code=code, message=f"declined: {code}", ctx=self.ctx)
        attempt.status, attempt.failure_code = "failed", code

    def refund(self, order: OrderRec, amount: int | None, reason: str) -> None:
        paying = next(a for a in order.attempts if a.status == "succeeded")
        amount = amount if amount is not None else order.total - order.refunded
        request_refund(self.ctx, actor=self.users["admin"], payment_id=paying.id, amount=amount, reason=reason)
        order.refunded += amount
        order.refunds.append((amount, reason, self.clock.now()))
        order.status = "refunded" if order.refunded == order.total else "partially_refunded"
        if order.status == "refunded":
            for m in self.memberships:
                if m[6] == order.id:
                    self.revoked[order.id] = self.clock.now()

    def cancel(self, order: OrderRec) -> None:
        with self.ctx.db.transaction() as session:
            found = session.get(orders.Order, order.id)
            orders.cancel_order(session, found, clock=self.clock)
        order.status = "cancelled"

    def expire(self) -> None:
        self.advance(minutes=16)
        expire_due_orders(self.ctx)
        for order in self.orders:
            if order.status == "pending":
                order.status = "expired"
                for a in order.attempts:
                    if a.status == "requires_action":
                        a.status = "expired"

    def load(self) -> None:
        load_increment(self.ctx, blocking=True)


def make_history(app, ctx, clock: FixedClock, *, seed: int = 7, loads: bool = True) -> History:
    """About 60 days of sales by two creators and a coin-pack seller, with failures, expiries, refunds,
    renewals, a multi-creator order, coins spent, and page views; loaded into the store as it goes."""
    rng = random.Random(seed)
    h = History(app, ctx, clock)
    for name, role in (("admin", "admin"), ("alice", "creator"), ("bob", "creator"), ("carol", "creator")):
        h.user(name, role)
    buyers = [h.user(f"buyer{i}", "buyer") for i in range(8)]
    buyer_names = [f"buyer{i}" for i in range(8)]
    assert len(buyers) == 8
    h.product("course", "alice", "course", 9900)
    h.product("ebook", "alice", "ebook", 1990)
    h.product("club", "alice", "membership", 3000, plan=("month", 1))
    h.product("audio", "bob", "audio", 4500)
    h.product("circle", "bob", "membership", 36000, plan=("year", 1))
    h.product("call", "carol", "consulting", 20000)
    h.product("coins", "admin", "coin_pack", 10000, coins=10000, bonus=500)
    keys = ["course", "ebook", "club", "audio", "circle", "call"]
    for step in range(48):
        h.advance(hours=rng.randint(5, 23), minutes=rng.randint(0, 59))
        buyer = rng.choice(buyer_names)
        for _ in range(rng.randint(0, 3)):
            h.view(buyer, rng.choice(keys))
        roll = rng.random()
        if step == 10:
            wanted = ["ebook", "audio"]  # one order, two creators
        elif step in (5, 30):
            wanted = ["coins"]
            buyer = "buyer3"
        elif step in (12, 36):
            buyer = "buyer3"
            wanted = [rng.choice(keys)]
        else:
            wanted = [rng.choice(keys)]
        order = h.order(buyer, *wanted)
        if wanted == ["coins"]:
            h.succeed(order, h.attempt(order, "sandbox", "qr"), after_seconds=25)
            continue
        if step in (12, 36) and h.wallet[order.buyer] >= order.total:
            h.attempt(order, "wallet")
            continue
        if roll < 0.08:
            h.expire()  # abandoned before paying
            continue
        if roll < 0.12:
            h.cancel(order)
            continue
        channel, method = rng.choice([("sandbox", "qr"), ("alipay", "wap"), ("alipay", "qr")])
        first = h.attempt(order, channel, method)
        if roll < 0.25:
            h.fail(order, first, rng.choice(["card_declined", "insufficient_funds"]))
            if roll < 0.20:
                second = h.attempt(order, "sandbox", "qr")
                h.succeed(order, second, after_seconds=rng.randint(10, 400))
            else:
                h.expire()
        elif roll < 0.30:
            h.expire()  # an attempt left open
        else:
            h.succeed(order, first, after_seconds=rng.randint(5, 600))
        if order.paid_at and rng.random() < 0.15:
            h.advance(hours=rng.randint(1, 30))
            amount = None if rng.random() < 0.5 else order.total // 3
            h.refund(order, amount, rng.choice(["Changed my mind", "not as described", "  changed my mind "]))
        if loads and step % 16 == 0:
            h.load()
    # a renewal of the monthly club by one buyer, then a fully refunded membership
    renewer = "buyer0"
    for _ in range(2):
        h.advance(days=3)
        order = h.order(renewer, "club")
        h.succeed(order, h.attempt(order, "sandbox", "qr"), after_seconds=30)
    h.advance(days=1)
    order = h.order("buyer1", "club")
    h.succeed(order, h.attempt(order, "alipay", "wap"), after_seconds=45)
    record_checkout_view(ctx, order_id=order.id, user_id=h.users["buyer1"].id,
                         user_agent="Mozilla/5.0 (Windows NT 10.0; Win64; x64)")
    h.advance(hours=5)
    h.refund(order, None, "Not for me")
    h.advance(hours=1)
    return h


@dataclass
class World:
    app: object
    history: History

    @property
    def ctx(self):
        return self.app.extensions["knowpay"]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def world(request, tmp_path_factory):
    """One generated history per backend, shared by this module's tests (they only read it)."""
    from knowpay.config import load_settings
    from knowpay.db import Database
    from knowpay.web import create_app
    from tests.conftest import _truncate_all

    folder = tmp_path_factory.mktemp(f"analytics-{request.param}")
    if request.param == "sqlite":
        path = folder / "knowpay.sqlite3"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("pg_test_url")
    db = Database(url, pool_size=5)
    if request.param != "sqlite":
        _truncate_all(db)
    clock = FixedClock(START)
    settings = load_settings({"KNOWPAY_DATABASE_URL": url, "KNOWPAY_INSTANCE_PATH": str(folder)})
    fakes = Registry({"sandbox": FakeChannel(name="sandbox", fee_bps=FEES["sandbox"]),
                      "alipay": FakeChannel(name="alipay", fee_bps=FEES["alipay"])})
    app = create_app(settings, db=db, clock=clock, config={"TESTING": True, **FAST_PASSWORDS}, channels=fakes)
    history = make_history(app, app.extensions["knowpay"], clock)
    history.load()
    yield World(app, history)
    db.dispose()


@pytest.fixture
def analytics_app(world):
    return world.app


@pytest.fixture
def history(world) -> History:
    return world.history


# --- independent answers --------------------------------------------------------------------------


def bucket(moment: datetime, gran: str) -> str:
    day = local(moment).date()
    if gran == "week":
        day -= timedelta(days=day.weekday())
    elif gran == "month":
        day = day.replace(day=1)
    return day.isoformat()


def line_rows(h: History, *, creator: str | None = None):
    """(order, product, net, refunded share) for every paid line, optionally of one creator."""
    for order in h.orders:
        if order.paid_at is None:
            continue
        shares = allocate(order.refunded, order.nets())
        for (product, _q), net, refunded in zip(order.lines, order.nets(), shares, strict=True):
            if creator is None or product.creator == creator:
                yield order, product, net, refunded


def expected_gmv(h: History, gran: str, creator: str | None = None) -> dict[str, dict]:
    out: dict[str, dict] = defaultdict(lambda: {"gross": 0, "refunded": 0, "orders": set()})
    for order, _p, net, refunded in line_rows(h, creator=creator):
        row = out[bucket(order.paid_at, gran)]
        row["gross"] += net
        row["refunded"] += refunded
        row["orders"].add(order.id)
    return {k: {"gross": v["gross"], "refunded": v["refunded"], "net": v["gross"] - v["refunded"],
                "orders": len(v["orders"])} for k, v in out.items()}


def nonzero(rows: list[dict], keys: tuple[str, ...]) -> dict[str, dict]:
    return {r["period"]: {k: r[k] for k in keys} for r in rows if any(r[k] for k in keys)}


def span(h: History) -> tuple[str, str]:
    first = local(START).date()
    last = local(h.clock.now()).date()
    return first.isoformat(), last.isoformat()


def get(client, caller: Caller, metric: str, **params) -> list[dict]:
    response = client.get(f"/api/v1/analytics/{metric}", headers=caller.headers, query_string=params)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["data"]


def quantile(values: list[float], q: float) -> float:
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def within_accuracy(got: float, exact: float) -> bool:
    """Times to pay are read from 1 %-wide bins and rounded to 0.1 s (timing.py)."""
    return abs(got - exact) <= timing.ACCURACY * exact + timing.FLOOR_SECONDS + 0.05


# --- the tests ------------------------------------------------------------------------------------


def test_money_metrics_match_the_history_by_day_week_and_month(analytics_app, history):
    client, admin = analytics_app.test_client(), history.callers["admin"]
    start, end = span(history)
    for gran in ("day", "week", "month"):
        rows = get(client, admin, "gmv", **{"from": start, "to": end, "granularity": gran})
        assert nonzero(rows, ("gross", "refunded", "net", "orders")) == expected_gmv(history, gran)
        assert rows[0]["period"] <= start and rows[-1]["period"] <= end
    # net revenue: coin top-ups left out; channel fees and the creators' shares after refunds, as the ledger has them
    want: dict[str, dict] = defaultdict(lambda: dict.fromkeys(("gross", "refunded", "channel_fees", "creator_earnings"), 0))
    for order in history.orders:
        if order.paid_at is None:
            continue
        fee = fee_bps(order.total, FEES[order.channel])
        fee_left = fee - order.refunded * fee // order.total
        shares = allocate(fee_left, order.nets())
        refunded_lines = allocate(order.refunded, order.nets())
        for (product, _q), net, part, refunded in zip(order.lines, order.nets(), shares, refunded_lines, strict=True):
            if product.kind == "coin_pack":
                continue
            row = want[bucket(order.paid_at, "month")]
            share = net - fee_bps(net, PLATFORM_FEE_BPS)
            row["gross"] += net
            row["refunded"] += refunded
            row["channel_fees"] += part
            row["creator_earnings"] += share - order.refunded * share // order.total
    rows = get(client, admin, "net_revenue", **{"from": start, "to": end, "granularity": "month"})
    got = nonzero(rows, ("gross", "refunded", "channel_fees", "creator_earnings"))
    assert got == dict(want)
    for row in rows:
        assert row["net"] == row["gross"] - row["refunded"] - row["channel_fees"]
        assert row["platform_fees"] == row["gross"] - row["refunded"] - row["creator_earnings"]
    # coins: issued with their bonus, spent through the wallet
    rows = get(client, admin, "coins", **{"from": start, "to": end, "granularity": "month"})
    issued = sum(p.coins + p.bonus for o, p, _n, _r in line_rows(history) if p.kind == "coin_pack")
    spent = sum(net for o, _p, net, _r in line_rows(history) if o.channel == "wallet")
    assert (sum(r["issued"] for r in rows), sum(r["spent"] for r in rows)) == (issued, spent)
    assert issued > 0 and spent > 0
    # ARPU and repeat buyers by month
    rows = get(client, admin, "arpu", **{"from": start, "to": end, "granularity": "month"})
    revenue: dict[str, int] = defaultdict(int)
    payers: dict[str, set] = defaultdict(set)
    for order, _p, net, refunded in line_rows(history):
        revenue[bucket(order.paid_at, "month")] += net - refunded
        payers[bucket(order.paid_at, "month")].add(order.buyer)
    for row in rows:
        n = len(payers.get(row["period"], ()))
        assert (row["revenue"], row["buyers"]) == (revenue.get(row["period"], 0), n)
        assert row["arpu"] == (round(revenue[row["period"]] / n) if n else 0)
    rows = get(client, admin, "repeat_purchase", **{"from": start, "to": end, "granularity": "month"})
    paid_times: dict[str, list[datetime]] = defaultdict(list)
    for order in history.orders:
        if order.paid_at:
            paid_times[order.buyer].append(local(order.paid_at))
    for row in rows:
        month = date.fromisoformat(row["period"])
        after = datetime(month.year + month.month // 12, month.month % 12 + 1, 1)
        active = payers.get(row["period"], set())
        repeat = {b for b in active if len([t for t in paid_times[b] if t < after]) >= 2}
        assert (row["buyers"], row["repeat_buyers"]) == (len(active), len(repeat))


def test_payment_and_funnel_metrics_match_the_history(analytics_app, history):
    client, admin = analytics_app.test_client(), history.callers["admin"]
    start, end = span(history)
    attempts = [(o, a) for o in history.orders for a in o.attempts]
    rows = get(client, admin, "success_rate", **{"from": start, "to": end, "group_by": "channel"})
    want: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])
    for _o, a in attempts:
        cell = want[(bucket(a.created_at, "day"), a.channel)]
        cell[0] += 1
        cell[1] += a.status == "succeeded"
        cell[2] += a.status == "failed"
    got = {(r["period"], r["channel"]): [r["attempts"], r["succeeded"], r["failed"]] for r in rows if r["attempts"]}
    assert got == dict(want)
    assert all(r["rate"] == round(r["succeeded"] / r["attempts"], 4) for r in rows if r["attempts"])
    # time to pay per channel over the whole range
    rows = get(client, admin, "time_to_pay", **{"from": start, "to": end, "granularity": "month",
                                                 "group_by": "channel"})
    seconds: dict[tuple, list[float]] = defaultdict(list)
    for _o, a in attempts:
        if a.status == "succeeded":
            seconds[(bucket(a.created_at, "month"), a.channel)].append((a.succeeded_at - a.created_at).total_seconds())
    for row in rows:
        values = seconds.get((row["period"], row["channel"]), [])
        assert row["payments"] == len(values)
        if values:
            assert within_accuracy(row["p50_seconds"], quantile(values, 0.5))
            assert within_accuracy(row["p90_seconds"], quantile(values, 0.9))
    # failure reasons
    rows = get(client, admin, "failure_reasons", **{"from": start, "to": end})
    codes: dict[tuple, int] = defaultdict(int)
    for _o, a in attempts:
        if a.status == "failed":
            codes[(a.channel, a.method, a.failure_code)] += 1
    assert {(r["channel"], r["method"], r["failure_code"]): r["failures"] for r in rows} == dict(codes)
    assert sum(r["share"] for r in rows) == pytest.approx(1.0, abs=1e-3)
    # funnel by order day
    rows = get(client, admin, "funnel", **{"from": start, "to": end, "granularity": "week"})
    want_f: dict[str, dict] = defaultdict(lambda: dict.fromkeys(("views", "orders", "attempted", "paid", "abandoned"), 0))
    for _key, at in history.views:
        want_f[bucket(at, "week")]["views"] += 1
    for order in history.orders:
        row = want_f[bucket(order.created_at, "week")]
        row["orders"] += 1
        row["attempted"] += bool(order.attempts)
        row["paid"] += order.paid_at is not None
        row["abandoned"] += order.status in ("expired", "cancelled")
    assert nonzero(rows, ("views", "orders", "attempted", "paid", "abandoned")) == dict(want_f)
    for row in rows:
        if row["orders"]:
            assert row["abandonment_rate"] == round(row["abandoned"] / row["orders"], 4)
    # heatmap of paid orders by local weekday and hour
    rows = get(client, admin, "heatmap", **{"from": start, "to": end})
    cells: dict[tuple, int] = defaultdict(int)
    for order in history.orders:
        if order.paid_at:
            at = local(order.paid_at)
            cells[(at.isoweekday(), at.hour)] += 1
    assert len(rows) == 7 * 24
    assert {(r["weekday"], r["hour"]): r["orders"] for r in rows if r["orders"]} == dict(cells)


def test_refund_cohort_ranking_and_membership_metrics_match_the_history(analytics_app, history):
    client, admin = analytics_app.test_client(), history.callers["admin"]
    start, end = span(history)
    rows = get(client, admin, "refunds", **{"from": start, "to": end, "granularity": "month"})
    want: dict[str, dict] = defaultdict(lambda: {"paid_orders": 0, "refunded_orders": 0, "refunded": 0})
    for order in history.orders:
        if order.paid_at:
            row = want[bucket(order.paid_at, "month")]
            row["paid_orders"] += 1
            row["refunded_orders"] += order.refunded > 0
            row["refunded"] += order.refunded
    assert nonzero(rows, ("paid_orders", "refunded_orders", "refunded")) == dict(want)
    rows = get(client, admin, "refund_reasons", **{"from": start, "to": end})
    reasons: dict[str, int] = defaultdict(int)
    for order in history.orders:
        for _amount, reason, _at in order.refunds:
            reasons[reason.strip().lower()] += 1
    assert {r["reason"]: r["refunds"] for r in rows} == dict(reasons)
    # cohorts by first-purchase month
    rows = get(client, admin, "cohorts", **{"from": start, "to": end, "granularity": "month"})
    months: dict[str, set] = defaultdict(set)
    for order in history.orders:
        if order.paid_at:
            months[order.buyer].add(bucket(order.paid_at, "month"))
    for row in rows:
        cohort = {b for b, ms in months.items() if min(ms) == row["period"]}
        assert row["buyers"] == len(cohort)
        first = date.fromisoformat(row["period"])
        for k, retained in enumerate(row["retained"]):
            month = date(first.year + (first.month - 1 + k) // 12, (first.month - 1 + k) % 12 + 1, 1).isoformat()
            assert retained == sum(1 for b in cohort if month in months[b])
    # top products and creators by net sales
    rows = get(client, admin, "top_products", **{"from": start, "to": end, "limit": 3})
    net: dict[str, int] = defaultdict(int)
    for _o, product, n, refunded in line_rows(history):
        net[product.id] += n - refunded
    assert [r["net"] for r in rows] == sorted(net.values(), reverse=True)[:3]
    assert all(net[r["product_id"]] == r["net"] for r in rows)
    rows = get(client, admin, "top_creators", **{"from": start, "to": end})
    by_creator: dict[str, int] = defaultdict(int)
    for _o, product, n, refunded in line_rows(history):
        by_creator[product.creator] += n - refunded
    assert {r["creator_id"]: r["net"] for r in rows} == dict(by_creator)
    # memberships: MRR and members at each month's end (or now), new and churned members
    rows = get(client, admin, "mrr", **{"from": start, "to": end, "granularity": "month"})
    now = history.clock.now()
    spans = []  # (buyer, product, start, stop, monthly value)
    for buyer, product_id, begin, stop, amount, plan, order_id in history.memberships:
        stop = min(stop, history.revoked.get(order_id, stop))
        if stop > begin:
            spans.append((buyer, product_id, begin, stop, amount / (12 if plan[0] == "year" else 1) / plan[1]))
    assert spans
    for row in rows:
        month = date.fromisoformat(row["period"])
        nxt = date(month.year + month.month // 12, month.month % 12 + 1, 1)
        hi = datetime(nxt.year, nxt.month, 1, tzinfo=TZ).astimezone(UTC).replace(tzinfo=None)
        at = min(hi, now)
        active = [s for s in spans if s[2] <= at < s[3]]
        assert row["mrr"] == math.floor(sum(s[4] for s in active) + 0.5)
        assert row["members"] == len({(s[0], s[1]) for s in active})
    total_new = sum(r["new_members"] for r in rows)
    # consecutive renewals are one membership: new members count chains, not purchases
    chains = set()
    for buyer, product_id, begin, stop, _v in sorted(spans, key=lambda s: s[2]):
        if not any(c[0] == buyer and c[1] == product_id and c[3] == begin for c in chains):
            chains.add((buyer, product_id, begin, stop))
        else:
            old = next(c for c in chains if c[0] == buyer and c[1] == product_id and c[3] == begin)
            chains.discard(old)
            chains.add((buyer, product_id, old[2], stop))
    assert total_new == len(chains)
    assert sum(r["churned_members"] for r in rows) == sum(1 for c in chains if c[3] <= now)


def test_csv_carries_the_same_rows(analytics_app, history):
    client, admin = analytics_app.test_client(), history.callers["admin"]
    start, end = span(history)
    rows = get(client, admin, "gmv", **{"from": start, "to": end, "granularity": "week"})
    response = client.get("/api/v1/analytics/gmv", headers=admin.headers,
                          query_string={"from": start, "to": end, "granularity": "week", "format": "csv"})
    assert response.status_code == 200 and response.mimetype == "text/csv"
    lines = response.get_data(as_text=True).strip().splitlines()
    assert lines[0] == "period,gross,refunded,net,orders"
    assert lines[1:] == [f"{r['period']},{r['gross']},{r['refunded']},{r['net']},{r['orders']}" for r in rows]
    cohort_csv = client.get("/api/v1/analytics/cohorts", headers=admin.headers,
                            query_string={"from": start, "to": end, "granularity": "month", "format": "csv"})
    assert cohort_csv.get_data(as_text=True).splitlines()[0].startswith("period,buyers,retained_0,retained_1")


# --- scope: a creator sees only their own products -------------------------------------------------

SERIES = ("gmv", "net_revenue", "arpu", "repeat_purchase", "coins", "success_rate", "time_to_pay", "funnel",
          "refunds", "mrr")
RANKINGS = ("top_products", "top_creators", "heatmap", "failure_reasons", "refund_reasons", "cohorts")


def test_a_creator_sees_their_own_figures_and_never_another_creators(analytics_app, history):
    client = analytics_app.test_client()
    admin, alice, bob = (history.callers[n] for n in ("admin", "alice", "bob"))
    start, end = span(history)
    window = {"from": start, "to": end}
    for gran in ("day", "month"):
        rows = get(client, alice, "gmv", **window, granularity=gran)
        assert nonzero(rows, ("gross", "refunded", "net", "orders")) == expected_gmv(history, gran, creator=alice.id)
    # the order holding alice's ebook and bob's audio counts only the ebook for alice
    shared = next(o for o in history.orders if {p.creator for p, _ in o.lines} == {alice.id, bob.id})
    assert shared.paid_at is not None
    for metric in SERIES + RANKINGS:
        params = {**window, "granularity": "month"}
        mine = client.get(f"/api/v1/analytics/{metric}", headers=alice.headers, query_string=params).get_json()
        as_admin = client.get(f"/api/v1/analytics/{metric}", headers=admin.headers,
                              query_string={**params, "creator_id": alice.id}).get_json()
        platform = client.get(f"/api/v1/analytics/{metric}", headers=admin.headers, query_string=params).get_json()
        assert mine["scope"] == "creator" and mine["creator_id"] == alice.id, metric
        assert mine["data"] == as_admin["data"], metric  # asking for the platform gives only her own
        text = str(mine["data"])
        assert bob.id not in text and history.products["audio"].id not in text, metric
        if metric in ("gmv", "net_revenue", "top_creators"):
            assert mine["data"] != platform["data"], metric
    # asking for another creator by id is a 404, not their numbers
    answer = client.get("/api/v1/analytics/gmv", headers=alice.headers, query_string={**window, "creator_id": bob.id})
    assert answer.status_code == 404 and answer.get_json()["error"]["param"] == "creator_id"
    # buyers see no analytics at all
    buyer = history.callers["buyer0"]
    answer = client.get("/api/v1/analytics/gmv", headers=buyer.headers, query_string=window)
    assert answer.status_code == 403


# --- the store: replay, rebuild, Parquet, report --------------------------------------------------


def copy_store(world: World, folder) -> Store:
    source_store = store_for(world.ctx.settings)
    target = folder / "analytics.duckdb"
    shutil.copyfile(source_store.path, target)
    return Store(target)


def all_rows(store: Store) -> dict[str, list[tuple]]:
    """Every fact table and every summary."""
    return {table: table_rows(store, table) for table in (*TABLES, *DERIVED, *KEYED)}


def test_replaying_every_event_adds_nothing(world, tmp_path):
    store = copy_store(world, tmp_path)
    before = all_rows(store)
    assert len(before["events"]) > 100 and before["sales"] and before["views"]
    with store.exclusive(), store.writer() as con:
        set_meta(con, "watermark", (START - timedelta(days=1)).isoformat())
    replayed = load_increment(world.ctx, store, blocking=True)
    assert replayed.events == 0 and not replayed.rebuilt
    assert all_rows(store) == before
    # and the same facts written twice change nothing either
    columns = [c for c, _ in TABLES["events"]]
    events = [dict(zip(columns, row, strict=True)) for row in table_rows(store, "events")]
    with store.exclusive(), store.writer() as con:
        assert write_facts(con, Facts(events=events))["events"] == 0
    assert all_rows(store) == before


def test_a_rebuild_equals_the_incremental_result(world, tmp_path):
    rebuilt = Store(tmp_path / "rebuilt.duckdb")
    seen: list[tuple[int, int]] = []
    result = rebuild(world.ctx, rebuilt, progress=lambda done, total: seen.append((done, total)))
    assert result.rebuilt and seen[0][0] == 0 and seen[-1][0] == seen[-1][1] > 0
    incremental = store_for(world.ctx.settings)
    load_increment(world.ctx, incremental, blocking=True)
    assert all_rows(rebuilt) == all_rows(incremental)


def test_daily_parquet_partitions_are_read_back_unchanged(world, tmp_path):
    import pyarrow.dataset as ds

    store = copy_store(world, tmp_path)
    out = tmp_path / "parquet"
    today = local(world.ctx.clock.now()).date()
    written = export_parquet(world.ctx, store, out_dir=out)  # the days the loads touched, before today
    assert written and all(p.name == "part-0.parquet" and p.parent.name.startswith("day=") for p in written)
    assert f"day={today}" not in {p.parent.name for p in written}
    with store.reader() as con:
        assert con.execute("SELECT count(*) FROM dirty_days WHERE day < ?", [today]).fetchall()[0][0] == 0
    export_parquet(world.ctx, store, out_dir=out, start=today, end=today)  # and today, asked for
    for table in ("sales", "payments", "orders", "refunds", "views", "events"):
        arrow = ds.dataset(out / table, format="parquet", partitioning="hive").to_table()
        assert arrow.num_rows == len(table_rows(store, table)), table
        for column in arrow.schema:
            assert not str(column.type).startswith("uint"), (table, column)  # Spark has no unsigned types
    with duckdb.connect() as con:
        total = con.execute(f"SELECT sum(net) FROM read_parquet('{out}/sales/*/*.parquet', hive_partitioning = true) "
                            "WHERE paid_at IS NOT NULL").fetchall()[0][0]
    assert total == sum(net for _o, _p, net, _r in line_rows(world.history))


def test_the_report_summarises_and_draws_its_charts_offline(world, tmp_path):
    start, end = span(world.history)
    data = gather(world.ctx, start=date.fromisoformat(start), end=date.fromisoformat(end))
    gross = sum(v["gross"] for v in expected_gmv(world.history, "day").values())
    text = terminal_summary(data)
    assert f"{gross / 100:,.2f} CNY" in text and "success rate" in text
    page = html_report(data)
    assert "echarts.init" in page and page.count("<script") == 3
    assert "<script src" not in page and "<link" not in page  # one self-contained file
    assert ECHARTS.read_text(encoding="utf-8")[:2000] in page


def test_the_commands_rebuild_with_a_progress_bar_and_write_a_report(world, tmp_path):
    env = {"KNOWPAY_DATABASE_URL": world.ctx.settings.database_url, "KNOWPAY_INSTANCE_PATH": str(tmp_path)}
    runner = CliRunner()
    rebuilt = runner.invoke(main, ["analytics", "rebuild"], env=env, catch_exceptions=False)
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "rebuilding analytics" in rebuilt.stderr and "rebuilt" in rebuilt.stdout
    start, end = span(world.history)
    page = tmp_path / "report.html"
    report = runner.invoke(main, ["analytics", "report", "--from", start, "--to", end, "--html", str(page)],
                           env=env, catch_exceptions=False)
    assert report.exit_code == 0, report.output
    assert "GMV" in report.stdout and page.read_text(encoding="utf-8").startswith("<!doctype html>")
    bad = runner.invoke(main, ["analytics", "report", "--from", end, "--to", start], env=env)
    assert bad.exit_code != 0
    exported = runner.invoke(main, ["analytics", "export-parquet", "--out", str(tmp_path / "pq")], env=env)
    assert exported.exit_code == 0 and "partitions written" in exported.stdout


def test_the_summaries_answer_exactly_what_the_facts_answer(world):
    start, end = (date.fromisoformat(d) for d in span(world.history))
    store = store_for(world.ctx.settings)
    now = world.ctx.clock.now()
    asked = 0
    # The whole history (from a month's first day), and a range that starts and ends inside months.
    ranges = ((start, end), (start + timedelta(days=9), end - timedelta(days=2)))
    with store.reader() as con:
        for spec in METRICS.values():
            for gran in spec.granularities:
                for group in (None, *spec.groups):
                    for channel, kind in ((None, None), ("alipay", "course")):
                        if (channel and "channel" not in spec.filters) or (kind and "kind" not in spec.filters):
                            continue
                        for lo, hi in ranges:
                            q = Query(metric=spec.name, start=lo, end=hi, granularity=gran, group_by=group,
                                      channel=channel, kind=kind, now=now)
                            summary = compute(con, q)
                            facts = compute(con, replace(q, rollups=False))
                            assert summary == facts, (spec.name, gran, group, channel, kind, lo, hi)
                            asked += 1
    assert asked > 120
