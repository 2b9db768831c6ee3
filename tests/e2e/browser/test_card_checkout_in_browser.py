"""Paying by card: KnowPay's page opens Stripe's hosted Checkout page (the sandbox's imitation of it), the
buyer pays there, comes back to KnowPay's payment page and sees it turn to success by itself (Stripe's signed
checkout.session.completed reaches /notify/stripe); a declined card comes back to the failed state."""

from __future__ import annotations

import re

from tests.e2e.browser.forms import browser_sign_in

FITS = "document.documentElement.scrollWidth"


def _to_stripe_checkout(site, context, title: str, amount: int, price: str):
    """Sign in, choose the card on the order summary → the page, now on the hosted Checkout page."""
    page = context.new_page()
    browser_sign_in(page, site.user(), site.password)
    page.goto(f"/checkout/products/{site.product(title, amount)}")
    assert page.inner_text("#channel-stripe-note") == "在 Stripe 的安全页面上输入银行卡信息。"
    page.check("#channel-stripe")
    page.click(f"button:has-text('支付 {price}')")
    # KnowPay's payment page opens the hosted page at once (the CSP keeps forms on KnowPay's own origin).
    page.wait_for_url(f"{site.gateway_url}/pay/**")
    return page


def test_a_card_is_paid_on_stripe_checkout_and_the_page_turns_to_success(site, desktop, screenshots):
    page = _to_stripe_checkout(site, desktop, "数据分析实战", 15900, "¥159.00")
    assert "¥159.00" in page.inner_text(".amount")
    payment_id = re.search(r"pay_\w+", page.url).group(0)  # success_url names the payment
    page.screenshot(path=screenshots / "card-stripe-checkout.png", full_page=True)

    page.click("button.pay")
    page.wait_for_url(f"**/checkout/payments/{payment_id}")  # Stripe's success_url
    page.wait_for_selector(".state-title:has-text('支付成功')", timeout=20_000)
    page.screenshot(path=screenshots / "card-payment-success.png", full_page=True)


def test_a_card_declined_on_stripe_checkout_shows_the_failed_state_on_a_phone(site, phone, screenshots):
    page = _to_stripe_checkout(site, phone, "英语口语 30 天", 3900, "¥39.00")
    page.click("button.decline")
    page.wait_for_url(re.compile(r".*/checkout/payments/pay_\w+$"))
    page.wait_for_selector(".state-title:has-text('支付失败')", timeout=20_000)
    assert page.evaluate(FITS) <= 375
    page.screenshot(path=screenshots / "card-payment-declined-phone.png", full_page=True)
