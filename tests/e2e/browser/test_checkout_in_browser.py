"""A buyer on a phone: registers, buys a course on the sandbox pay page and watches the payment page
turn to success by itself; a declined payment shows the failed state with "try again"."""

from __future__ import annotations

import re

from tests.e2e.browser.forms import browser_sign_in

NO_RELOAD_MARK = "window.__knowpayStillHere"


def _open_sandbox_and(context, page, button: str) -> None:
    """Pay or decline on the sandbox pay page, as the buyer's other device would after scanning."""
    pay_url = page.get_attribute("[data-pay-link]", "href")
    assert pay_url and pay_url.startswith("http://127.0.0.1:")
    gateway = context.new_page()
    gateway.goto(pay_url)
    gateway.click(f"button.{button}")
    gateway.close()


def test_a_buyer_registers_buys_a_course_and_sees_success_without_reloading(site, phone, screenshots):
    product_id = site.product("摄影入门视频课", 4900)
    page = phone.new_page()
    page.goto(f"/products/{product_id}")
    assert page.inner_text("h1") == "摄影入门视频课"
    page.click("text=立即购买")

    page.wait_for_url(re.compile(r".*/account/login\?next=.*"))  # a stranger signs in first...
    page.click("text=注册账户")  # ...or, like this buyer, registers
    page.fill("#email", "ann@browser.example")
    page.fill("#password", site.password)
    page.fill("#password_confirm", site.password)
    page.screenshot(path=screenshots / "register-phone.png", full_page=True)
    page.click("#submit")

    page.wait_for_url(f"**/checkout/products/{product_id}")
    assert "¥49.00" in page.inner_text(".summary")
    page.check("#channel-sandbox")
    page.screenshot(path=screenshots / "checkout-phone.png", full_page=True)
    page.click("button:has-text('支付 ¥49.00')")

    page.wait_for_url(re.compile(r".*/checkout/payments/pay_\w+$"))
    assert page.is_visible("svg.qr")
    assert page.inner_text(".state-title") == "扫码支付"
    page.screenshot(path=screenshots / "payment-qr-phone.png", full_page=True)
    page.evaluate(f"{NO_RELOAD_MARK} = true")

    _open_sandbox_and(phone, page, "pay")

    page.wait_for_selector(".state-title:has-text('支付成功')", timeout=20_000)
    assert page.evaluate(NO_RELOAD_MARK) is True  # the same document: nobody reloaded it
    assert page.evaluate("document.activeElement.classList.contains('state-title')")  # focus follows
    page.screenshot(path=screenshots / "payment-success-phone.png", full_page=True)

    page.click("text=开始学习：打开已购内容")
    page.wait_for_url("**/me/library")
    assert "摄影入门视频课" in page.inner_text("main")


def test_a_payment_declined_on_the_sandbox_page_shows_the_failed_state(site, phone, screenshots):
    product_id = site.product("极简理财电子书", 2990, kind="ebook")
    page = phone.new_page()
    browser_sign_in(page, site.user(), site.password)
    page.goto(f"/checkout/products/{product_id}")
    page.check("#channel-sandbox")
    page.click("button:has-text('支付 ¥29.90')")
    page.wait_for_selector("svg.qr")
    page.evaluate(f"{NO_RELOAD_MARK} = true")

    _open_sandbox_and(phone, page, "decline")

    page.wait_for_selector(".state-title:has-text('支付失败')", timeout=20_000)
    assert page.evaluate(NO_RELOAD_MARK) is True
    assert "未扣款" in page.inner_text("#payment-panel")
    page.screenshot(path=screenshots / "payment-failed-phone.png", full_page=True)
    page.click("#payment-panel >> text=重试")
    page.wait_for_url(re.compile(r".*/checkout/orders/ord_\w+$"))
    assert page.is_enabled("#channel-sandbox")
