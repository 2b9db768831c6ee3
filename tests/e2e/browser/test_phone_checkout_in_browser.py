"""A buyer on a phone (375×812): Alipay opens its wap cashier and WeChat Pay its H5 cashier instead of a QR
code the phone cannot scan; the buyer comes back to a page that turns to success by itself."""

from __future__ import annotations

import re

from tests.e2e.browser.forms import browser_sign_in

FITS = "document.documentElement.scrollWidth"


def _checkout(site, phone, title: str, amount: int):
    page = phone.new_page()
    browser_sign_in(page, site.user(), site.password)
    page.goto(f"/checkout/products/{site.product(title, amount)}")
    return page


def test_alipay_on_a_phone_pays_on_the_wap_cashier_and_the_waiting_page_turns_to_success(site, phone,
                                                                                         screenshots):
    page = _checkout(site, phone, "手机摄影 21 天", 1990)
    assert page.inner_text("#channel-alipay-note") == "在手机上打开支付宝付款。"
    page.check("#channel-alipay")
    assert page.evaluate(FITS) <= 375
    page.screenshot(path=screenshots / "phone-checkout-alipay.png", full_page=True)
    page.click("button:has-text('支付 ¥19.90')")

    page.wait_for_url(f"{site.gateway_url}/pay/**")  # Alipay's wap cashier (the sandbox's)
    payment_id = re.search(r"pay_\w+", page.inner_text("dl")).group(0)
    waiting = phone.new_page()  # the buyer's other tab: KnowPay's page for this payment
    waiting.goto(f"/checkout/payments/{payment_id}")
    assert waiting.inner_text(".state-title") == "继续支付"
    assert waiting.is_visible("form.switch-to-qr button") and waiting.evaluate(FITS) <= 375
    waiting.screenshot(path=screenshots / "phone-payment-wap-waiting.png", full_page=True)

    page.click("button.pay")
    page.click("text=返回商户")  # Alipay's return_url: KnowPay's payment page
    page.wait_for_url(f"**/checkout/payments/{payment_id}")
    page.wait_for_selector(".state-title:has-text('支付成功')", timeout=20_000)
    waiting.wait_for_selector(".state-title:has-text('支付成功')", timeout=20_000)  # without a reload
    page.screenshot(path=screenshots / "phone-payment-wap-success.png", full_page=True)


def test_wechat_on_a_phone_pays_on_the_h5_cashier_which_sends_the_buyer_back(site, phone, screenshots):
    page = _checkout(site, phone, "每日英语听力", 990)
    page.check("#channel-wechat")
    page.click("button:has-text('支付 ¥9.90')")
    page.wait_for_url(f"{site.gateway_url}/pay/**")
    page.click("button.pay")  # the H5 cashier returns the buyer to redirect_url by itself
    page.wait_for_url(re.compile(r".*/checkout/payments/pay_\w+$"))
    page.wait_for_selector(".state-title:has-text('支付成功')", timeout=20_000)
    page.screenshot(path=screenshots / "phone-payment-h5-success.png", full_page=True)


def test_a_phone_buyer_can_still_choose_a_qr_code(site, phone, screenshots):
    page = _checkout(site, phone, "极简理财电子书", 2990)
    page.check("#channel-wechat")
    page.check("#pay-by-qr")
    page.click("button:has-text('支付 ¥29.90')")
    page.wait_for_selector("svg.qr")
    assert page.inner_text(".state-title") == "请使用微信扫码支付"
    page.screenshot(path=screenshots / "phone-payment-qr-by-choice.png", full_page=True)
