"""Flask-Security's account pages: CSRF on every form post, cookies and security headers, sign-in
with two-factor and the lockout, registration and password-reset mail to the instance folder."""

from __future__ import annotations

import re

import pytest

from knowpay.accounts import totp
from knowpay.accounts.mail import FileMailer
from knowpay.channels import Registry
from knowpay.config import LockoutPolicy, load_settings
from knowpay.web import create_app
from tests.conftest import FAST_PASSWORDS

PASSWORD = "correct-horse-9"


@pytest.fixture
def database_url(sqlite_url):
    # Pages and cookies behave the same on either database; SQLite keeps this file quick.
    return sqlite_url


@pytest.fixture
def app(settings, db, fake_channel, clock):
    settings = settings.with_overrides(lockout=LockoutPolicy(threshold=3, ip_threshold=100))
    return create_app(settings, db=db, clock=clock, config={"TESTING": True, **FAST_PASSWORDS},
                      channels=Registry({"sandbox": fake_channel}))


def csrf_token(client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.status_code
    found = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.get_data(as_text=True))
    assert found, "the form carries a CSRF token"
    return found.group(1)


def mails(app) -> list:
    mailer = app.extensions["knowpay_mailer"]
    assert isinstance(mailer, FileMailer)
    return mailer.messages() if mailer.folder.exists() else []


def link_in(message, path: str) -> str:
    text = message.get_body(("plain",)).get_content()
    found = re.search(rf"https?://[^/\s]+({re.escape(path)}[^\s\"<]+)", text)
    assert found, text
    return found.group(1)


def test_a_form_post_without_the_csrf_token_is_400_and_the_api_needs_none(client, buyer):
    refused = client.post("/account/login", data={"email": buyer.email, "password": PASSWORD})
    assert refused.status_code == 400
    assert b"CSRF" in refused.data
    assert client.post("/account/logout").status_code == 400
    assert client.post("/account/reset", data={"email": buyer.email}).status_code == 400
    # Token-authenticated API calls and channel notifications carry no CSRF token.
    assert client.post("/api/v1/auth/token", json={"email": buyer.email, "password": PASSWORD}).status_code == 200
    assert client.post("/notify/sandbox", data=b"{}").status_code == 400  # refused by its signature check, not CSRF


def test_signing_in_on_the_page_sets_a_locked_down_session_cookie(client, buyer):
    token = csrf_token(client, "/account/login")
    signed_in = client.post("/account/login", data={"email": buyer.email, "password": PASSWORD, "csrf_token": token})
    assert signed_in.status_code == 302, signed_in.get_data(as_text=True)
    cookie = next(c for c in signed_in.headers.getlist("Set-Cookie") if c.startswith("knowpay_session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert client.get("/account/change").status_code == 200


def test_security_headers_are_on_pages_api_answers_and_errors(client):
    for path in ("/account/login", "/api/v1/products", "/api/v1/nothing-here", "/healthz"):
        headers = client.get(path).headers
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
        assert "Strict-Transport-Security" not in headers  # development serves plain HTTP
    assert client.post("/api/v1/auth/token", json={"email": "x@example.com", "password": "x"}) \
        .headers["Cache-Control"] == "no-store"


def test_production_adds_hsts_and_secure_host_only_cookies(tmp_path, db):
    settings = load_settings({
        "KNOWPAY_ENV": "production", "KNOWPAY_DATABASE_URL": db.url, "KNOWPAY_INSTANCE_PATH": str(tmp_path),
        "KNOWPAY_SECRET_KEY": "p" * 40, "KNOWPAY_BASE_URL": "https://pay.example.com",
        "KNOWPAY_ENCRYPTION_KEYS": "k1:" + "A" * 43 + "=",
    })
    app = create_app(settings, db=db, config={"TESTING": True, **FAST_PASSWORDS})
    client = app.test_client()
    page = client.get("/account/login", base_url="https://pay.example.com")
    assert page.headers["Strict-Transport-Security"].startswith("max-age=")
    cookie = next(c for c in page.headers.getlist("Set-Cookie") if c.startswith("__Host-knowpay="))
    assert "Secure" in cookie and "HttpOnly" in cookie
    # Another Host header could put its name into mailed links: refused.
    assert client.get("/account/login", base_url="https://evil.example.net").status_code == 400


def test_the_sign_in_page_asks_for_the_second_factor_and_counts_failures(client, buyer, clock):
    setup = client.post("/api/v1/me/2fa/setup", headers=buyer.headers).get_json()
    client.post("/api/v1/me/2fa/confirm", headers=buyer.headers,
                json={"otp": totp.current_code(setup["secret"], clock)})
    clock.advance(seconds=30)
    page = client.application.test_client()
    first = page.post("/account/login", data={"email": buyer.email, "password": PASSWORD,
                                              "csrf_token": csrf_token(page, "/account/login")})
    assert first.status_code == 302 and "/account/tf-validate" in first.headers["Location"]
    token = csrf_token(page, "/account/tf-validate")
    assert page.post("/account/tf-validate", data={"code": "000000", "csrf_token": token}).status_code == 200
    assert page.get("/account/change").status_code != 200  # not signed in
    done = page.post("/account/tf-validate", data={"code": totp.current_code(setup["secret"], clock),
                                                   "csrf_token": token})
    assert done.status_code == 302, done.get_data(as_text=True)
    assert page.get("/account/change").status_code == 200


def test_wrong_passwords_on_the_page_lock_the_api_too(client, buyer):
    page = client.application.test_client()
    token = csrf_token(page, "/account/login")
    for _ in range(3):
        wrong = page.post("/account/login", data={"email": buyer.email, "password": "wrong-password-1",
                                                  "csrf_token": token})
        assert wrong.status_code == 200  # the form again, with an error
    locked = page.post("/account/login", data={"email": buyer.email, "password": PASSWORD, "csrf_token": token})
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    api = client.post("/api/v1/auth/token", json={"email": buyer.email, "password": PASSWORD})
    assert api.status_code == 429 and api.get_json()["error"]["type"] == "rate_limited"


def test_registering_on_the_page_refuses_a_listed_password_and_mails_a_confirmation_link(app, client, db):
    token = csrf_token(client, "/account/register")
    weak = client.post("/account/register", data={"email": "ann@example.com", "password": "iloveyou1",
                                                   "password_confirm": "iloveyou1", "csrf_token": token})
    assert weak.status_code == 200 and b"too common" in weak.data
    done = client.post("/account/register", data={"email": "ann@example.com", "password": PASSWORD,
                                                   "password_confirm": PASSWORD, "csrf_token": token})
    assert done.status_code == 302, done.get_data(as_text=True)
    [welcome] = mails(app)
    assert welcome["To"] == "ann@example.com"
    confirm = link_in(welcome, "/account/confirm/")
    assert client.get(confirm).status_code == 302
    api = client.post("/api/v1/auth/token", json={"email": "ann@example.com", "password": PASSWORD})
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {api.get_json()['access_token']}"})
    assert me.get_json()["roles"] == ["buyer"]


def test_api_registration_mails_a_confirmation_link_after_the_commit(app, client):
    made = client.post("/api/v1/auth/register", json={"email": "bo@example.com", "password": PASSWORD,
                                                       "username": "bo"})
    assert made.status_code == 201
    [message] = mails(app)
    assert message["To"] == "bo@example.com" and "/account/confirm/" in message.get_body(("plain",)).get_content()
    refused = client.post("/api/v1/auth/register", json={"email": "cy@example.com", "password": "password123",
                                                          "username": "cy"})
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "password_too_weak"
    assert len(mails(app)) == 1


def test_a_password_reset_by_mail_applies_the_policy_and_revokes_api_tokens(app, client, buyer):
    client.post("/account/reset", data={"email": buyer.email, "csrf_token": csrf_token(client, "/account/reset")})
    [message] = mails(app)
    reset = link_in(message, "/account/reset/")
    token = csrf_token(client, reset)
    weak = client.post(reset, data={"password": "qwertyuiop", "password_confirm": "qwertyuiop", "csrf_token": token})
    assert weak.status_code == 200 and b"too common" in weak.data
    done = client.post(reset, data={"password": "a-new-long-one-7", "password_confirm": "a-new-long-one-7",
                                    "csrf_token": token})
    assert done.status_code == 302, done.get_data(as_text=True)
    assert client.get("/api/v1/me", headers=buyer.headers).status_code == 401
    assert client.post("/api/v1/auth/token", json={"email": buyer.email, "password": "a-new-long-one-7"}) \
        .status_code == 200


def test_changing_the_password_over_the_api_keeps_this_token_and_revokes_the_others(client, buyer):
    other = client.post("/api/v1/auth/token", json={"email": buyer.email, "password": PASSWORD}).get_json()
    weak = client.post("/api/v1/me/password", headers=buyer.headers,
                       json={"current_password": PASSWORD, "new_password": "Password1!"})
    assert weak.status_code == 400 and weak.get_json()["error"]["param"] == "password"
    wrong = client.post("/api/v1/me/password", headers=buyer.headers,
                        json={"current_password": "not-it-at-all", "new_password": "a-new-long-one-7"})
    assert wrong.status_code == 401 and wrong.get_json()["error"]["code"] == "invalid_credentials"
    changed = client.post("/api/v1/me/password", headers=buyer.headers,
                          json={"current_password": PASSWORD, "new_password": "a-new-long-one-7"})
    assert changed.status_code == 200 and changed.get_json() == {"revoked": 1}
    assert client.get("/api/v1/me", headers=buyer.headers).status_code == 200
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {other['access_token']}"}).status_code == 401
