"""Languages: Chinese by default, English from Accept-Language, and a switch remembered in a cookie."""

from __future__ import annotations

import re

import pytest

from tests.e2e.browser.forms import csrf_token, ensure_pages


@pytest.fixture(autouse=True)
def _pages(app):
    ensure_pages(app)


def _h1(html: str) -> str:
    return re.search(r"<h1[^>]*>(.*?)</h1>", html, re.DOTALL).group(1).strip()


def test_pages_are_in_chinese_by_default(client, published_product):
    page = client.get("/").get_data(as_text=True)
    assert 'lang="zh-CN"' in page and _h1(page) == "向你信任的创作者学习"


def test_a_browser_preferring_english_gets_english(client, published_product):
    page = client.get("/", headers={"Accept-Language": "en-GB,en;q=0.9,zh-CN;q=0.5"}).get_data(as_text=True)
    assert 'lang="en"' in page and _h1(page) == "Learn from creators you trust"
    assert "Course" in page and "¥99.00" in page
    chinese_first = client.get("/", headers={"Accept-Language": "zh-TW,zh;q=0.9,en;q=0.8"}).get_data(as_text=True)
    assert 'lang="zh-CN"' in chinese_first


def test_the_switch_remembers_the_choice_and_returns_to_the_page(client, published_product):
    token = csrf_token(client)
    path = f"/products/{published_product['id']}"
    answer = client.post("/locale", data={"locale": "en", "next": path, "csrf_token": token})
    assert answer.status_code == 303 and answer.headers["Location"] == path
    assert "knowpay_locale=en" in answer.headers["Set-Cookie"] and "HttpOnly" in answer.headers["Set-Cookie"]
    page = client.get(path, headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert 'lang="en"' in page and "Buy now" in page
    client.post("/locale", data={"locale": "zh_CN", "next": path, "csrf_token": token})
    assert "立即购买" in client.get(path).get_data(as_text=True)


def test_the_switch_never_sends_anyone_off_site(client):
    token = csrf_token(client)
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:alert(1)"):
        answer = client.post("/locale", data={"locale": "en", "next": target, "csrf_token": token})
        assert answer.headers["Location"] == "/", target


def test_flask_security_pages_follow_the_language(client):
    chinese = client.get("/account/login").get_data(as_text=True)
    assert "登录" in chinese and 'name="csrf_token"' in chinese
    english = client.get("/account/login", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "Sign in" in english and "Password" in english


def test_a_refused_registration_ties_the_reason_to_its_field(client):
    token = csrf_token(client, "/account/register")
    refused = client.post("/account/register", data={"email": "ann@example.com", "password": "iloveyou1",
                                                      "password_confirm": "iloveyou1", "csrf_token": token})
    html = refused.get_data(as_text=True)
    assert refused.status_code == 200
    assert 'aria-describedby="password-hint password-errors"' in html and 'aria-invalid="true"' in html
    assert 'id="password-errors"' in html
