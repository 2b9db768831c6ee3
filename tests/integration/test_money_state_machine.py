"""Stateful money test: random sequences of purchases (channel and wallet), duplicate and late
notifications, declines, expiries, partial refunds, wallet top-ups, settlement and payouts.

After every step: every ledger transaction balanced and `verify` clean, wallets never negative,
each order's money = captured − refunded, access exactly for paid and not fully refunded orders,
and each creator's earnings = captured share − refunded share − payouts, computed here
independently of the ledger code (floor(refunded × share ÷ total) is the creator's part of a refund).
"""

from __future__ import annotations

import shutil
from datetime import timedelta

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from knowpay.channels import Registry
from knowpay.accounts import totp
from knowpay.config import load_settings
from knowpay.db import Database
from knowpay.domain.money import apply_rate_bps
from knowpay.fieldcrypt import FieldCipher
from knowpay.invariants import check_invariants
from knowpay.ledger.service import balance_of
from knowpay.payments.maintenance import expire_due_orders
from knowpay.payouts.settlement import settle_due_earnings
from tests.conftest import FAST_PASSWORDS
from tests.fakes import FakeChannel

PRICES = (990, 4900, 9900)
FEE_BPS = 1000


class ShiftedClock:
    def __init__(self) -> None:
        from knowpay.domain.clock import SystemClock

        self.base, self.shift = SystemClock(), timedelta()

    def now(self):
        return self.base.now() + self.shift


class MoneyMachine(RuleBasedStateMachine):
    pending = Bundle("pending")
    paid = Bundle("paid")

    def __init__(self) -> None:
        super().__init__()
        from knowpay.accounts import service as accounts
        from knowpay.web import create_app

        folder = self.tmp_factory.mktemp("money")
        shutil.copyfile(self.template, folder / "db.sqlite3")
        url = f"sqlite:///{folder / 'db.sqlite3'}"
        self.db = Database(url)
        self.fake = FakeChannel()
        self.clock = ShiftedClock()
        app = create_app(load_settings({"KNOWPAY_DATABASE_URL": url, "KNOWPAY_INSTANCE_PATH": str(folder)}),
                         db=self.db, clock=self.clock, config=FAST_PASSWORDS,
                         channels=Registry({"sandbox": self.fake}))
        self.ctx = app.extensions["knowpay"]
        self.ctx.db.after_outbox_commit = None
        self.client = app.test_client()
        headers: dict[str, dict[str, str]] = {}
        with app.app_context(), self.db.transaction() as session:
            for role in ("creator", "buyer", "admin"):
                user = accounts.register_user(session, email=f"{role}@example.com", password="Zq8#money-machine",
                                              username=role, roles=(role,), clock=self.clock)
                if role == "admin":  # staff refunds and payout decisions need two-factor sign-in
                    cipher = FieldCipher(self.ctx.settings.encryption_keys)
                    secret = totp.begin_totp_setup(user, cipher=cipher).secret
                    totp.confirm_totp_setup(session, user, totp.current_code(secret, self.clock), cipher=cipher,
                                            clock=self.clock)
                setattr(self, f"{role}_id", user.id)
        self.h = headers
        self._refresh_tokens()
        self.products = [self._product("course", price) for price in PRICES]
        self.coins = self._product("coin_pack", 3000, coins=3000, bonus_coins=300, who="admin")
        self.client.put("/api/v1/creator/payout-account", headers=self.h["creator"],
                        json={"holder_name": "C", "bank_name": "B", "account_number": "12345678"})
        self.creator_share: dict[str, tuple[int, int]] = {}  # payment id → (total, creator share)
        self.refunded: dict[str, int] = {}
        self.paid_out = 0

    def _product(self, kind: str, amount: int, *, who: str = "creator", **extra) -> str:
        made = self.client.post("/api/v1/products", headers=self.h[who],
                                json={"title": f"{kind} {amount}", "kind": kind, "amount": amount, "currency": "cny",
                                      **extra}).get_json()
        self.client.post(f"/api/v1/products/{made['id']}/publish", headers=self.h[who])
        return made["id"]

    def _order(self, product_id: str) -> dict:
        return self.client.post("/api/v1/orders", headers=self.h["buyer"],
                                json={"items": [{"product_id": product_id}]}).get_json()

    def _notify(self, payment: dict, status: str = "succeeded") -> None:
        body = self.fake.notification_body(payment["id"], payment["amount"], status=status)
        answer = self.client.post("/notify/sandbox", data=body, content_type="application/json")
        assert answer.status_code == 200, answer.get_data(as_text=True)

    def _record_capture(self, payment: dict) -> None:
        got = self.client.get(f"/api/v1/payments/{payment['id']}", headers=self.h["buyer"]).get_json()
        order = self.client.get(f"/api/v1/orders/{payment['order_id']}", headers=self.h["buyer"]).get_json()
        if got["status"] == "succeeded" and order["status"] in ("paid", "partially_refunded", "refunded") \
                and order["items"][0]["kind"] == "course" and payment["id"] not in self.creator_share:
            from knowpay.payments.models import Payment
            from knowpay.refunds.models import Refund
            from sqlalchemy import select

            with self.db.transaction(write=False) as session:
                held = session.scalar(select(Refund.id).where(Refund.payment_id == payment["id"],
                                                              Refund.kind == "duplicate_payment"))
                assert session.get(Payment, payment["id"]) is not None
            if held is None:
                total = payment["amount"]
                self.creator_share[payment["id"]] = (total, total - apply_rate_bps(total, FEE_BPS))

    @rule(target=pending, index=st.integers(0, len(PRICES) - 1))
    def start_payment(self, index):
        order = self._order(self.products[index])
        payment = self.client.post(f"/api/v1/orders/{order['id']}/payments", headers=self.h["buyer"],
                                   json={"channel": "sandbox"}).get_json()
        assert payment["status"] == "requires_action"
        return payment

    @rule(target=paid, payment=consumes(pending), repeats=st.integers(1, 3))
    def pay(self, payment, repeats):
        for _ in range(repeats):
            self._notify(payment)
        self._record_capture(payment)
        return payment

    @rule(payment=pending)
    def decline(self, payment):
        self._notify(payment, status="failed")

    @rule(target=paid, index=st.integers(0, len(PRICES) - 1))
    def pay_with_wallet(self, index):
        order = self._order(self.products[index])
        answer = self.client.post(f"/api/v1/orders/{order['id']}/payments", headers=self.h["buyer"],
                                  json={"channel": "wallet"})
        assert answer.status_code in (201, 402), answer.get_json()
        if answer.status_code == 201:
            self._record_capture(answer.get_json())
            return answer.get_json()
        return None

    @rule()
    def top_up(self):
        order = self._order(self.coins)
        payment = self.client.post(f"/api/v1/orders/{order['id']}/payments", headers=self.h["buyer"],
                                   json={"channel": "sandbox"}).get_json()
        self._notify(payment)

    @rule(payment=paid, per_mille=st.integers(1, 1000))
    def refund(self, payment, per_mille):
        if payment is None or payment["id"] not in self.creator_share:
            return
        total, _ = self.creator_share[payment["id"]]
        left = total - self.refunded.get(payment["id"], 0)
        amount = max(1, left * per_mille // 1000)
        answer = self.client.post("/api/v1/refunds", headers=self.h["admin"],
                                  json={"payment_id": payment["id"], "amount": amount, "reason": "machine"})
        if left == 0:
            assert answer.status_code == 409
        else:
            assert answer.status_code == 201, answer.get_json()
            self.refunded[payment["id"]] = self.refunded.get(payment["id"], 0) + amount

    @rule()
    def expire_everything_open(self):
        self.clock.shift += timedelta(seconds=self.ctx.settings.order_ttl_seconds + 1)
        expire_due_orders(self.ctx)
        self._refresh_tokens()

    @rule(target=paid, payment=consumes(pending))
    def late_payment(self, payment):
        """Paid at the channel after we expired it: captured, then queued for refund, never sold twice."""
        self.expire_everything_open()
        self._notify(payment)
        return None

    @rule(per_mille=st.integers(1, 1000))
    def settle_and_pay_out(self, per_mille):
        self.clock.shift += timedelta(days=self.ctx.settings.settlement_days, seconds=1)
        self._refresh_tokens()
        settle_due_earnings(self.ctx)
        available = self.client.get("/api/v1/creator/earnings", headers=self.h["creator"]).get_json()["available"]
        amount = available * per_mille // 1000
        if amount <= 0:
            return
        payout = self.client.post("/api/v1/payouts", headers=self.h["creator"], json={"amount": amount}).get_json()
        assert payout["status"] == "requested", payout
        self.client.post(f"/api/v1/payouts/{payout['id']}/approve", headers=self.h["admin"])
        done = self.client.post(f"/api/v1/payouts/{payout['id']}/mark-paid", headers=self.h["admin"], json={})
        assert done.get_json()["status"] == "paid"
        self.paid_out += amount

    def _refresh_tokens(self):
        from knowpay.accounts import service as accounts
        from knowpay.accounts.models import User
        from sqlalchemy import select

        with self.db.transaction() as session:
            for role in ("creator", "buyer", "admin"):
                user = session.scalar(select(User).where(User.username == role))
                issued = accounts.issue_token(session, user, clock=self.clock, second_factor=role == "admin")
                self.h[role] = {"Authorization": f"Bearer {issued.token}"}

    @invariant()
    def books_are_sound(self):
        report = check_invariants(self.ctx, alert=False)
        assert report.ok, report.as_dict()

    @invariant()
    def creator_earnings_equal_shares_less_refunds_and_payouts(self):
        expected = sum(share - self.refunded.get(pid, 0) * share // total
                       for pid, (total, share) in self.creator_share.items()) - self.paid_out
        earned = self.client.get("/api/v1/creator/earnings", headers=self.h["creator"]).get_json()
        assert earned["pending"] + earned["available"] + earned["in_payout"] == expected, earned
        with self.db.transaction(write=False) as session:
            assert balance_of(session, f"wallet:{self.buyer_id}:cny") >= 0

    def teardown(self):
        self.db.dispose()


@pytest.fixture
def money_machine(sqlite_template, tmp_path_factory):
    MoneyMachine.template = sqlite_template
    MoneyMachine.tmp_factory = tmp_path_factory
    return MoneyMachine


def test_money_stays_correct_under_random_sequences(money_machine):
    runner = money_machine.TestCase()
    runner.settings = settings(max_examples=25, stateful_step_count=20, deadline=None,
                               suppress_health_check=list(HealthCheck))
    runner.runTest()
