"""A realistic, labelled payment history for the demo, training and the tests (`knowpay risk simulate`).

Four kinds of actor over the last `days` days:
- normal buyers: aged accounts, their own device and home IP, a few purchases at waking hours,
  the odd decline and the odd refund;
- card testers: fresh accounts behind one data-centre IP and device, bursts of small Stripe payments
  with a new card each time, most declined;
- refund abusers: buy several courses and ask for most of them back;
- account farms: many fresh accounts on one device and IP, each redeeming the same new-user coupon.
Payments go through the real capture, failure and refund code (ledger, access, events), dated by a
clock that walks through the history; every payment gets the decision a permissive risk engine would
have stored (its inputs); every payment of a bad actor is labelled fraud (source "simulation").
The same seed writes the same history (ids aside).
"""

from __future__ import annotations

import dataclasses
import random
import secrets
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select

from knowpay.accounts.models import User
from knowpay.accounts.service import ensure_roles
from knowpay.catalog.models import Product
from knowpay.context import Context
from knowpay.domain.clock import FixedClock
from knowpay.domain.ids import new_id
from knowpay.orders.models import Coupon, Order, OrderItem
from knowpay.payments.capture import capture_payment, fail_payment
from knowpay.payments.models import Payment
from knowpay.refunds.models import Refund
from knowpay.refunds.processing import complete_refund
from knowpay.risk.models import RiskDecision, RiskLabel
from knowpay.risk.subject import Subject

FARM_COUPON = "NEWUSER50"
SPRING_COUPON = "SPRING20"
BATCH = 250
# (kind, title, price in fen, extra)
CATALOG = (
    ("course", "Python 数据分析实战课", 19900, {}),
    ("course", "产品经理进阶课", 29900, {}),
    ("course", "Excel 高效办公", 9900, {}),
    ("ebook", "《极简理财》电子书", 2990, {}),
    ("ebook", "《写作的法则》", 1990, {}),
    ("audio", "每日英语听力", 990, {}),
    ("video", "摄影入门视频课", 4900, {}),
    ("membership", "知识星球 月度会员", 3000, {"plan": {"interval": "month", "interval_count": 1}}),
    ("consulting", "1 对 1 咨询", 50000, {"refund_window_days": 1}),
    ("coin_pack", "100 知识币", 10000, {"coins": 10000}),
)
CHEAP = ("每日英语听力", "《写作的法则》", "《极简理财》电子书")
DOMAINS = ("qq.com", "163.com", "126.com", "gmail.com", "outlook.com", "foxmail.com")
BURNER_DOMAINS = ("mailinator.com", "10minutemail.net", "tempmail.dev")
ISP_PREFIXES = (36, 58, 59, 101, 111, 112, 113, 114, 115, 116, 117, 120, 121, 122, 123, 180, 183, 223)
DATACENTRE_PREFIXES = (45, 103, 104, 139, 149, 154, 172, 185, 193)


@dataclass(frozen=True)
class Purchase:
    at: datetime
    actor: str
    user: str
    products: tuple[str, ...]
    channel: str
    method: str | None
    outcome: str  # succeeded | failed
    ip: str
    device: str | None
    instruments: dict = field(default_factory=dict)
    coupon: str | None = None
    refund_after: timedelta | None = None


@dataclass
class Summary:
    users: Counter = field(default_factory=Counter)
    payments: Counter = field(default_factory=Counter)
    succeeded: int = 0
    failed: int = 0
    refunds: int = 0
    fraud_labels: int = 0
    start: datetime | None = None
    end: datetime | None = None


@dataclass
class _Person:
    id: str
    email: str
    created_at: datetime
    actor: str


class _History:
    def __init__(self, rng: random.Random, start: datetime, end: datetime) -> None:
        self.rng = rng
        self.start, self.end = start, end
        self.people: list[_Person] = []
        self.purchases: list[Purchase] = []
        self.run = secrets.token_hex(3)
        self._n = 0

    # -- building blocks --------------------------------------------------------------------------------
    def _person(self, actor: str, created_at: datetime, domain: str) -> _Person:
        self._n += 1
        person = _Person(new_id("usr"), f"{actor}.{self.run}.{self._n}@{domain}", created_at, actor)
        self.people.append(person)
        return person

    def _ip(self, prefixes: tuple[int, ...]) -> str:
        r = self.rng
        return f"{r.choice(prefixes)}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"

    def _device(self) -> str:
        return "dev-" + "".join(self.rng.choice("0123456789abcdef") for _ in range(16))

    def _slot(self, index: int, of: int) -> datetime:
        """A random moment in the index-th of `of` equal slices of the history: bad actors come and go all
        along, so every stretch of time has some."""
        span = (self.end - self.start).total_seconds() / of
        return self.start + timedelta(seconds=span * (index + self.rng.uniform(0.05, 0.9)))

    def _moment(self, *, waking: bool = True, after: datetime | None = None) -> datetime:
        """A random moment of the history; waking: 08:00–23:00 in China (UTC+8)."""
        r = self.rng
        first = max(after or self.start, self.start)
        span = (self.end - first).total_seconds()
        moment = first + timedelta(seconds=r.uniform(0, max(span, 1)))
        if waking:
            hour_utc = (r.randint(8, 22) - 8) % 24
            moment = moment.replace(hour=hour_utc, minute=r.randint(0, 59), second=r.randint(0, 59))
            if moment >= self.end or moment < first:
                moment = first + timedelta(seconds=r.uniform(0, max(span, 1)))
        return moment

    # -- actors --------------------------------------------------------------------------------------------
    def normal_buyer(self) -> None:
        r = self.rng
        created = self.start - timedelta(days=r.uniform(1, 400)) if r.random() < 0.85 else self._moment()
        person = self._person("buyer", created, r.choice(DOMAINS))
        ip, device = self._ip(ISP_PREFIXES), self._device() if r.random() < 0.8 else None
        channel = r.choices(("alipay", "wechat", "stripe"), (0.5, 0.4, 0.1))[0]
        card = f"card_{r.getrandbits(48):012x}"
        for _ in range(r.choices((1, 2, 3, 4, 6, 8), (0.3, 0.25, 0.2, 0.12, 0.08, 0.05))[0]):
            title = r.choice([c[1] for c in CATALOG if c[0] != "consulting"])
            if r.random() < 0.03:
                title = "1 对 1 咨询"
            outcome = "failed" if r.random() < 0.04 else "succeeded"
            refund = timedelta(days=r.uniform(0.1, 5)) if outcome == "succeeded" and r.random() < 0.05 else None
            self.purchases.append(Purchase(
                self._moment(after=created), "normal", person.id, (title,), channel,
                "qr" if channel == "alipay" else ("native" if channel == "wechat" else None), outcome,
                ip if r.random() < 0.9 else self._ip(ISP_PREFIXES), device,
                {"card_fingerprint": card} if channel == "stripe" else {},
                SPRING_COUPON if r.random() < 0.1 else None, refund))

    def card_tester(self, index: int, of: int) -> None:
        r = self.rng
        start = self._slot(index, of)
        ip, device = self._ip(DATACENTRE_PREFIXES), self._device()
        for _ in range(r.randint(1, 3)):
            person = self._person("tester", start - timedelta(minutes=r.uniform(5, 120)), r.choice(BURNER_DOMAINS))
            at = start
            for _ in range(r.randint(6, 25)):
                at += timedelta(seconds=r.uniform(5, 90))
                if at >= self.end:
                    break
                self.purchases.append(Purchase(
                    at, "tester", person.id, (r.choice(CHEAP),), "stripe", None,
                    "succeeded" if r.random() < 0.15 else "failed", ip, device,
                    {"card_fingerprint": f"card_{r.getrandbits(48):012x}"}))
            start = at + timedelta(minutes=r.uniform(1, 30))
            if start >= self.end:
                break

    def refund_abuser(self) -> None:
        r = self.rng
        created = self.start - timedelta(days=r.uniform(1, 120))
        person = self._person("abuser", created, r.choice(DOMAINS))
        ip, device = self._ip(ISP_PREFIXES), self._device()
        channel = r.choice(("alipay", "wechat"))
        for _ in range(r.randint(3, 8)):
            title = r.choice([c[1] for c in CATALOG if c[0] in ("course", "video", "ebook")])
            refund = timedelta(hours=r.uniform(2, 96)) if r.random() < 0.8 else None
            self.purchases.append(Purchase(
                self._moment(), "abuser", person.id, (title,), channel, "qr" if channel == "alipay" else "native",
                "succeeded", ip, device, {}, None, refund))

    def account_farm(self, index: int, of: int) -> None:
        r = self.rng
        ip, device = self._ip(ISP_PREFIXES), self._device()
        at = self._slot(index, of)
        for _ in range(r.randint(5, 12)):
            person = self._person("farm", at - timedelta(minutes=r.uniform(1, 30)), r.choice(DOMAINS))
            at += timedelta(minutes=r.uniform(2, 40))
            if at >= self.end:
                break
            self.purchases.append(Purchase(
                at, "farm", person.id, (r.choice(("Python 数据分析实战课", "产品经理进阶课")),), "wechat", "native",
                "succeeded", ip, device, {}, FARM_COUPON))


def build_history(*, buyers: int, days: int, seed: int, end: datetime) -> _History:
    """The actors and their purchases, from the seed alone (nothing written yet)."""
    rng = random.Random(seed)
    history = _History(rng, end - timedelta(days=days), end)
    # Attacks come every few days whatever the size of the platform; abusers grow with the buyers.
    testers = max(3, buyers * 3 // 100, days // 4)
    abusers = max(2, buyers * 3 // 100)
    farms = max(2, buyers // 60, days // 10)
    for _ in range(buyers):
        history.normal_buyer()
    for index in range(testers):
        history.card_tester(index, testers)
    for _ in range(abusers):
        history.refund_abuser()
    for index in range(farms):
        history.account_farm(index, farms)
    history.purchases.sort(key=lambda p: (p.at, p.user))
    # One moment per purchase: replay and training order by time, so ties must not depend on ids.
    spread, last = [], None
    for purchase in history.purchases:
        at = purchase.at if last is None or purchase.at > last else last + timedelta(microseconds=1)
        spread.append(dataclasses.replace(purchase, at=at))
        last = at
    history.purchases = spread
    return history


def _at(ctx: Context, moment: datetime) -> Context:
    return dataclasses.replace(ctx, clock=FixedClock(moment))


def simulate(ctx: Context, *, buyers: int = 1000, days: int = 60, seed: int = 7,
             end: datetime | None = None) -> Summary:
    """Write the history ending at `end` (default now) into the database."""
    end = end or ctx.clock.now()
    history = build_history(buyers=buyers, days=days, seed=seed, end=end)
    summary = Summary(start=history.start, end=end)
    people = {p.id: p for p in history.people}
    with ctx.db.transaction() as session:
        roles = ensure_roles(session)
        creator = User(id=new_id("usr"), email=f"creator.{history.run}@sim.knowpay.test",
                       username=f"sim_creator_{history.run}", active=True, fs_uniquifier=uuid.uuid4().hex,
                       created_at=history.start - timedelta(days=400), create_datetime=history.start,
                       update_datetime=history.start)
        creator.roles = [roles["creator"]]
        session.add(creator)
        session.flush()
        products = {}
        for kind, title, amount, extra in CATALOG:
            product = Product(creator_id=creator.id, title=title, description="", kind=kind, amount=amount,
                              currency=ctx.settings.currency, status="published",
                              refund_window_days=extra.get("refund_window_days", 7), plan=extra.get("plan"),
                              coins=extra.get("coins"), bonus_coins=0, created_at=history.start - timedelta(days=300),
                              updated_at=history.start)
            session.add(product)
            products[title] = product
        for code, bps in ((FARM_COUPON, 5000), (SPRING_COUPON, 2000)):
            if session.scalar(select(Coupon.id).where(Coupon.code == code)) is None:
                session.add(Coupon(code=code, percent_off_bps=bps, active=True, times_redeemed=0,
                                   created_at=history.start - timedelta(days=60)))
        for person in history.people:
            user = User(id=person.id, email=person.email, username=person.email.split("@")[0][:60], active=True,
                        fs_uniquifier=uuid.uuid4().hex, created_at=person.created_at,
                        create_datetime=person.created_at, update_datetime=person.created_at)
            user.roles = [roles["buyer"]]
            session.add(user)
            summary.users[person.actor] += 1
        session.flush()
        catalog = {title: (p.id, p.kind, p.amount) for title, p in products.items()}
    outcomes: list[tuple[datetime, str, str]] = []
    refunds: list[tuple[datetime, str]] = []
    for start in range(0, len(history.purchases), BATCH):
        with ctx.db.transaction() as session:
            for purchase in history.purchases[start:start + BATCH]:
                payment_id = _write_purchase(session, ctx, purchase, people[purchase.user], catalog, creator.id)
                summary.payments[purchase.actor] += 1
                outcomes.append((purchase.at + timedelta(seconds=40), payment_id, purchase.outcome))
                if purchase.refund_after is not None:
                    refunds.append((purchase.at + purchase.refund_after, payment_id))
                if purchase.actor != "normal":
                    session.add(RiskLabel(payment_id=payment_id, label="fraud", source="simulation",
                                          note=purchase.actor, created_at=end))
                    summary.fraud_labels += 1
    for start in range(0, len(outcomes), BATCH):
        with ctx.db.transaction() as session:
            for at, payment_id, outcome in outcomes[start:start + BATCH]:
                moment = _at(ctx, min(at, end))
                if outcome == "succeeded":
                    capture_payment(session, payment_id, channel_trade_no=f"SIM{payment_id[-12:]}", ctx=moment)
                    summary.succeeded += 1
                else:
                    fail_payment(session, payment_id, code="card_declined", message="declined (simulated)",
                                 ctx=moment)
                    summary.failed += 1
    for start in range(0, len(refunds), BATCH):
        with ctx.db.transaction() as session:
            for at, payment_id in sorted(refunds)[start:start + BATCH]:
                if at >= end:
                    continue
                payment = session.get(Payment, payment_id)
                if payment.status != "succeeded":
                    continue
                refund = Refund(payment_id=payment.id, order_id=payment.order_id, amount=payment.amount,
                                currency=payment.currency, status="pending", kind="requested",
                                reason="simulated refund", requested_by=payment.buyer_id, created_at=at, version=1)
                session.add(refund)
                session.flush()
                complete_refund(session, refund.id, channel_refund_no=f"SIMR{refund.id[-12:]}", ctx=_at(ctx, at))
                summary.refunds += 1
    return summary


def _write_purchase(session, ctx: Context, purchase: Purchase, person: _Person,  # type: ignore[no-untyped-def]
                    catalog: dict, creator_id: str) -> str:
    items = [catalog[title] for title in purchase.products]
    subtotal = sum(amount for _, _, amount in items)
    discount = subtotal * {FARM_COUPON: 5000, SPRING_COUPON: 2000}.get(purchase.coupon or "", 0) // 10000
    order = Order(buyer_id=person.id, status="pending", currency=ctx.settings.currency, amount_subtotal=subtotal,
                  amount_discount=discount, amount_total=subtotal - discount, amount_refunded=0,
                  coupon_code=purchase.coupon, expires_at=purchase.at + timedelta(minutes=15),
                  created_at=purchase.at - timedelta(seconds=20), version=1)
    session.add(order)
    session.flush()
    left = discount
    for position, (title, (product_id, kind, amount)) in enumerate(zip(purchase.products, items, strict=True)):
        share = left if position == len(items) - 1 else amount * discount // subtotal
        left -= share
        session.add(OrderItem(order_id=order.id, position=position, product_id=product_id, creator_id=creator_id,
                              title=title, kind=kind, amount=amount, quantity=1, amount_discount=share))
    payment = Payment(order_id=order.id, buyer_id=person.id, channel=purchase.channel, method=purchase.method,
                      status="requires_action", amount=order.amount_total, currency=order.currency,
                      device_id=purchase.device, client_ip=purchase.ip, channel_extra=dict(purchase.instruments),
                      amount_refunded=0, version=1, query_attempts=0, created_at=purchase.at,
                      updated_at=purchase.at, next_query_at=None)
    session.add(payment)
    session.flush()
    topup = any(kind == "coin_pack" for _, kind, _ in items)
    subject = Subject(kind="topup" if topup else "payment", user_id=person.id, email=person.email,
                      account_created_at=person.created_at, amount=payment.amount, currency=payment.currency,
                      channel=payment.channel, method=payment.method, ip=purchase.ip, device_id=purchase.device,
                      instruments=dict(purchase.instruments), coupon_code=purchase.coupon, quantity=len(items),
                      order_id=order.id, payment_id=payment.id)
    session.add(RiskDecision(
        subject=subject.kind, user_id=person.id, order_id=order.id, payment_id=payment.id, amount=payment.amount,
        currency=payment.currency, outcome="allow", shadow_outcome="allow",
        inputs={"subject": subject.to_json(), "signals": {}, "counters": "simulation", "notes": ["simulated"]},
        features={}, fired=[], score=None, model_version=None, shadow_scores=[], faults=[],
        created_at=purchase.at))
    return payment.id
