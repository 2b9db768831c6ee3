"""The creator centre over the Flask test client: products (create, publish, archive), sales,
earnings, the payout account and payout requests."""

from __future__ import annotations

import re

import pytest

from tests.e2e.browser.forms import ensure_pages, post_form, sign_in


@pytest.fixture(autouse=True)
def _pages(app):
    ensure_pages(app)


@pytest.fixture
def creator_client(app, creator):
    client = app.test_client()
    sign_in(client, creator.email)
    return client


def test_only_creators_open_the_creator_centre(app, buyer):
    client = app.test_client()
    sign_in(client, buyer.email)
    answer = client.get("/creator/products")
    assert answer.status_code == 403 and "无权访问" in answer.get_data(as_text=True)
    assert "/creator" not in client.get("/me").get_data(as_text=True)  # not in the menu either


def test_a_creator_makes_a_draft_then_publishes_and_archives_it(client, creator_client):
    made = post_form(creator_client, "/creator/products/new",
                     {"title": "写作训练营", "kind": "course", "price": "199", "description": "21 天",
                      "refund_window_days": "3"})
    assert made.status_code == 303
    product_id = made.headers["Location"].rsplit("#", 1)[-1]
    listing = creator_client.get("/creator/products").get_data(as_text=True)
    assert "写作训练营" in listing and "¥199.00" in listing and "草稿" in listing
    assert client.get(f"/products/{product_id}").status_code == 404  # a draft is not public

    assert post_form(creator_client, f"/creator/products/{product_id}/publish").status_code == 303
    assert "已上架" in creator_client.get("/creator/products").get_data(as_text=True)
    public = client.get(f"/products/{product_id}").get_data(as_text=True)
    assert "写作训练营" in public and "购买后 3 天内可申请退款" in public

    assert post_form(creator_client, f"/creator/products/{product_id}/archive").status_code == 303
    assert "已下架" in creator_client.get("/creator/products").get_data(as_text=True)


def test_the_product_form_names_the_fields_at_fault(creator_client):
    answer = post_form(creator_client, "/creator/products/new", {"title": "", "kind": "course", "price": "9.999"})
    html = answer.get_data(as_text=True)
    assert answer.status_code == 400
    assert 'id="price" name="price"' in html and "请输入价格" in html and 'aria-invalid="true"' in html
    no_coins = post_form(creator_client, "/creator/products/new", {"title": "Coins", "kind": "coin_pack", "price": "10"})
    assert no_coins.status_code == 400 and "知识币套餐需要填写" in no_coins.get_data(as_text=True)
    membership = post_form(creator_client, "/creator/products/new",
                           {"title": "Club", "kind": "membership", "price": "30", "interval": "month",
                            "interval_count": "1"})
    assert membership.status_code == 303


def test_another_creators_product_cannot_be_published(app, creator_client, make_user, published_product):
    other = app.test_client()
    sign_in(other, make_user("creator").email)
    assert post_form(other, f"/creator/products/{published_product['id']}/archive").status_code == 404


def test_sales_and_earnings_show_a_paid_order(client, creator_client, buyer, published_product, fake_channel):
    order = client.post("/api/v1/orders", headers=buyer.headers,
                        json={"items": [{"product_id": published_product["id"]}]}).get_json()
    payment = client.post(f"/api/v1/orders/{order['id']}/payments", headers=buyer.headers,
                          json={"channel": "sandbox"}).get_json()
    client.post("/notify/sandbox", data=fake_channel.notification_body(payment["id"], 9900),
                content_type="application/json")
    sales = creator_client.get("/creator/sales").get_data(as_text=True)
    assert "Course A" in sales and "¥99.00" in sales
    earnings = creator_client.get("/creator/earnings").get_data(as_text=True)
    assert re.search(r"¥89\.10</span><span class=\"stat-label\">待结算", earnings)


def test_the_payout_account_is_stored_masked_and_a_payout_needs_available_earnings(creator_client):
    saved = post_form(creator_client, "/creator/payout-account",
                      {"holder_name": "李老师", "bank_name": "招商银行", "account_number": "6225 8812 3456 7890"})
    assert saved.status_code == 303
    page = creator_client.get("/creator/earnings").get_data(as_text=True)
    assert "招商银行 •••• 7890" in page and "6225 8812" not in page
    post_form(creator_client, "/creator/payouts", {"amount": "10"})
    assert "金额超过了可提现收益" in creator_client.get("/creator/earnings").get_data(as_text=True)
