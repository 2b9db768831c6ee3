"""A buyer inside WeChat's browser (MicroMessenger User-Agent, 375×812): the checkout learns the openid through
the sandbox's silent web authorisation, and WeChat Pay opens on the payment page (JSAPI), whose status turns to
success by itself.

A real browser has no WeixinJSBridge: WeChat's browser provides it. So the test plays WeChat here, and only
here: an init script puts a stand-in bridge on every page of the context, and the WeChat app behind it (the
exposed `wechatApp`) sends the page's parameters to the sandbox's JSAPI confirmation, which checks them as
WeChat does and pays. KnowPay's pages load nothing of this; without the stand-in they fall back to a QR code.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import requests

from tests.e2e.browser.conftest import PHONE
from tests.e2e.browser.forms import browser_sign_in
from tests.unit.test_mobile_checkout import WECHAT

FITS = "document.documentElement.scrollWidth"
# What WeChat's browser injects, late, announcing it with WeixinJSBridgeReady; the cashier is the test's.
STAND_IN_BRIDGE = """
document.addEventListener("DOMContentLoaded", function () {
  window.WeixinJSBridge = {
    invoke: function (name, params, callback) {
      window.wechatApp(name, params).then(callback);
    }
  };
  document.dispatchEvent(new Event("WeixinJSBridgeReady"));
});
"""


class WeChatApp:
    """The WeChat app behind the stand-in bridge: the buyer's choices in its cashier, played in order."""

    def __init__(self, gateway_url: str, choices: list[str]) -> None:
        self.gateway_url = gateway_url
        self.choices = choices
        self.asked: list[tuple[str, dict]] = []
        self.answers: list[str] = []

    def __call__(self, name: str, params: dict) -> dict:
        self.asked.append((name, params))
        answer = requests.post(f"{self.gateway_url}/wechat/jsapi/confirm", timeout=5,
                               json={**params, "result": self.choices.pop(0)}).json()
        self.answers.append(answer["err_msg"])
        return answer


@pytest.fixture
def in_wechat(browser, site) -> Iterator[object]:
    """A phone inside WeChat's browser, reading Chinese, with a fresh cookie jar (and so a fresh WeChat user
    at the sandbox)."""
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True,
                                  user_agent=WECHAT, locale="zh-CN", base_url=site.url)
    context.set_default_timeout(15_000)
    yield context
    context.close()


def _checkout(site, context, title: str, amount: int):
    page = context.new_page()
    browser_sign_in(page, site.user(), site.password)
    product_id = site.product(title, amount)
    page.goto(f"/checkout/products/{product_id}")  # → the sandbox's WeChat authorisation → back, silently
    page.wait_for_url(f"{site.url}/checkout/products/{product_id}*")
    return page


def test_inside_wechat_wechat_pay_opens_in_the_page_and_the_page_turns_to_success(site, in_wechat, screenshots):
    app = WeChatApp(site.gateway_url, ["pay"])
    in_wechat.expose_function("wechatApp", app)
    in_wechat.add_init_script(STAND_IN_BRIDGE)
    page = _checkout(site, in_wechat, "微信里学写作", 1290)
    assert page.inner_text("#channel-wechat-note") == "在微信内直接支付，无需离开本页。"
    page.check("#channel-wechat")
    assert page.evaluate(FITS) <= 375
    page.screenshot(path=screenshots / "wechat-checkout-jsapi.png", full_page=True)
    page.click("button:has-text('支付 ¥12.90')")

    page.wait_for_selector(".state-title:has-text('支付成功')", timeout=20_000)  # no reload
    assert app.answers == ["get_brand_wcpay_request:ok"]
    [(name, params)] = app.asked
    assert name == "getBrandWCPayRequest" and params["package"].startswith("prepay_id=")
    assert re.search(r"/checkout/payments/pay_\w+$", page.url)  # ?open=1 dropped: a reload asks nothing
    assert page.evaluate(FITS) <= 375
    page.screenshot(path=screenshots / "wechat-jsapi-success.png", full_page=True)


def test_leaving_wechats_cashier_says_so_and_the_button_pays_again(site, in_wechat, screenshots):
    app = WeChatApp(site.gateway_url, ["cancel", "pay"])
    in_wechat.expose_function("wechatApp", app)
    in_wechat.add_init_script(STAND_IN_BRIDGE)
    page = _checkout(site, in_wechat, "微信里学摄影", 990)
    page.check("#channel-wechat")
    page.click("button:has-text('支付 ¥9.90')")

    page.wait_for_selector("[data-jsapi-said='cancel']:visible")
    assert page.inner_text(".state-title") == "使用微信支付"
    assert page.is_visible("form[data-jsapi-fallback] button")  # a QR code is still one tap away
    page.screenshot(path=screenshots / "wechat-jsapi-cancelled.png", full_page=True)
    page.click("[data-jsapi-pay]")
    page.wait_for_selector(".state-title:has-text('支付成功')", timeout=20_000)
    assert app.answers == ["get_brand_wcpay_request:cancel", "get_brand_wcpay_request:ok"]


def test_without_wechats_bridge_the_page_falls_back_to_a_qr_code(site, in_wechat, screenshots):
    page = _checkout(site, in_wechat, "微信里学理财", 1990)
    page.check("#channel-wechat")
    page.click("button:has-text('支付 ¥19.90')")
    page.wait_for_selector("svg.qr", timeout=20_000)  # the bridge never came: the QR code instead
    assert page.inner_text(".state-title") == "请使用微信扫码支付"
    page.screenshot(path=screenshots / "wechat-jsapi-fallback-qr.png", full_page=True)
