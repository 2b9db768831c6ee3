"""The admin console over the Flask test client: who may open it, search, bank-transfer confirmation,
payout approval behind a second factor, roles, reconciliation export, webhooks and the audit log."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta

import pytest

from knowpay.accounts import totp
from knowpay.accounts.models import User
from knowpay.fieldcrypt import FieldCipher
from knowpay.payouts import service as payouts
from knowpay.payouts.settlement import settle_due_earnings
from knowpay.reconciliation.models import ReconciliationItem, ReconciliationRun
from knowpay.risk.models import RiskDecision
from tests.e2e.browser.forms import ensure_pages, post_form, sign_in
from tests.fakes import LaterClock, buy


@pytest.fixture(autouse=True)
def _pages(app):
    ensure_pages(app)


def _turn_on_two_factor(ctx, user_id: str) -> str:
    """Two-factor sign-in on for a user, as the set-up page would do it; returns the key."""
    cipher = FieldCipher(ctx.settings.encryption_keys)
    with ctx.db.transaction() as session:
        user = session.get(User, user_id)
        setup = totp.begin_totp_setup(user, cipher=cipher)
        totp.confirm_totp_setup(session, user, totp.current_code(setup.secret, ctx.clock), cipher=cipher,
                                clock=ctx.clock)
    return setup.secret


def _next_code(secret: str, ctx) -> str:
    """The authenticator's next code (the current one was spent turning two-factor on)."""
    return totp.current_code(secret, LaterClock(ctx.clock, timedelta(seconds=30)))


@pytest.fixture
def admin(make_user):
    """An admin without two-factor sign-in yet: these tests turn it on the way the set-up page does."""
    return make_user("admin")


@pytest.fixture
def admin_client(app, admin):
    client = app.test_client()
    sign_in(client, admin.email)
    return client


def test_buyers_and_creators_cannot_open_the_console(app, buyer, creator):
    for who in (buyer, creator):
        client = app.test_client()
        sign_in(client, who.email)
        assert client.get("/admin").status_code == 403


def test_support_searches_orders_but_does_not_see_payouts(app, make_user, buyer, published_product, fake_channel,
                                                          client):
    payment = buy(client, buyer, published_product["id"], fake_channel)
    support = app.test_client()
    sign_in(support, make_user("support").email)
    found = support.get("/admin/orders", query_string={"q": buyer.email}).get_data(as_text=True)
    assert payment["order_id"] in found and "已支付" in found
    by_payment = support.get("/admin/payments", query_string={"q": payment["id"]}).get_data(as_text=True)
    assert payment["id"] in by_payment
    menu = support.get("/admin").get_data(as_text=True)
    assert "/admin/payouts" not in menu and "/admin/orders" in menu
    assert support.get("/admin/payouts").status_code == 403


def test_the_console_home_counts_what_waits_for_staff(ctx, admin_client, client, buyer):
    def figure(label: str) -> str:
        page = admin_client.get("/admin").get_data(as_text=True)
        return re.search(r'stat-value">(\d+)</span><span class="stat-label">' + label, page).group(1)

    assert (figure("待处理的风控审核"), figure("未处理的工单")) == ("0", "0")
    with ctx.db.transaction() as session:
        session.add(RiskDecision(subject="payment", user_id=buyer.id, amount=9900, currency="cny", outcome="review",
                                 shadow_outcome="review", inputs={}, features={}, fired=[], shadow_scores=[],
                                 faults=[], review_status="pending", created_at=ctx.clock.now()))
    opened = client.post("/api/v1/tickets", headers=buyer.headers, json={"subject": "Where is my course?",
                                                                         "body": "I paid but see nothing."})
    assert opened.status_code == 201, opened.get_json()
    assert (figure("待处理的风控审核"), figure("未处理的工单")) == ("1", "1")


def test_recording_a_bank_transfer_needs_a_second_factor_and_completes_the_payment(
        ctx, admin_client, admin, client, buyer, published_product):
    order = client.post("/api/v1/orders", headers=buyer.headers,
                        json={"items": [{"product_id": published_product["id"]}]}).get_json()
    payment = client.post(f"/api/v1/orders/{order['id']}/payments", headers=buyer.headers,
                          json={"channel": "bank_transfer"}).get_json()
    reference = payment["action"]["reference"]
    assert reference in admin_client.get("/admin/bank-transfers").get_data(as_text=True)
    form = {"reference": reference, "amount": "99.00", "note": "ICBC"}
    post_form(admin_client, "/admin/bank-transfers", form)
    assert "请先开启两步验证登录" in admin_client.get("/admin/bank-transfers").get_data(as_text=True)
    secret = _turn_on_two_factor(ctx, admin.id)
    assert 'name="otp"' in admin_client.get("/admin/bank-transfers").get_data(as_text=True)
    post_form(admin_client, "/admin/bank-transfers", {**form, "otp": _next_code(secret, ctx)})
    page = admin_client.get("/admin/bank-transfers").get_data(as_text=True)
    assert "支付已完成" in page and "captured" in page
    assert client.get(f"/api/v1/orders/{order['id']}", headers=buyer.headers).get_json()["status"] == "paid"


def test_approving_a_payout_needs_a_second_factor(ctx, admin_client, admin, client, buyer, creator,
                                                  published_product, fake_channel):
    buy(client, buyer, published_product["id"], fake_channel)
    ctx.clock = LaterClock(ctx.clock, timedelta(days=8))
    settle_due_earnings(ctx)
    with ctx.db.transaction() as session:
        maker = session.get(User, creator.id)
        payouts.set_payout_account(session, ctx, creator=maker, holder_name="李老师", bank_name="招商银行",
                                   account_number="6225881234567890")
    with ctx.db.transaction() as session:  # risk assesses a payout request before this one writes
        payout_id = payouts.request_payout(session, ctx, creator=maker, amount=5000).id
    queue = admin_client.get("/admin/payouts").get_data(as_text=True)
    assert "¥50.00" in queue and "招商银行 •••• 7890" in queue

    post_form(admin_client, f"/admin/payouts/{payout_id}/approve")
    assert "请先开启两步验证登录" in admin_client.get("/admin/payouts").get_data(as_text=True)

    secret = _turn_on_two_factor(ctx, admin.id)
    assert 'name="otp"' in admin_client.get("/admin/payouts").get_data(as_text=True)
    post_form(admin_client, f"/admin/payouts/{payout_id}/approve", {"otp": "123456"})
    assert "验证码无效或已被使用" in admin_client.get("/admin/payouts").get_data(as_text=True)
    approved = post_form(admin_client, f"/admin/payouts/{payout_id}/approve", {"otp": _next_code(secret, ctx)})
    assert approved.status_code == 303
    listing = admin_client.get("/admin/payouts", query_string={"status": "approved"}).get_data(as_text=True)
    assert "提现已批准" in listing and 'name="otp"' not in listing  # the second factor holds for a while
    post_form(admin_client, f"/admin/payouts/{payout_id}/mark-paid", {"reference": "TX-1", "back_status": "paid"})
    assert "TX-1" in admin_client.get("/admin/payouts", query_string={"status": "paid"}).get_data(as_text=True)


def test_changing_roles_needs_a_second_factor_and_is_audited(ctx, admin_client, admin, buyer):
    secret = _turn_on_two_factor(ctx, admin.id)
    page = admin_client.get("/admin/users", query_string={"q": buyer.email}).get_data(as_text=True)
    assert buyer.email in page
    post_form(admin_client, f"/admin/users/{buyer.id}/roles",
              {"roles": ["buyer", "creator"], "otp": _next_code(secret, ctx)})
    with ctx.db.transaction(write=False) as session:
        assert session.get(User, buyer.id).role_names == ["buyer", "creator"]
    audit = admin_client.get("/admin/audit", query_string={"action": "user.roles_changed"}).get_data(as_text=True)
    assert buyer.id in audit and "user.roles_changed" in audit


def test_reconciliation_runs_export_their_lines_as_csv(ctx, admin_client):
    now = datetime(2026, 11, 24, 20, 0)
    with ctx.db.transaction() as session:
        run = ReconciliationRun(channel="sandbox", day=date(2026, 11, 24), status="completed", source="channel",
                                counts={"matched": 1, "missing_channel": 1}, runs=1, created_at=now,
                                started_at=now, finished_at=now)
        session.add(run)
        session.flush()
        session.add_all([
            ReconciliationItem(run_id=run.id, kind="payment", result="matched", payment_id="pay_1",
                               channel_amount=9900, our_amount=9900, currency="cny"),
            ReconciliationItem(run_id=run.id, kind="payment", result="missing_channel", payment_id="pay_2",
                               our_amount=4900, currency="cny", detail="absent from the channel's bill")])
        run_id = run.id
    listing = admin_client.get("/admin/reconciliation").get_data(as_text=True)
    assert "2026-11-24" in listing and f"/admin/reconciliation/{run_id}.csv" in listing
    detail = admin_client.get(f"/admin/reconciliation/{run_id}", query_string={"result": "missing_channel"})
    assert "pay_2" in detail.get_data(as_text=True) and "pay_1" not in detail.get_data(as_text=True)
    csv = admin_client.get(f"/admin/reconciliation/{run_id}.csv")
    assert csv.mimetype == "text/csv" and "attachment" in csv.headers["Content-Disposition"]
    lines = csv.get_data(as_text=True).splitlines()
    assert lines[0].startswith("kind,result,payment_id") and len(lines) == 3


def test_a_webhook_endpoint_shows_its_secret_once(admin_client):
    made = post_form(admin_client, "/admin/webhooks", {"url": "https://hooks.example.com/kp",
                                                        "events": ["order.paid", "refund.succeeded"]})
    assert made.status_code == 200
    secret = re.search(r"whsec_[\w-]+", made.get_data(as_text=True)).group(0)
    again = admin_client.get("/admin/webhooks").get_data(as_text=True)
    assert "https://hooks.example.com/kp" in again and secret not in again
    endpoint_id = re.search(r"/admin/webhooks/(whe_\w+)", again).group(1)
    assert "暂无投递记录" in admin_client.get(f"/admin/webhooks/{endpoint_id}").get_data(as_text=True)
    bad = post_form(admin_client, "/admin/webhooks", {"url": "ftp://nope", "events": ["order.paid"]})
    assert bad.status_code == 303
    assert "请输入以 http:// 或 https:// 开头的完整 URL" in admin_client.get("/admin/webhooks").get_data(as_text=True)


def test_a_staff_refund_needs_a_reason_and_a_second_factor(ctx, admin_client, admin, client, buyer,
                                                           published_product, fake_channel):
    payment = buy(client, buyer, published_product["id"], fake_channel)
    secret = _turn_on_two_factor(ctx, admin.id)
    order_page = admin_client.get(f"/admin/orders/{payment['order_id']}").get_data(as_text=True)
    assert f"/admin/payments/{payment['id']}/refund" in order_page
    post_form(admin_client, f"/admin/payments/{payment['id']}/refund",
              {"amount": "10", "reason": "goodwill", "otp": _next_code(secret, ctx)})
    page = admin_client.get(f"/admin/orders/{payment['order_id']}").get_data(as_text=True)
    assert "退款已发起" in page and "goodwill" in page and "¥10.00" in page
