"""Each risk rule on worked examples: signals from the real feature code over in-memory stores."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from knowpay.risk.counters import MemoryCounters
from knowpay.risk.features import collect, failure_hits
from knowpay.risk.lists import ListIndex, normalize
from knowpay.risk.profiles import MemoryProfiles
from knowpay.risk.rules import registry
from knowpay.risk.rules.base import RuleInput, Unavailable
from knowpay.risk.subject import Subject

NOW = datetime(2026, 11, 25, 4, 0, 0)
TZ = "Asia/Shanghai"


def subject(**fields) -> Subject:
    values = {"kind": "payment", "user_id": "usr_ann", "email": "Ann@Example.com",
              "account_created_at": NOW - timedelta(days=90), "amount": 9900, "currency": "cny",
              "channel": "alipay", "method": "qr", "ip": "36.112.0.7", "device_id": "dev-1"}
    values.update(fields)
    return Subject(**values)


class World:
    """Counters and history in memory, fed attempt by attempt as checkout would."""

    def __init__(self) -> None:
        self.counters = MemoryCounters()
        self.profiles = MemoryProfiles()
        self.n = 0

    def attempt(self, at: datetime = NOW, **fields) -> dict:
        self.n += 1
        signals, faults, _ = collect(subject(**fields), counters=self.counters, profiles=self.profiles, now=at,
                                     tz=TZ, attempt_id=f"a{self.n}")
        assert faults == []
        return signals


def check(name: str, signals: dict, *, score: float | None = None, lists: ListIndex | None = None, **params):
    rule = registry()[name]
    return rule.check(RuleInput(signals, score, lists or ListIndex()), rule.Params.model_validate(
        {**rule.defaults().model_dump(mode="json"), **params}))


def test_velocity_lets_thirty_attempts_in_ten_minutes_through_and_stops_the_thirty_first():
    world = World()
    for i in range(30):
        signals = world.attempt(NOW + timedelta(seconds=10 * i))
        assert check("velocity", signals) is None, i
    hit = check("velocity", world.attempt(NOW + timedelta(seconds=300)))
    assert hit is not None and hit.value == 31
    assert hit.reason == "31 attempts per user in 600 s (max 30); 31 attempts per device in 600 s (max 30)"
    # the window slides: ten minutes after the burst the count is back to one
    assert check("velocity", world.attempt(NOW + timedelta(seconds=300 + 601))) is None


def test_velocity_counts_failures_per_device_across_accounts():
    world = World()
    for i in range(8):
        world.counters.record(failure_hits(
            subject(user_id=f"usr_{i}"), f"f{i}"), NOW + timedelta(minutes=i))
    assert check("velocity", world.attempt(NOW + timedelta(minutes=9), user_id="usr_new")) is None
    world.counters.record(failure_hits(
        subject(user_id="usr_9"), "f9"), NOW + timedelta(minutes=9))
    hit = check("velocity", world.attempt(NOW + timedelta(minutes=10), user_id="usr_new"))
    assert hit.reason == "9 failures per device in 3600 s (max 8)"


def test_velocity_counts_distinct_instruments_not_repeats():
    world = World()
    for i in range(4):
        signals = world.attempt(NOW + timedelta(minutes=i), instruments={"card_fingerprint": f"fp{i}"})
        assert check("velocity", signals) is None
    same_card_again = world.attempt(NOW + timedelta(minutes=5), instruments={"card_fingerprint": "fp0"})
    assert same_card_again["instruments_user_86400"] == 4
    assert check("velocity", same_card_again) is None
    fifth = check("velocity", world.attempt(NOW + timedelta(minutes=6), instruments={"card_fingerprint": "fp4"}))
    assert fifth.reason == "5 instruments per user in 86400 s (max 4)"


def test_velocity_does_not_count_by_an_internal_address():
    world = World()
    signals = world.attempt(ip="10.1.2.3")
    assert (signals["ip_counted"], signals["attempts_ip_600"], signals["attempts_user_600"]) == (False, 0, 1)


def test_velocity_without_counters_cannot_be_evaluated():
    signals = World().attempt()
    with pytest.raises(Unavailable):
        check("velocity", {**signals, "counters_ok": False})


def test_amount_above_the_limit_and_far_above_the_buyers_own_history():
    world = World()
    assert check("amount", world.attempt(amount=2_000_000)) is None
    hit = check("amount", world.attempt(amount=2_000_001))
    assert hit.reason == "amount 2000001 above the limit 2000000"
    for amount in (5000, 10000, 15000):  # three payments, mean 10000
        world.profiles.paid("usr_ann", amount)
    assert check("amount", world.attempt(amount=100_000)) is None  # exactly 10× the mean
    far = check("amount", world.attempt(amount=100_001))
    assert far.reason == "amount 100001 over 10× the user's mean of 10000 (3 earlier)"
    assert check("amount", world.attempt(amount=100_001), history_min_amount=200_000) is None
    assert check("amount", World().attempt(amount=100_001)) is None  # no history, nothing to compare


def test_a_new_account_buying_a_lot_at_once():
    world = World()
    young = NOW - timedelta(hours=1)
    assert check("new_account", world.attempt(account_created_at=young, amount=199_999)) is None
    assert check("new_account", world.attempt(account_created_at=young, amount=200_000)).value == 200_000
    assert check("new_account", world.attempt(account_created_at=young, quantity=10)).reason.endswith(
        "buys 10 items (≥ 10)")
    assert check("new_account", world.attempt(account_created_at=NOW - timedelta(days=2), amount=900_000)) is None


def test_block_list_matches_email_domain_ip_range_device_and_instruments():
    lists = ListIndex.of([
        ("block", "email", normalize("email", " ANN@example.com ")),
        ("block", "email_domain", normalize("email_domain", "@Mailinator.com")),
        ("block", "ip", normalize("ip", "36.112.0.0/16")),
        ("block", "device", normalize("device", "dev-9")),
        ("block", "card_fingerprint", normalize("card_fingerprint", "fp-stolen")),
        ("allow", "email", "bob@example.com"),
    ])
    world = World()
    hit = check("blocklist", world.attempt(), lists=lists)
    assert hit.reason == "on the block list: email ann@example.com, ip 36.112.0.0/16"
    assert check("blocklist", world.attempt(email="x@mailinator.com", ip="8.8.8.8"), lists=lists).reason == (
        "on the block list: email_domain mailinator.com")
    assert check("blocklist", world.attempt(email="bob@example.com", ip="8.8.8.8", device_id="dev-9"),
                 lists=lists).reason == "on the block list: device dev-9"
    assert check("blocklist", world.attempt(email="bob@example.com", ip="8.8.8.8",
                                            instruments={"card_fingerprint": "fp-stolen"}),
                 lists=lists).reason == "on the block list: card_fingerprint fp-stolen"
    clean = world.attempt(email="bob@example.com", ip="8.8.8.8")
    assert check("blocklist", clean, lists=lists) is None
    assert check("allowlist", clean, lists=lists).reason == "on the allow list: email bob@example.com"
    assert check("blocklist", world.attempt(), lists=lists, kinds=["device"]) is None
    with pytest.raises(Unavailable):
        registry()["blocklist"].check(RuleInput(clean, None, None), registry()["blocklist"].defaults())


def test_refund_abuse_counts_the_request_itself():
    world = World()
    for i in range(3):
        world.profiles.paid("usr_ann", 9900)
    world.profiles.refunded("usr_ann", "pay_1", 9900)
    world.profiles.refunded("usr_ann", "pay_2", 9900)
    world.profiles.refunded("usr_ann", "pay_2", 100)  # a second partial refund of the same payment
    hit = check("refund_abuse", world.attempt(kind="refund"))
    assert hit.reason == "3 refunded of 3 paid (max 50%)" and hit.value == 100
    for i in range(7):
        world.profiles.paid("usr_ann", 9900)
    assert check("refund_abuse", world.attempt(kind="refund")) is None  # 3 of 10


def test_many_accounts_on_one_device():
    world = World()
    for i in range(3):
        assert check("shared_device", world.attempt(user_id=f"usr_{i}", ip="8.8.8.8")) is None
    hit = check("shared_device", world.attempt(user_id="usr_3", ip="8.8.4.4"))
    assert hit.reason == "4 accounts on this device (max 3)"
    for i in range(10):
        world.attempt(user_id=f"usr_ip{i}", ip="1.2.3.4", device_id=f"d{i}")
    assert check("shared_device", world.attempt(user_id="usr_ip10", ip="1.2.3.4", device_id="d10")).reason == (
        "11 accounts on this IP (max 10)")


def test_the_same_coupon_across_accounts_linked_by_device():
    world = World()
    world.attempt(user_id="usr_first", coupon_code="NEWUSER50", order_id="ord_1")
    world.profiles.coupon_held("NEWUSER50", NOW - timedelta(minutes=1), "usr_first", "ord_1")
    linked = world.attempt(NOW + timedelta(minutes=5), user_id="usr_second", coupon_code="NEWUSER50",
                           order_id="ord_2")
    assert check("coupon_linked", linked).reason == "coupon NEWUSER50 already used by 1 linked account(s)"
    unlinked = world.attempt(NOW + timedelta(minutes=6), user_id="usr_third", coupon_code="NEWUSER50",
                             order_id="ord_3", device_id="dev-other", ip="8.8.8.8")
    assert check("coupon_linked", unlinked) is None
    assert check("coupon_linked", world.attempt(user_id="usr_fourth")) is None  # no coupon


def test_model_score_acts_at_its_threshold_and_not_without_a_score():
    signals = World().attempt()
    assert check("model_score", signals, score=0.8).value == 0.8
    assert check("model_score", signals, score=0.79) is None
    assert check("model_score", signals, score=None) is None
    assert check("model_score", signals, score=0.6, threshold=0.5) is not None
