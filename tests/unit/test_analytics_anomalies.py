"""The anomaly detectors on a synthetic store: they fire on an injected change and stay quiet on noise."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import duckdb
import pytest

from knowpay.analytics.anomalies import detect
from knowpay.analytics.source import Facts
from knowpay.analytics.store import ddl, write_facts

NOW = datetime(2026, 11, 25, 6, 30)  # naive UTC
TZ = "Asia/Shanghai"


def store() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    for statement in ddl():
        con.execute(statement)
    return con


def payment(i: int, at: datetime, channel: str, ok: bool, code: str = "card_declined") -> dict:
    return {"payment_id": f"pay_{channel}_{i}", "order_id": f"ord_{channel}_{i}", "buyer_id": f"usr_{i % 500}",
            "channel": channel, "method": "qr", "device_class": "desktop", "amount_band": "50-200",
            "status": "succeeded" if ok else "failed", "amount": 9900, "currency": "cny", "amount_refunded": 0,
            "failure_code": None if ok else code, "created_at": at, "created_local": at + timedelta(hours=8),
            "succeeded_at": at + timedelta(seconds=30) if ok else None, "seconds_to_pay": 30.0 if ok else None,
            "updated_at": at, "version": 2}


def attempts(rng: random.Random, channel: str, *, per_hour: int, rate: float, since: datetime, until: datetime,
             code: str = "card_declined", start: int = 0) -> list[dict]:
    rows, i, at = [], start, since
    while at < until:
        for _ in range(per_hour):
            moment = at + timedelta(seconds=rng.randrange(3600))
            if moment < until:
                rows.append(payment(i, moment, channel, rng.random() < rate, code))
                i += 1
        at += timedelta(hours=1)
    return rows


def sale(i: int, at: datetime, creator: str, amount: int = 9900, refunded: int = 0) -> tuple[dict, dict]:
    local = at + timedelta(hours=8)
    order = {"order_id": f"ord_s{i}", "buyer_id": f"usr_{i % 700}", "status": "paid", "currency": "cny",
             "amount_total": amount, "amount_discount": 0, "amount_refunded": refunded, "created_at": at,
             "created_local": local, "paid_at": at, "paid_local": local, "closed_at": None, "channel": "alipay",
             "method": "qr", "attempts": 1, "version": 2}
    line = {"order_id": f"ord_s{i}", "position": 0, "buyer_id": order["buyer_id"], "product_id": f"prd_{creator}",
            "creator_id": creator, "kind": "course", "currency": "cny", "quantity": 1, "net": amount,
            "refunded": refunded, "creator_net": amount * 9 // 10, "channel_fee": 0, "coins_issued": 0,
            "status": "paid", "created_at": at, "created_local": local, "paid_at": at, "paid_local": local,
            "channel": "alipay", "method": "qr"}
    return order, line


def sales(rng: random.Random, creators: dict[str, float], *, since: datetime, until: datetime,
          quiet: dict[str, datetime] | None = None) -> Facts:
    """Orders at `per_day` a day for each creator, a Poisson-ish stream; a creator goes quiet after `quiet`."""
    facts, i = Facts(), 0
    for creator, per_day in creators.items():
        at = since
        while at < until:
            at += timedelta(days=rng.expovariate(per_day))
            if at < until and not (quiet and creator in quiet and at >= quiet[creator]):
                order, line = sale(i, at, creator)
                facts.orders.append(order)
                facts.sales.append(line)
                i += 1
    return facts


def refund(i: int, at: datetime) -> dict:
    return {"refund_id": f"ref_{i}", "payment_id": f"pay_{i}", "order_id": f"ord_s{i}", "channel": "alipay",
            "amount": 9900, "currency": "cny", "status": "succeeded", "kind": "requested", "reason": "no",
            "created_at": at, "created_local": at + timedelta(hours=8), "succeeded_at": at,
            "succeeded_local": at + timedelta(hours=8), "version": 2}


def kinds(findings) -> set[tuple[str, str]]:
    return {(f.kind, f.subject) for f in findings}


def test_a_drop_in_one_channels_success_rate_fires_with_its_numbers():
    rng = random.Random(1)
    con = store()
    window_start = NOW - timedelta(minutes=70)
    rows = attempts(rng, "alipay", per_hour=60, rate=0.9, since=NOW - timedelta(days=8), until=window_start)
    rows += attempts(rng, "alipay", per_hour=60, rate=0.45, since=window_start, until=NOW, start=len(rows),
                     code="bank_unavailable")
    rows += attempts(rng, "wechat", per_hour=60, rate=0.9, since=NOW - timedelta(days=8), until=NOW)
    write_facts(con, Facts(payments=rows))
    found = detect(con, now=NOW, timezone=TZ, currency="cny")
    assert ("success_rate_drop", "alipay") in kinds(found)
    assert ("failure_reason_spike", "alipay:bank_unavailable") in kinds(found)
    assert not any(subject.startswith("wechat") for _kind, subject in kinds(found))
    drop = next(f for f in found if f.kind == "success_rate_drop")
    assert drop.observed < 0.6 and drop.expected > 0.85
    assert drop.numbers["attempts"] >= 30 and drop.numbers["z"] <= -4
    assert drop.window_end == NOW - timedelta(minutes=10)


@pytest.mark.parametrize("seed", range(6))
def test_ordinary_noise_stays_quiet(seed):
    rng = random.Random(seed)
    con = store()
    rows = []
    for channel, rate, volume in (("alipay", 0.9, 60), ("wechat", 0.8, 40), ("stripe", 0.95, 8)):
        rows += attempts(rng, channel, per_hour=volume, rate=rate, since=NOW - timedelta(days=8), until=NOW,
                         start=len(rows), code=rng.choice(["card_declined", "insufficient_funds"]))
    facts = sales(rng, {"usr_alice": 200.0, "usr_bob": 8.0, "usr_carol": 2.0}, since=NOW - timedelta(days=35),
                  until=NOW)
    paid = [o["paid_at"] for o in facts.orders]
    facts.refunds = [refund(i, at + timedelta(hours=2)) for i, at in enumerate(paid) if rng.random() < 0.03
                     and at + timedelta(hours=2) < NOW]
    facts.payments = rows
    write_facts(con, facts)
    assert detect(con, now=NOW, timezone=TZ, currency="cny") == []


def test_a_creator_whose_sales_stop_is_reported_and_the_others_are_not():
    rng = random.Random(3)
    con = store()
    write_facts(con, sales(rng, {"usr_alice": 30.0, "usr_bob": 30.0}, since=NOW - timedelta(days=30), until=NOW,
                           quiet={"usr_alice": NOW - timedelta(hours=26)}))
    found = detect(con, now=NOW, timezone=TZ, currency="cny")
    assert kinds(found) >= {("creator_sales_shift", "usr_alice")}
    assert ("creator_sales_shift", "usr_bob") not in kinds(found)
    shift = next(f for f in found if f.subject == "usr_alice")
    assert shift.observed == 0 and shift.numbers["direction"] == "down"


def test_gmv_far_below_its_hour_of_the_week_is_reported():
    rng = random.Random(4)
    con = store()
    facts = sales(rng, {"usr_alice": 600.0}, since=NOW - timedelta(days=29), until=NOW,
                  quiet={"usr_alice": NOW.replace(minute=0) - timedelta(hours=1)})
    write_facts(con, facts)
    found = detect(con, now=NOW, timezone=TZ, currency="cny")
    gmv = [f for f in found if f.kind == "gmv_off_expectation"]
    assert len(gmv) == 1 and gmv[0].observed == 0 and gmv[0].numbers["direction"] == "below"
    assert len(gmv[0].numbers["previous_weeks"]) == 4 and min(gmv[0].numbers["previous_weeks"]) > 0


def test_refunds_above_their_usual_rate_are_reported():
    rng = random.Random(5)
    con = store()
    facts = sales(rng, {"usr_alice": 60.0}, since=NOW - timedelta(days=30), until=NOW)
    recent = NOW - timedelta(hours=24)
    facts.refunds = [refund(i, o["paid_at"] + timedelta(hours=1)) for i, o in enumerate(facts.orders)
                     if o["paid_at"] + timedelta(hours=1) < NOW
                     and rng.random() < (0.5 if o["paid_at"] >= recent else 0.02)]
    write_facts(con, facts)
    found = [f for f in detect(con, now=NOW, timezone=TZ, currency="cny") if f.kind == "refund_spike"]
    assert len(found) == 1 and found[0].observed > 3 * found[0].expected
