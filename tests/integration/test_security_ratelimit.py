"""Rate limits on sign-in, registration, password reset, orders and payments: 429 with Retry-After and
the API error JSON, counted per address or per caller, in memory or shared through Redis."""

from __future__ import annotations

import re
import uuid

import pytest
import redis

from knowpay.channels import Registry
from knowpay.config import DEFAULT_RATE_LIMITS
from knowpay.security.ratelimit import LIMITED_ENDPOINTS
from knowpay.web import create_app
from tests.conftest import FAST_PASSWORDS
from tests.e2e.browser.forms import post_form, sign_in

PASSWORD = "correct-horse-9"
LOW = {**DEFAULT_RATE_LIMITS, "token": "3/minute", "register": "2/minute", "password_reset": "1/minute",
       "orders": "2/minute", "payments": "1/minute"}


@pytest.fixture
def database_url(sqlite_url):
    return sqlite_url


@pytest.fixture
def settings(settings):
    return settings.with_overrides(rate_limits=LOW)


@pytest.fixture
def app(settings, db, fake_channel):
    return create_app(settings, db=db, config={"TESTING": True, **FAST_PASSWORDS},
                      channels=Registry({"sandbox": fake_channel}))


def assert_limited(response) -> None:
    assert response.status_code == 429, response.get_data(as_text=True)
    assert 0 < int(response.headers["Retry-After"]) <= 60
    if response.is_json:
        error = response.get_json()["error"]
        assert (error["type"], error["code"]) == ("rate_limited", "rate_limited")
        assert error["message"]


def test_every_limited_endpoint_exists(app):
    assert set(LIMITED_ENDPOINTS) <= set(app.view_functions), set(LIMITED_ENDPOINTS) - set(app.view_functions)


def test_the_token_endpoint_allows_so_many_attempts_a_minute_per_address(client, buyer):
    for _ in range(3):
        assert client.post("/api/v1/auth/token", json={"email": buyer.email, "password": PASSWORD}).status_code == 200
    assert_limited(client.post("/api/v1/auth/token", json={"email": buyer.email, "password": PASSWORD}))
    # Another address is counted apart.
    elsewhere = client.post("/api/v1/auth/token", json={"email": buyer.email, "password": PASSWORD},
                            environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert elsewhere.status_code == 200


def test_registration_is_limited(client):
    for n in range(2):
        made = client.post("/api/v1/auth/register", json={"email": f"r{n}@example.com", "password": PASSWORD,
                                                           "username": f"r{n}"})
        assert made.status_code == 201, made.get_json()
    assert_limited(client.post("/api/v1/auth/register", json={"email": "r9@example.com", "password": PASSWORD,
                                                               "username": "r9"}))


def test_orders_and_payments_are_limited_per_caller(client, make_user, published_product):
    first, second = make_user("buyer"), make_user("buyer")
    item = {"items": [{"product_id": published_product["id"]}]}
    orders = [client.post("/api/v1/orders", headers=first.headers, json=item) for _ in range(2)]
    assert [o.status_code for o in orders] == [201, 201]
    assert_limited(client.post("/api/v1/orders", headers=first.headers, json=item))
    assert client.post("/api/v1/orders", headers=second.headers, json=item).status_code == 201
    assert client.get("/api/v1/orders", headers=first.headers).status_code == 200  # reading is not limited
    order_id = orders[0].get_json()["id"]
    assert client.post(f"/api/v1/orders/{order_id}/payments", headers=first.headers,
                       json={"channel": "sandbox"}).status_code == 201
    assert_limited(client.post(f"/api/v1/orders/{orders[1].get_json()['id']}/payments", headers=first.headers,
                               json={"channel": "sandbox"}))


def test_password_reset_requests_are_limited_and_pages_are_not(client, buyer):
    page = client.get("/account/reset")
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    for _ in range(5):
        assert client.get("/account/reset").status_code == 200
    assert client.post("/account/reset", data={"email": buyer.email, "csrf_token": token}).status_code in (200, 302)
    limited = client.post("/account/reset", data={"email": buyer.email, "csrf_token": token})
    assert_limited(limited)
    assert limited.mimetype == "text/html" and "尝试次数过多" in limited.get_data(as_text=True)


def test_checkout_pages_share_the_callers_order_limit_with_the_api(client, buyer, published_product):
    assert client.post("/api/v1/orders", headers=buyer.headers,
                       json={"items": [{"product_id": published_product["id"]}]}).status_code == 201
    sign_in(client, buyer.email)
    start = f"/checkout/products/{published_product['id']}"
    assert post_form(client, start, {"channel": "sandbox"}).status_code == 303
    limited = post_form(client, start, {"channel": "sandbox"})
    assert_limited(limited)
    assert limited.mimetype == "text/html" and "请等待" in limited.get_data(as_text=True)


def test_with_redis_every_worker_shares_the_counts(settings, db):
    url = "redis://127.0.0.1:6379/15"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    shared = settings.with_overrides(redis_url=url)
    config = {"TESTING": True, **FAST_PASSWORDS, "RATELIMIT_KEY_PREFIX": f"test-{uuid.uuid4().hex}"}
    workers = [create_app(shared, db=db, config=config).test_client() for _ in range(2)]
    body = {"email": "nobody@example.com", "password": "wrong-password-1"}
    answers = [workers[n % 2].post("/api/v1/auth/token", json=body).status_code for n in range(4)]
    assert answers == [401, 401, 401, 429]
