"""Checkout pages over the Flask test client: catalogue, product, order summary, choosing a channel,
the payment page with its QR code, and the live status (event stream, polling fallback, panel)."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import datetime

import pytest

from knowpay.orders.models import Coupon
from knowpay.web.views import checkout
from tests.e2e.browser.forms import ensure_pages, post_form, sign_in


@pytest.fixture(autouse=True)
def _pages(app):
    ensure_pages(app)

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
INLINE_HANDLER = re.compile(r"\son[a-z]+\s*=", re.IGNORECASE)
STYLE_ATTRIBUTE = re.compile(r"\sstyle\s*=", re.IGNORECASE)


def _events(chunks) -> list[dict]:
    text = "".join(c.decode() if isinstance(c, bytes) else c for c in chunks)
    found = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if lines.get("event") == "status":
            found.append(json.loads(lines["data"]))
    return found


@pytest.fixture
def buyer_client(app, buyer):
    """A browser session signed in as `buyer`."""
    client = app.test_client()
    sign_in(client, buyer.email)
    return client


def _start_payment(client, product_id: str, channel: str = "sandbox", **extra) -> str:
    answer = post_form(client, f"/checkout/products/{product_id}", {"channel": channel, **extra})
    assert answer.status_code == 303, answer.get_data(as_text=True)[:800]
    found = re.search(r"/checkout/payments/(pay_\w+)$", answer.headers["Location"])
    assert found, answer.headers["Location"]
    return found.group(1)


def _notify(client, fake_channel, payment_id: str, status: str = "succeeded", amount: int = 9900) -> None:
    body = fake_channel.notification_body(payment_id, amount, status=status)
    assert client.post("/notify/sandbox", data=body, content_type="application/json").status_code == 200


def test_the_catalogue_lists_published_products_with_their_price_in_chinese(client, published_product):
    page = client.get("/").get_data(as_text=True)
    assert 'lang="zh-CN"' in page
    assert "Course A" in page and "¥99.00" in page and "课程" in page
    assert f'/products/{published_product["id"]}' in page


def test_the_product_page_shows_price_and_refund_policy(client, published_product):
    page = client.get(f"/products/{published_product['id']}").get_data(as_text=True)
    assert "¥99.00" in page and "购买后 7 天内可申请退款" in page
    assert f"/checkout/products/{published_product['id']}" in page


def test_buying_asks_a_stranger_to_sign_in_and_comes_back(client, published_product):
    answer = client.get(f"/checkout/products/{published_product['id']}")
    assert answer.status_code == 302
    assert "/account/login" in answer.headers["Location"]
    assert "next=" in answer.headers["Location"]


def test_the_order_summary_offers_only_the_enabled_channels(buyer_client, published_product):
    page = buyer_client.get(f"/checkout/products/{published_product['id']}").get_data(as_text=True)
    offered = re.findall(r'name="channel" id="channel-(\w+)"', page)
    assert offered == ["wallet", "bank_transfer", "sandbox"]  # the test app enables sandbox and bank transfer
    assert re.search(r'id="channel-wallet" value="wallet"\s+disabled', page)  # no coins yet
    assert "知识币余额不足" in page
    assert 'name="coupon"' not in page  # no coupons exist


def test_paying_through_the_sandbox_shows_a_qr_code_drawn_by_us(buyer_client, published_product, fake_channel):
    payment_id = _start_payment(buyer_client, published_product["id"])
    page = buyer_client.get(f"/checkout/payments/{payment_id}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    assert '<svg class="qr"' in html and 'role="img"' in html
    assert "扫码支付" in html and "¥99.00" in html
    assert f'data-events-url="/checkout/payments/{payment_id}/events"' in html
    assert buyer_client.get(f"/checkout/payments/{payment_id}/status").get_json() == {
        "status": "requires_action", "version": 2, "final": False}


def test_the_event_stream_reports_success_and_closes(app, buyer_client, published_product, fake_channel,
                                                     monkeypatch):
    monkeypatch.setattr(checkout, "STREAM_POLL_SECONDS", 0.05)
    payment_id = _start_payment(buyer_client, published_product["id"])

    def pay_soon() -> None:
        time.sleep(0.3)
        _notify(app.test_client(), fake_channel, payment_id)

    payer = threading.Thread(target=pay_soon)
    payer.start()
    started = time.monotonic()
    stream = buyer_client.get(f"/checkout/payments/{payment_id}/events", buffered=False)
    assert stream.mimetype == "text/event-stream"
    events = _events(stream.response)
    payer.join()
    assert [(e["status"], e["final"]) for e in events] == [("requires_action", False), ("succeeded", True)]
    assert time.monotonic() - started < 10


def test_after_success_the_panel_leads_to_the_library(buyer_client, client, published_product, fake_channel):
    payment_id = _start_payment(buyer_client, published_product["id"])
    _notify(client, fake_channel, payment_id)
    panel = buyer_client.get(f"/checkout/payments/{payment_id}/panel").get_data(as_text=True)
    assert 'data-status="succeeded" data-final="true"' in panel
    assert "支付成功" in panel and 'href="/me/library"' in panel
    library = buyer_client.get("/me/library").get_data(as_text=True)
    assert "Course A" in library and "有效" in library


def test_a_declined_payment_offers_to_try_again_on_the_same_order(buyer_client, client, published_product,
                                                                   fake_channel):
    payment_id = _start_payment(buyer_client, published_product["id"])
    _notify(client, fake_channel, payment_id, status="failed")
    panel = buyer_client.get(f"/checkout/payments/{payment_id}/panel").get_data(as_text=True)
    assert "支付失败" in panel and "重试" in panel
    retry = re.search(r'href="(/checkout/orders/ord_\w+)"', panel).group(1)
    again = buyer_client.get(retry).get_data(as_text=True)
    assert "支付订单" in again and 'id="channel-sandbox"' in again


def test_someone_elses_payment_page_is_not_found(app, buyer_client, make_user, published_product):
    payment_id = _start_payment(buyer_client, published_product["id"])
    stranger = make_user("buyer")
    other = app.test_client()
    sign_in(other, stranger.email)
    for path in ("", "/panel", "/status", "/events"):
        assert other.get(f"/checkout/payments/{payment_id}{path}").status_code == 404


def test_a_coupon_field_appears_when_coupons_exist_and_takes_the_discount_off(ctx, buyer_client, published_product):
    with ctx.db.transaction() as session:
        session.add(Coupon(code="SPRING10", percent_off_bps=1000, active=True, times_redeemed=0,
                           created_at=datetime(2026, 1, 1)))
    path = f"/checkout/products/{published_product['id']}"
    assert 'name="coupon"' in buyer_client.get(path).get_data(as_text=True)
    wrong = post_form(buyer_client, path, {"channel": "sandbox", "coupon": "NOPE"})
    assert wrong.status_code == 400 and "优惠码不存在或已失效" in wrong.get_data(as_text=True)
    payment_id = _start_payment(buyer_client, published_product["id"], coupon="SPRING10")
    page = buyer_client.get(f"/checkout/payments/{payment_id}").get_data(as_text=True)
    assert "¥89.10" in page


def test_a_bank_transfer_shows_the_account_and_reference(buyer_client, published_product):
    payment_id = _start_payment(buyer_client, published_product["id"], channel="bank_transfer")
    page = buyer_client.get(f"/checkout/payments/{payment_id}").get_data(as_text=True)
    assert "银行转账支付" in page and "6222 1111 2222 3333" in page
    assert re.search(r'class="reference">KP-[A-Z2-9]{4}-[A-Z2-9]{4}<', page)


def test_the_wallet_refusal_is_explained_on_the_order_page(buyer_client, published_product):
    answer = post_form(buyer_client, f"/checkout/products/{published_product['id']}", {"channel": "wallet"})
    assert answer.status_code == 303 and "/checkout/orders/" in answer.headers["Location"]
    page = buyer_client.get(answer.headers["Location"]).get_data(as_text=True)
    assert "钱包中的知识币不足以支付这个订单" in page


def test_pages_carry_no_inline_script_style_or_handler(buyer_client, published_product):
    payment_id = _start_payment(buyer_client, published_product["id"])
    for path in ("/", f"/products/{published_product['id']}", f"/checkout/products/{published_product['id']}",
                 f"/checkout/payments/{payment_id}", "/me", "/me/security", "/account/login"):
        html = buyer_client.get(path).get_data(as_text=True)
        assert not INLINE_SCRIPT.search(html), path
        assert not INLINE_HANDLER.search(html), path
        assert not STYLE_ATTRIBUTE.search(html), path
        for url in re.findall(r'<(?:script|img|link)\b[^>]*\b(?:src|href)="([^"]+)"', html):
            assert url.startswith("/static/"), (path, url)  # every asset is ours


# -- buyers on phones: Alipay's wap flow, WeChat Pay's H5 flow, and the way back to a QR code -------------

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.4 Mobile/15E148 Safari/604.1")
IN_WECHAT = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
             "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN")
SANDBOX_HOST = "http://sandbox.test"


class _SandboxTransport:
    """WeChat Pay's wire, delivered to the sandbox gateway's app in this process instead of over a socket."""

    def __init__(self, gateway) -> None:
        self.client = gateway.test_client()

    def __call__(self, method, url, headers, body):
        from urllib.parse import urlsplit

        from knowpay.channels.wechat import WireAnswer

        parts = urlsplit(url)
        answer = self.client.open(parts.path + (f"?{parts.query}" if parts.query else ""), method=method,
                                  headers=dict(headers), data=body, base_url=SANDBOX_HOST)
        headers = {k.lower(): v for k, v in answer.headers.items()}
        return WireAnswer(answer.status_code, headers, answer.get_data())


@pytest.fixture(scope="module")
def channel_env(tmp_path_factory) -> dict[str, str]:
    """Alipay and WeChat Pay keys for KnowPay and the sandbox, made once (RSA keys are the slow part)."""
    from knowpay.sandbox.gateways import alipay as alipay_side
    from knowpay.sandbox.gateways import wechat as wechat_side

    folder = tmp_path_factory.mktemp("phone-keys")
    return {**alipay_side.demo_env(folder, SANDBOX_HOST), **wechat_side.demo_env(folder, SANDBOX_HOST)}


@pytest.fixture
def gateway(tmp_path, channel_env):
    from knowpay.config import Settings
    from knowpay.sandbox.app import create_sandbox_app

    settings = Settings(instance_path=tmp_path / "sandbox",
                        channel={k[len("KNOWPAY_"):].lower(): v for k, v in channel_env.items()})
    made = create_sandbox_app(settings, notify_sync=True)
    yield made
    made.extensions["sandbox"].store.close()


@pytest.fixture
def phone_app(settings, db, fake_channel, channel_env, gateway):
    """KnowPay with Alipay (its wap flow needs no call) and WeChat Pay talking to the sandbox gateway."""
    from knowpay.channels import Registry
    from knowpay.channels.alipay import from_settings as alipay_from_settings
    from knowpay.channels.wechat import WeChatPayChannel, WeChatPayConfig
    from knowpay.config import Settings
    from knowpay.domain.clock import SystemClock
    from knowpay.web import create_app
    from tests.conftest import FAST_PASSWORDS

    channel = Settings(channel={k[len("KNOWPAY_"):].lower(): v for k, v in channel_env.items()})
    wechat = WeChatPayChannel(WeChatPayConfig.from_settings(channel), transport=_SandboxTransport(gateway))
    registry = Registry({"sandbox": fake_channel, "alipay": alipay_from_settings(channel), "wechat": wechat})
    return ensure_pages(create_app(settings, db=db, clock=SystemClock(), channels=registry,
                                   config={"TESTING": True, **FAST_PASSWORDS}))


def _phone(app, email: str, agent: str = IPHONE):
    client = app.test_client()
    client.environ_base["HTTP_USER_AGENT"] = agent
    sign_in(client, email)
    return client


def _method_of(ctx, payment_id: str) -> str:
    from knowpay.payments.models import Payment

    with ctx.db.transaction(write=False) as session:
        return session.get(Payment, payment_id).method


def _open_cashier(phone, product_id: str, channel: str):
    """Choose `channel` on a phone → (the cashier's URL, split; the payment id; the page that opens it).

    The form's answer is KnowPay's own payment page, marked to open the cashier at once (the CSP's
    form-action 'self' would stop a form's redirect to another site)."""
    from html import unescape
    from urllib.parse import urlsplit

    answer = post_form(phone, f"/checkout/products/{product_id}", {"channel": channel})
    assert answer.status_code == 303
    payment_id = re.fullmatch(r"/checkout/payments/(pay_\w+)\?open=1", answer.headers["Location"]).group(1)
    opening = phone.get(answer.headers["Location"]).get_data(as_text=True)
    link = re.search(r'<a class="button button-primary" href="([^"]+)" data-pay-link>', opening).group(1)
    return urlsplit(unescape(link)), payment_id, opening


def test_a_phone_is_told_that_alipay_and_wechat_open_their_apps(phone_app, buyer, published_product):
    path = f"/checkout/products/{published_product['id']}"
    page = _phone(phone_app, buyer.email).get(path).get_data(as_text=True)
    assert "在手机上打开支付宝" in page and "在手机上打开微信" in page
    assert 'name="qr" value="1"' in page  # the way back to a QR code
    desktop = phone_app.test_client()
    sign_in(desktop, buyer.email)
    page = desktop.get(path).get_data(as_text=True)
    assert "使用微信扫码支付" in page and 'name="qr"' not in page


def test_alipay_on_a_phone_goes_to_the_wap_cashier_and_comes_back_to_a_waiting_page(ctx, phone_app, buyer,
                                                                                    published_product):
    from urllib.parse import parse_qs, urlsplit

    phone = _phone(phone_app, buyer.email)
    cashier, payment_id, opening = _open_cashier(phone, published_product["id"], "alipay")
    assert f"{cashier.scheme}://{cashier.netloc}{cashier.path}" == f"{SANDBOX_HOST}/alipay/gateway.do"
    params = {k: v[0] for k, v in parse_qs(cashier.query).items()}
    assert params["method"] == "alipay.trade.wap.pay"
    assert json.loads(params["biz_content"])["product_code"] == "QUICK_WAP_WAY"
    assert params["return_url"] == f"http://127.0.0.1:8000/checkout/payments/{payment_id}"
    assert _method_of(ctx, payment_id) == "wap"
    assert "/static/js/open-cashier.js" in opening

    back = phone.get(f"/checkout/payments/{payment_id}").get_data(as_text=True)  # Alipay's return_url
    assert "前往支付宝" in back and "<svg" not in back
    assert "open-cashier.js" not in back  # coming back does not send the buyer off again
    assert 'class="switch-to-qr"' in back and 'name="qr" value="1"' in back


def test_wechat_on_a_phone_opens_the_h5_cashier_which_returns_the_buyer(ctx, phone_app, gateway, buyer,
                                                                         published_product):
    from urllib.parse import parse_qs, urlsplit

    phone = _phone(phone_app, buyer.email)
    cashier, payment_id, _ = _open_cashier(phone, published_product["id"], "wechat")
    assert cashier.netloc == "sandbox.test" and cashier.path.startswith("/pay/")
    back_to = parse_qs(cashier.query)["redirect_url"][0]
    assert back_to == f"http://127.0.0.1:8000/checkout/payments/{payment_id}"
    assert _method_of(ctx, payment_id) == "h5"

    buyer_phone = gateway.test_client()
    page = buyer_phone.get(f"{cashier.path}?{cashier.query}", base_url=SANDBOX_HOST).get_data(as_text=True)
    assert "确认支付" in page
    action = re.search(r'<form method="post" action="([^"]+/pay\?redirect_url=[^"]+)"', page).group(1)
    csp = buyer_phone.get(f"{cashier.path}?{cashier.query}", base_url=SANDBOX_HOST).headers[
        "Content-Security-Policy"]
    assert "form-action 'self' http://127.0.0.1:8000;" in csp  # the Pay button may go back to KnowPay
    paid = buyer_phone.post(action.replace("&amp;", "&"), base_url=SANDBOX_HOST)
    assert paid.status_code == 303 and paid.headers["Location"] == back_to
    trade = gateway.extensions["sandbox"].store.find_trade("wechat:1900000109", payment_id, now=time.time())
    assert (trade.status, json.loads(trade.extra)["trade_type"]) == ("SUCCESS", "MWEB")


def test_a_phone_buyer_may_ask_for_a_qr_code_instead(ctx, phone_app, buyer, published_product):
    phone = _phone(phone_app, buyer.email)
    payment_id = _start_payment(phone, published_product["id"], channel="wechat", qr="1")
    assert _method_of(ctx, payment_id) == "native"
    assert '<svg class="qr"' in phone.get(f"/checkout/payments/{payment_id}").get_data(as_text=True)


def test_the_waiting_page_switches_an_h5_payment_to_a_qr_code(ctx, phone_app, buyer, published_product):
    phone = _phone(phone_app, buyer.email)
    _, h5_id, _ = _open_cashier(phone, published_product["id"], "wechat")
    waiting = phone.get(f"/checkout/payments/{h5_id}").get_data(as_text=True)
    switch = re.search(r'<form method="post" action="(/checkout/orders/ord_\w+)" class="switch-to-qr">',
                       waiting)
    again = post_form(phone, switch.group(1), {"channel": "wechat", "qr": "1"})
    assert again.status_code == 303
    qr_id = re.search(r"/checkout/payments/(pay_\w+)$", again.headers["Location"]).group(1)
    assert qr_id != h5_id and _method_of(ctx, qr_id) == "native"


def test_inside_wechat_the_qr_code_stays(ctx, phone_app, buyer, published_product):
    phone = _phone(phone_app, buyer.email, agent=IN_WECHAT)
    page = phone.get(f"/checkout/products/{published_product['id']}").get_data(as_text=True)
    assert 'name="qr"' not in page
    payment_id = _start_payment(phone, published_product["id"], channel="wechat")
    assert _method_of(ctx, payment_id) == "native"


# -- cards: Stripe's hosted Checkout page, opened from ours --------------------------------------------

STRIPE_KEYS = {"stripe_secret_key": "sk_test_pages_0123456789", "stripe_webhook_secret": "whsec_pages_0123456789"}


@pytest.fixture
def card_app(settings, db, fake_channel, tmp_path):
    """KnowPay with Stripe, whose adapter talks to the sandbox's imitation of Stripe over a real socket (Stripe's
    library speaks HTTP); the sandbox's webhook events are handed to KnowPay by `deliver_stripe_events`."""
    from werkzeug.serving import make_server

    from knowpay.channels import Registry
    from knowpay.channels.stripe import from_settings as stripe_from_settings
    from knowpay.config import Settings
    from knowpay.domain.clock import SystemClock
    from knowpay.sandbox.app import create_sandbox_app
    from knowpay.web import create_app
    from tests.conftest import FAST_PASSWORDS

    gateway = create_sandbox_app(Settings(instance_path=tmp_path / "stripe-sandbox", channel=dict(STRIPE_KEYS)),
                                 notify_sync=True)
    server = make_server("127.0.0.1", 0, gateway, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    adapter = stripe_from_settings(Settings(channel={**STRIPE_KEYS,
                                                     "stripe_api_base": f"http://127.0.0.1:{server.server_port}"}))
    app = ensure_pages(create_app(settings, db=db, clock=SystemClock(),
                                  channels=Registry({"sandbox": fake_channel, "stripe": adapter}),
                                  config={"TESTING": True, **FAST_PASSWORDS}))
    app.extensions["stripe-sandbox"] = gateway
    yield app
    server.shutdown()
    thread.join(5)
    gateway.extensions["sandbox"].store.close()


def deliver_stripe_events(app) -> int:
    """Hand the sandbox's queued Stripe events, signed as it sends them, to KnowPay's /notify/stripe."""
    sandbox = app.extensions["stripe-sandbox"].extensions["sandbox"]
    client, sent = app.test_client(), 0
    for delivery in sandbox.store.deliveries():
        body, headers = sandbox.notifier.formats["stripe"].render(delivery, time.time())
        assert client.post("/notify/stripe", data=body, headers=headers).status_code == 200
        sent += 1
    return sent


def _card_payment(app, email: str, product_id: str, agent: str | None = None):
    """Choose the card on the order summary → (the client, the payment id, the payment page it lands on)."""
    client = app.test_client()
    if agent:
        client.environ_base["HTTP_USER_AGENT"] = agent
    sign_in(client, email)
    answer = post_form(client, f"/checkout/products/{product_id}", {"channel": "stripe"})
    assert answer.status_code == 303, answer.get_data(as_text=True)[:800]
    payment_id = re.fullmatch(r"/checkout/payments/(pay_\w+)\?open=1", answer.headers["Location"]).group(1)
    return client, payment_id, client.get(answer.headers["Location"]).get_data(as_text=True)


@pytest.mark.parametrize("agent", [None, IPHONE], ids=["desktop", "phone"])
def test_a_card_opens_stripes_hosted_checkout_and_the_page_turns_to_success(ctx, card_app, buyer, published_product,
                                                                          agent):
    import requests
    from html import unescape

    summary = card_app.test_client()
    sign_in(summary, buyer.email)
    assert "在 Stripe 的安全页面上输入银行卡信息。" in summary.get(
        f"/checkout/products/{published_product['id']}").get_data(as_text=True)

    client, payment_id, opening = _card_payment(card_app, buyer.email, published_product["id"], agent)
    assert _method_of(ctx, payment_id) == "checkout"
    assert "/static/js/open-cashier.js" in opening and "前往银行卡支付页面" in opening
    hosted = unescape(re.search(r'<a class="button button-primary" href="([^"]+)" data-pay-link>', opening).group(1))
    assert re.match(r"http://127\.0\.0\.1:\d+/pay/sbx\w+\?redirect_url=", hosted)

    page = requests.get(hosted, timeout=5)
    assert "¥99.00" in page.text
    action = unescape(re.search(r'<form method="post" action="([^"]+/pay\?[^"]+)"', page.text).group(1))
    paid = requests.post(requests.compat.urljoin(hosted, action), timeout=5, allow_redirects=False)
    # Stripe sends the buyer to success_url: KnowPay's payment page, with no ?open=1 to send them off again.
    assert paid.headers["Location"] == f"{ctx.settings.base_url}/checkout/payments/{payment_id}"
    waiting = client.get(f"/checkout/payments/{payment_id}").get_data(as_text=True)
    assert "open-cashier.js" not in waiting and 'data-status="requires_action"' in waiting

    assert deliver_stripe_events(card_app) == 1  # checkout.session.completed
    assert client.get(f"/checkout/payments/{payment_id}/status").get_json()["status"] == "succeeded"
    assert "支付成功" in client.get(f"/checkout/payments/{payment_id}/panel").get_data(as_text=True)


def test_no_card_payment_is_a_dead_end_on_the_page(ctx, card_app, buyer, published_product):
    """A card payment an app opened through the API (a PaymentIntent, for Stripe.js in that app) offers to pay by
    card on Stripe's page instead."""
    api = card_app.test_client()
    order = api.post("/api/v1/orders", headers=buyer.headers,
                     json={"items": [{"product_id": published_product["id"]}]}).get_json()
    intent = api.post(f"/api/v1/orders/{order['id']}/payments", headers=buyer.headers,
                      json={"channel": "stripe"}).get_json()
    assert (intent["method"], intent["action"]["type"]) == (None, "client_secret")  # the API is unchanged
    from knowpay.payments.models import Payment

    with ctx.db.transaction() as session:
        # Real Stripe gives a new intent no redirect (the sandbox's is its own pay page): only Stripe.js confirms it.
        session.get(Payment, intent["id"]).channel_extra = {"intent_id": intent["channel_trade_no"]}

    page = card_app.test_client()
    sign_in(page, buyer.email)
    html = page.get(f"/checkout/payments/{intent['id']}").get_data(as_text=True)
    assert "无法在本页面完成银行卡支付" not in html  # "Card payments cannot be completed on this page yet"
    assert "改为在这里用银行卡支付" in html
    again = post_form(page, f"/checkout/orders/{order['id']}", {"channel": "stripe"})
    card_id = re.fullmatch(r"/checkout/payments/(pay_\w+)\?open=1", again.headers["Location"]).group(1)
    assert _method_of(ctx, card_id) == "checkout"
