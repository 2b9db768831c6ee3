"""The language switch, a creator publishing and editing a product, and every main page fitting a 375 px
phone screen, in a real browser."""

from __future__ import annotations

from tests.e2e.browser.forms import browser_sign_in

FITS = "document.documentElement.scrollWidth"


def test_the_language_switch_changes_the_page(site, phone, screenshots):
    site.product("Python 数据分析实战课", 19900)
    page = phone.new_page()
    page.goto("/")
    assert page.get_attribute("html", "lang") == "zh-CN"
    assert page.inner_text("h1") == "向你信任的创作者学习"
    page.click("button:has-text('English')")
    page.wait_for_selector("html[lang='en']")
    assert page.inner_text("h1") == "Learn from creators you trust"
    assert page.get_attribute("button:has-text('English')", "aria-pressed") == "true"
    page.screenshot(path=screenshots / "catalog-english-phone.png", full_page=True)
    page.goto("/account/login")  # the choice holds on every page, Flask-Security's included
    assert page.inner_text("h1") == "Sign in"
    page.click("button:has-text('中文')")
    page.wait_for_selector("html[lang='zh-CN']")
    assert page.inner_text("h1") == "登录"


def test_a_creator_publishes_a_product(site, desktop, screenshots):
    page = desktop.new_page()
    browser_sign_in(page, site.user("creator"), site.password)
    page.click("nav.main-nav >> text=创作者中心")
    page.click("text=新建商品")
    page.fill("#title", "每日英语听力")
    page.select_option("#kind", "audio")
    page.fill("#price", "99")
    page.fill("#description", "每天 15 分钟，跟读地道英语。")
    page.screenshot(path=screenshots / "creator-new-product.png", full_page=True)
    page.click("button:has-text('保存草稿')")
    row = page.locator("li.row", has_text="每日英语听力")
    assert "草稿" in row.inner_text()
    row.locator("button:has-text('上架')").click()
    page.wait_for_selector("p.flash-success")
    assert "已上架" in page.locator("li.row", has_text="每日英语听力").inner_text()
    page.screenshot(path=screenshots / "creator-products.png", full_page=True)

    page.locator("li.row", has_text="每日英语听力").locator("a:has-text('编辑')").click()
    assert page.input_value("#price") == "99.00" and page.is_disabled("#kind")  # on sale: the kind stays
    page.fill("#price", "79")
    page.screenshot(path=screenshots / "creator-edit-product.png", full_page=True)
    page.click("button:has-text('保存修改')")
    page.wait_for_selector("p.flash-success")
    assert "¥79.00" in page.locator("li.row", has_text="每日英语听力").inner_text()

    page.goto("/")
    page.click("text=每日英语听力")
    assert page.inner_text("h1") == "每日英语听力"
    assert "¥79.00" in page.inner_text(".buy-box")


def test_main_pages_do_not_overflow_a_phone_screen(site, phone, screenshots):
    course = site.product("1 对 1 写作咨询 (60 分钟) —— 一个很长很长的商品标题用来检查换行", 50000, kind="consulting")
    page = phone.new_page()
    for name, path in (("home", "/"), ("product", f"/products/{course}"), ("sign-in", "/account/login"),
                       ("register", "/account/register")):
        page.goto(path)
        _fits(page, screenshots, name, path)

    admin_email = site.user("admin")
    browser_sign_in(page, site.user("buyer"), site.password)
    page.goto(f"/checkout/products/{course}")
    page.check("#channel-bank_transfer")
    page.click("button:has-text('支付 ¥500.00')")
    page.wait_for_selector(".reference")
    payment_page = page.url
    order_page = page.get_attribute("text=订单详情", "href")
    buyer_pages = [("checkout", f"/checkout/products/{course}"), ("bank-transfer", payment_page),
                   ("order", order_page)]
    buyer_pages += [(path.strip("/").replace("/", "-"), path) for path in (
        "/me", "/me/orders", "/me/payments", "/me/refunds", "/me/library", "/me/memberships", "/me/wallet",
        "/me/security", "/me/data")]
    for name, path in buyer_pages:
        page.goto(path)
        _fits(page, screenshots, name, path)

    page.context.clear_cookies()  # next: an admin, then a creator, on the same phone
    browser_sign_in(page, admin_email, site.password)
    for path in ("/admin", "/admin/orders", "/admin/payments", "/admin/refunds", "/admin/bank-transfers",
                 "/admin/payouts", "/admin/users", "/admin/reconciliation", "/admin/webhooks", "/admin/audit"):
        page.goto(path)
        _fits(page, screenshots, path.strip("/").replace("/", "-"), path)

    page.context.clear_cookies()
    browser_sign_in(page, site.user("creator"), site.password)
    for path in ("/creator", "/creator/products", "/creator/products/new", "/creator/sales", "/creator/earnings"):
        page.goto(path)
        _fits(page, screenshots, path.strip("/").replace("/", "-"), path)
    page.goto("/creator/products/new")
    page.fill("#title", "写作训练营")
    page.fill("#price", "199")
    page.click("button:has-text('保存草稿')")
    page.click("li.row >> text=编辑")
    _fits(page, screenshots, "creator-product-edit", page.url)


def _fits(page, screenshots, name: str, path: str) -> None:
    """The page is no wider than the phone (saved as phone-<name>.png to look at)."""
    width = page.evaluate(FITS)
    page.screenshot(path=screenshots / f"phone-{name}.png", full_page=True)
    assert width <= 375, f"{path} is {width}px wide on a 375px screen"
