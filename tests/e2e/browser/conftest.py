"""A real KnowPay for a real browser: the app on a SQLite file with the sandbox gateway beside it, both
served on free ports in this process, and Debian's chromium driven headless by Playwright.

The gateway notifies KnowPay over HTTP as it would on a developer's machine, so a buyer pays on the
sandbox pay page and watches the payment page change by itself. Alipay, WeChat Pay and Stripe are on too,
against the sandbox's imitations of them, for the phone flows (Alipay wap, WeChat Pay H5) and cards (Stripe
Checkout). Screenshots go to
test-output/screenshots/. The fixtures skip only when chromium is missing and cannot be installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from bench.harness import free_port
from knowpay.accounts import service as accounts
from knowpay.catalog import service as catalog
from knowpay.config import load_settings
from knowpay.context import Context
from knowpay.domain.states import ProductStatus
from knowpay.migrate import upgrade
from knowpay.sandbox.gateways import alipay as alipay_side
from knowpay.sandbox.gateways import stripe as stripe_side
from knowpay.sandbox.gateways import wechat as wechat_side
from tests.conftest import FAST_PASSWORDS
from tests.e2e.browser.forms import ensure_pages

ROOT = Path(__file__).resolve().parents[3]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = ROOT / "test-output" / "screenshots"
PASSWORD = "learn-well-2026"
PHONE = {"width": 375, "height": 812}
# Chromium keeps its desktop User-Agent even with is_mobile; KnowPay tells phones by it (wap, H5 flows).
PHONE_USER_AGENT = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
                    "Chrome/124.0.0.0 Mobile Safari/537.36")


def _chromium_reason() -> str | None:
    """None when chromium is there (scripts/browser-setup installs what is missing), else why not."""
    done = subprocess.run([str(ROOT / "scripts" / "browser-setup")], check=False, capture_output=True, text=True,
                          timeout=600)
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing and scripts/browser-setup could not install it: {done.stderr.strip()[-300:]}"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install playwright; no browser download is needed)"
    return None


@dataclass
class Site:
    """The running KnowPay (`url`) and sandbox gateway (`gateway_url`), and ways to set up data."""

    url: str
    gateway_url: str
    ctx: Context
    app: object
    password: str = PASSWORD
    counter: int = 0

    def user(self, role: str = "buyer") -> str:
        """A fresh account of this role; returns its e-mail (password PASSWORD)."""
        self.counter += 1
        email = f"{role}{self.counter}@browser.example"
        with self.app.app_context(), self.ctx.db.transaction() as session:
            accounts.register_user(session, email=email, password=PASSWORD, username=f"{role}{self.counter}",
                                   roles=(role,), clock=self.ctx.clock)
        return email

    def product(self, title: str, amount: int, kind: str = "course", **extra) -> str:
        """A published product of a fresh creator; returns its id."""
        creator_email = self.user("creator")
        with self.ctx.db.transaction() as session:
            creator = accounts.find_user_by_email(session, creator_email)
            made = catalog.create_product(session, creator=creator, title=title, kind=kind, amount=amount,
                                          currency="cny", description=f"{title}：从零开始，循序渐进。",
                                          clock=self.ctx.clock, **extra)
            catalog.change_status(session, made, ProductStatus.PUBLISHED, clock=self.ctx.clock)
            return made.id


class _Server(threading.Thread):
    def __init__(self, app, port: int) -> None:
        super().__init__(daemon=True)
        self.server = make_server("127.0.0.1", port, app, threaded=True)

    def run(self) -> None:
        self.server.serve_forever()

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="session")
def chromium_ready() -> None:
    reason = _chromium_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def site(tmp_path_factory, chromium_ready) -> Iterator[Site]:
    from knowpay.sandbox.app import create_sandbox_app
    from knowpay.web import create_app

    folder = tmp_path_factory.mktemp("browser-site")
    web_port, gateway_port = free_port(), free_port()
    database_url = f"sqlite:///{folder / 'knowpay.sqlite3'}"
    upgrade(database_url)
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    settings = load_settings({
        "KNOWPAY_DATABASE_URL": database_url, "KNOWPAY_INSTANCE_PATH": str(folder),
        "KNOWPAY_BASE_URL": f"http://127.0.0.1:{web_port}",
        "KNOWPAY_SANDBOX_URL": gateway_url, "KNOWPAY_REDIS_URL": "",
        # Alipay, WeChat Pay and Stripe too, talking to the sandbox's imitations as `knowpay demo` wires them.
        **alipay_side.demo_env(folder, gateway_url), **wechat_side.demo_env(folder, gateway_url),
        **stripe_side.demo_env(folder, {"KNOWPAY_SANDBOX_URL": gateway_url}),
    })
    app = ensure_pages(create_app(settings, config=FAST_PASSWORDS))
    gateway = create_sandbox_app(settings)
    servers = [_Server(app, web_port), _Server(gateway, gateway_port)]
    for server in servers:
        server.start()
    yield Site(url=f"http://127.0.0.1:{web_port}", gateway_url=gateway_url,
               ctx=app.extensions["knowpay"], app=app)
    for server in servers:
        server.stop()
    gateway.extensions["sandbox"].notifier.stop()
    app.extensions["knowpay"].db.dispose()


@pytest.fixture(scope="session")
def browser(chromium_ready) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)
    return SCREENSHOTS


@pytest.fixture
def phone(browser, site) -> Iterator[object]:
    """A phone (375×812, touch, an Android phone's User-Agent) reading Chinese, with a fresh cookie jar."""
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True,
                                  user_agent=PHONE_USER_AGENT, locale="zh-CN", base_url=site.url)
    context.set_default_timeout(15_000)
    yield context
    context.close()


@pytest.fixture
def desktop(browser, site) -> Iterator[object]:
    """A desktop browser (1280×800) reading Chinese, with a fresh cookie jar."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN", base_url=site.url)
    context.set_default_timeout(15_000)
    yield context
    context.close()
