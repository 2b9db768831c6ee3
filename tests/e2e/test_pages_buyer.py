"""The buyer centre over the Flask test client: orders, receipts, refunds within policy, library,
memberships, wallet, two-factor set-up with a QR code, data export and account deletion."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from knowpay.accounts import totp
from knowpay.accounts.models import User
from knowpay.domain.clock import SystemClock
from knowpay.fieldcrypt import FieldCipher
from knowpay.security.models import AuditEntry
from tests.e2e.browser.forms import csrf_token, ensure_pages, post_form, sign_in
from tests.fakes import LaterClock


@pytest.fixture(autouse=True)
def _pages(app):
    ensure_pages(app)


@pytest.fixture
def buyer_client(app, buyer):
    client = app.test_client()
    sign_in(client, buyer.email)
    return client


@pytest.fixture
def paid_order(buyer_client, client, published_product, fake_channel) -> dict:
    """The buyer's paid order of `published_product` (99.00 CNY through the sandbox)."""
    answer = post_form(buyer_client, f"/checkout/products/{published_product['id']}", {"channel": "sandbox"})
    payment_id = answer.headers["Location"].rsplit("/", 1)[-1]
    body = fake_channel.notification_body(payment_id, 9900)
    assert client.post("/notify/sandbox", data=body, content_type="application/json").status_code == 200
    page = buyer_client.get(f"/checkout/payments/{payment_id}").get_data(as_text=True)
    order_id = re.search(r"/me/orders/(ord_\w+)/receipt", page).group(1)
    return {"order_id": order_id, "payment_id": payment_id}


def test_the_buyer_centre_needs_signing_in(client):
    answer = client.get("/me/orders")
    assert answer.status_code == 302 and "/account/login" in answer.headers["Location"]


def test_signing_in_lands_in_the_buyer_centre(app, buyer):
    client = app.test_client()
    assert sign_in(client, buyer.email).headers["Location"].endswith("/me")
    page = client.get("/me").get_data(as_text=True)
    assert "你好" in page and 'aria-current="page">概览' in page


def test_orders_list_and_detail_show_the_paid_order_with_a_receipt(buyer_client, paid_order):
    listing = buyer_client.get("/me/orders").get_data(as_text=True)
    assert paid_order["order_id"] in listing and "已支付" in listing
    detail = buyer_client.get(f"/me/orders/{paid_order['order_id']}").get_data(as_text=True)
    assert "Course A" in detail and "¥99.00" in detail and "申请退款" in detail
    receipt = buyer_client.get(f"/me/orders/{paid_order['order_id']}/receipt").get_data(as_text=True)
    assert "收据" in receipt and "实付金额" in receipt and "data-print" in receipt
    payments = buyer_client.get("/me/payments").get_data(as_text=True)
    assert paid_order["payment_id"] in payments


def test_a_refund_request_within_the_window_goes_through(buyer_client, paid_order):
    form = buyer_client.get(f"/me/payments/{paid_order['payment_id']}/refund").get_data(as_text=True)
    assert "最多可退 ¥99.00" in form
    too_much = post_form(buyer_client, f"/me/payments/{paid_order['payment_id']}/refund", {"amount": "100.00"})
    assert too_much.status_code == 400 and "超过了剩余可退金额" in too_much.get_data(as_text=True)
    done = post_form(buyer_client, f"/me/payments/{paid_order['payment_id']}/refund",
                     {"amount": "30", "reason": "Chapter 3 is missing"})
    assert done.status_code == 303 and done.headers["Location"].endswith("/me/refunds")
    refunds = buyer_client.get("/me/refunds").get_data(as_text=True)
    assert "¥30.00" in refunds and "Chapter 3 is missing" in refunds


def test_a_pending_order_can_be_cancelled(buyer_client, published_product):
    answer = post_form(buyer_client, f"/checkout/products/{published_product['id']}", {"channel": "bank_transfer"})
    payment_page = buyer_client.get(answer.headers["Location"]).get_data(as_text=True)
    order_id = re.search(r"/me/orders/(ord_\w+)", payment_page).group(1)
    cancelled = post_form(buyer_client, f"/me/orders/{order_id}/cancel")
    assert cancelled.status_code == 303
    assert "已取消" in buyer_client.get(f"/me/orders/{order_id}").get_data(as_text=True)


def test_someone_elses_order_is_not_found(app, make_user, paid_order):
    other = app.test_client()
    sign_in(other, make_user("buyer").email)
    assert other.get(f"/me/orders/{paid_order['order_id']}").status_code == 404
    assert other.get(f"/me/orders/{paid_order['order_id']}/receipt").status_code == 404
    assert other.get(f"/me/payments/{paid_order['payment_id']}/refund").status_code == 404


def test_the_wallet_shows_the_balance_and_coin_packs(buyer_client, client, creator):
    made = client.post("/api/v1/products", headers=creator.headers,
                       json={"title": "100 coins", "kind": "coin_pack", "amount": 10000, "currency": "cny",
                             "coins": 10000, "bonus_coins": 1000})
    client.post(f"/api/v1/products/{made.get_json()['id']}/publish", headers=creator.headers)
    page = buyer_client.get("/me/wallet").get_data(as_text=True)
    assert "0 知识币" in page and "10,000 知识币" in page and "赠送 1,000 知识币" in page and "¥100.00" in page
    assert f"/checkout/products/{made.get_json()['id']}" in page


def test_two_factor_set_up_shows_a_qr_code_and_turns_on_with_a_code(app, buyer_client, buyer):
    setup = post_form(buyer_client, "/me/security/2fa/setup")
    html = setup.get_data(as_text=True)
    assert setup.status_code == 200 and '<svg class="qr"' in html and setup.headers["Cache-Control"] == "no-store"
    secret = re.search(r'<code class="mono">([A-Z2-7]+)</code>', html).group(1)
    wrong = post_form(buyer_client, "/me/security/2fa/confirm", {"otp": "000000"})
    assert wrong.status_code == 400 and '<svg class="qr"' in wrong.get_data(as_text=True)
    code = totp.current_code(secret, SystemClock())
    done = post_form(buyer_client, "/me/security/2fa/confirm", {"otp": code})
    codes = re.findall(r"[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}", done.get_data(as_text=True))
    assert done.status_code == 200 and len(codes) == 10
    with app.extensions["knowpay"].db.transaction(write=False) as session:
        assert session.get(User, buyer.id).totp_enabled
        assert session.scalar(select(AuditEntry.action).where(AuditEntry.action == "2fa.enabled")) == "2fa.enabled"
    assert "已开启" in buyer_client.get("/me/security").get_data(as_text=True)


def test_the_data_export_is_a_json_download(buyer_client, buyer, paid_order):
    answer = post_form(buyer_client, "/me/data/export")
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    assert "attachment" in answer.headers["Content-Disposition"]
    data = json.loads(answer.get_data(as_text=True))
    assert data["account"]["email"] == buyer.email
    assert [o["id"] for o in data["orders"]] == [paid_order["order_id"]]


def test_deleting_the_account_needs_the_password_and_signs_out(app, buyer_client, buyer):
    wrong = post_form(buyer_client, "/me/data/delete", {"password": "not-my-password"})
    assert wrong.status_code == 303
    assert "密码错误" in buyer_client.get("/me/data").get_data(as_text=True)
    gone = post_form(buyer_client, "/me/data/delete", {"password": "correct-horse-9"})
    assert gone.status_code == 303 and gone.headers["Location"] == "/"
    assert buyer_client.get("/me").status_code == 302  # signed out
    with app.extensions["knowpay"].db.transaction(write=False) as session:
        user = session.get(User, buyer.id)
        assert user.deleted_at is not None and user.email.startswith("deleted-")


def test_forms_without_the_csrf_token_are_refused(buyer_client):
    csrf_token(buyer_client)
    answer = buyer_client.post("/me/security/2fa/setup", data={})
    assert answer.status_code == 400


def test_signing_out_from_the_header(buyer_client):
    answer = post_form(buyer_client, "/account/logout")
    assert answer.status_code in (302, 303) and answer.headers["Location"] == "/"
    assert buyer_client.get("/me").status_code == 302


def test_two_factor_sign_in_asks_for_the_code_on_our_page(app, buyer):
    ctx = app.extensions["knowpay"]
    cipher = FieldCipher(ctx.settings.encryption_keys)
    with ctx.db.transaction() as session:
        user = session.get(User, buyer.id)
        secret = totp.begin_totp_setup(user, cipher=cipher).secret
        totp.confirm_totp_setup(session, user, totp.current_code(secret, ctx.clock), cipher=cipher, clock=ctx.clock)
    client = app.test_client()
    token = csrf_token(client, "/account/login")
    answer = client.post("/account/login", data={"email": buyer.email, "password": "correct-horse-9",
                                                 "csrf_token": token})
    assert "/account/tf-validate" in answer.headers["Location"]
    page = client.get(answer.headers["Location"]).get_data(as_text=True)
    assert "两步验证登录" in page and 'autocomplete="one-time-code"' in page and 'class="card auth-card"' in page
    later = LaterClock(ctx.clock, timedelta(seconds=30))
    done = post_form(client, "/account/tf-validate", {"code": totp.current_code(secret, later)})
    assert done.status_code in (302, 303) and done.headers["Location"].endswith("/me")


def test_flask_security_pages_wear_the_site_layout(buyer_client, client):
    change = buyer_client.get("/account/change").get_data(as_text=True)
    assert 'class="site-header"' in change and 'name="new_password"' in change and 'name="csrf_token"' in change
    reset = client.get("/account/reset").get_data(as_text=True)
    assert 'class="site-header"' in reset and 'name="email"' in reset
    failed = post_form(client, "/account/login", {"email": "nobody@example.com", "password": "wrong-password-1"})
    assert "登录失败" in failed.get_data(as_text=True)


