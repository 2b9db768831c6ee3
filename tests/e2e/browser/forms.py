"""Filling in KnowPay's pages from tests: the CSRF token every form carries, and signing in through
Flask-Security's form. Shared by the test-client page tests and the browser tests."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient

_TOKEN = re.compile(r'name="csrf_token"(?: type="hidden")? value="([^"]+)"')


def ensure_pages(app: Flask) -> Flask:
    """The app with its pages: create_app registers them; an app built before that line was wired in
    gets them here, before its first request."""
    if "checkout" not in app.blueprints:
        from knowpay.web.views import register_views

        register_views(app)
    return app


def csrf_token(client: FlaskClient, path: str = "/") -> str:
    """The CSRF token of this client's session, read from a page's form."""
    page = client.get(path)
    found = _TOKEN.search(page.get_data(as_text=True))
    assert found, f"no CSRF token on {path}"
    return found.group(1)


def post_form(client: FlaskClient, path: str, data: dict | None = None, **kwargs):
    """POST a form as a browser would: with this session's CSRF token."""
    return client.post(path, data={"csrf_token": csrf_token(client), **(data or {})}, **kwargs)


def sign_in(client: FlaskClient, email: str, password: str = "correct-horse-9"):
    """Sign in through the sign-in page; returns its answer (a redirect when it worked)."""
    token = csrf_token(client, "/account/login")
    answer = client.post("/account/login", data={"email": email, "password": password, "csrf_token": token})
    assert answer.status_code in (302, 303), answer.get_data(as_text=True)[:500]
    return answer


def browser_sign_in(page, email: str, password: str) -> None:
    """Sign in through the sign-in page in a Playwright page; it lands in the buyer centre."""
    page.goto("/account/login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#submit")
    page.wait_for_url("**/me")
