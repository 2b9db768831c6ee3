"""The analytics dashboards in a real browser: ECharts draws every chart under the strict
Content-Security-Policy without one refusal or script error (tooltips included), and both dashboards
fit a 375 px phone screen."""

from __future__ import annotations

from knowpay.accounts import service as accounts
from knowpay.accounts.models import User
from knowpay.analytics.store import load_increment
from knowpay.catalog.models import Product
from knowpay.orders import service as orders
from knowpay.payments import service as payments
from knowpay.payments.capture import capture_payment
from tests.e2e.browser.forms import browser_sign_in

FITS = "document.documentElement.scrollWidth"


def _watch(page) -> list[str]:
    """Console errors and uncaught exceptions of `page` (a CSP refusal is a console error)."""
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    return problems


def _every_chart_drawn(page) -> int:
    charts = page.locator("[data-chart]").count()
    assert charts > 0
    page.wait_for_function(f"document.querySelectorAll('[data-chart][data-drawn] canvas').length >= {charts}")
    return charts


def _sell(site, product_id: str) -> None:
    """One paid order of the product (as the sandbox's notification would settle it), for the charts."""
    email = site.user("buyer")
    with site.app.app_context():
        with site.ctx.db.transaction() as session:
            buyer = accounts.find_user_by_email(session, email)
            order = orders.create_order(session, buyer=buyer, items=[orders.ItemRequest(product_id, 1)],
                                        coupon=None, ttl_seconds=900, clock=site.ctx.clock)
        paying = payments.create_payment(site.ctx, buyer=buyer, order_id=order.id,
                                         ask=payments.PaymentAsk(channel="sandbox"))
        with site.ctx.db.transaction() as session:
            capture_payment(session, paying.id, channel_trade_no=f"T{paying.id[-12:]}", ctx=site.ctx)


def _seller(site, product_id: str) -> str:
    with site.ctx.db.transaction(write=False) as session:
        return session.get(User, session.get(Product, product_id).creator_id).email


def test_both_dashboards_draw_their_charts_under_the_csp_and_fit_a_phone(site, phone, desktop, screenshots):
    product_id = site.product("数据分析入门课", 9900)
    page = phone.new_page()
    for _ in range(3):
        page.goto(f"/products/{product_id}")  # views, for the funnel
    _sell(site, product_id)
    with site.app.app_context():
        load_increment(site.ctx, blocking=True)

    problems = _watch(page)
    browser_sign_in(page, site.user("admin"), site.password)
    page.goto("/admin")
    page.click("nav.area-nav >> text=数据分析")
    page.wait_for_url("**/admin/analytics")
    assert page.inner_text("h1") == "支付数据分析"
    assert _every_chart_drawn(page) >= 12
    # Nothing sold as memberships or coins: those panels say so in words, not with empty axes.
    assert page.inner_text("#panel-mrr .empty") == "这段时间没有数据。"
    page.locator("[data-chart=gmv]").hover()  # a tooltip, drawn on the canvas
    page.locator("[data-chart=heatmap]").scroll_into_view_if_needed()
    page.locator("[data-chart=heatmap]").hover()
    page.screenshot(path=screenshots / "phone-admin-analytics.png", full_page=True)
    assert page.evaluate(FITS) <= 375
    assert problems == []
    page.goto("/admin/analytics?from=2026-13-01")  # a bad date: named on the form, no charts
    assert page.get_attribute("#from", "aria-invalid") == "true" and page.locator("[data-chart]").count() == 0
    problems.clear()  # the browser reports the 400 answer itself as a console error

    page.context.clear_cookies()
    browser_sign_in(page, _seller(site, product_id), site.password)
    page.goto("/creator/analytics")
    assert page.inner_text("h1") == "我的销售分析"
    _every_chart_drawn(page)
    page.screenshot(path=screenshots / "phone-creator-analytics.png", full_page=True)
    assert page.evaluate(FITS) <= 375
    assert problems == []

    wide = desktop.new_page()
    wide_problems = _watch(wide)
    browser_sign_in(wide, site.user("admin"), site.password)
    wide.goto("/admin/analytics")
    _every_chart_drawn(wide)
    wide.locator("[data-chart=success_by_channel]").hover()
    wide.screenshot(path=screenshots / "desktop-admin-analytics.png", full_page=True)
    assert wide_problems == []
