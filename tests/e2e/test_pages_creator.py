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


def _draft(creator_client, **fields) -> str:
    made = post_form(creator_client, "/creator/products/new",
                     {"title": "写作训练营", "kind": "course", "price": "199", "refund_window_days": "7",
                      **fields})
    assert made.status_code == 303, made.get_data(as_text=True)[:800]
    return made.headers["Location"].rsplit("#", 1)[-1]


def test_the_edit_form_comes_filled_in_and_saves_the_changes(client, creator_client):
    product_id = _draft(creator_client, description="21 天")
    listing = creator_client.get("/creator/products").get_data(as_text=True)
    assert f'href="/creator/products/{product_id}/edit"' in listing
    form = creator_client.get(f"/creator/products/{product_id}/edit").get_data(as_text=True)
    assert "编辑商品" in form and 'name="csrf_token"' in form
    assert 'value="写作训练营"' in form and 'value="199.00"' in form and ">21 天</textarea>" in form
    assert re.search(r'<option value="course" selected>', form)

    saved = post_form(creator_client, f"/creator/products/{product_id}/edit",
                      {"title": "写作训练营 · 第二期", "kind": "ebook", "price": "249.5", "description": "28 天",
                       "refund_window_days": "3"})
    assert saved.status_code == 303 and saved.headers["Location"].endswith(f"#{product_id}")
    listing = creator_client.get("/creator/products").get_data(as_text=True)
    assert "写作训练营 · 第二期" in listing and "¥249.50" in listing and "电子书" in listing
    assert "新价格只适用于新订单" in listing


def test_the_edit_form_names_the_fields_at_fault_and_keeps_what_was_typed(creator_client):
    product_id = _draft(creator_client)
    answer = post_form(creator_client, f"/creator/products/{product_id}/edit",
                       {"title": "新标题", "kind": "course", "price": "0", "refund_window_days": "7"})
    html = answer.get_data(as_text=True)
    assert answer.status_code == 400
    assert 'aria-invalid="true" aria-describedby="price-error"' in html and 'value="新标题"' in html
    assert "199" not in re.search(r'id="price"[^>]*>', html).group(0)  # what was typed, not the saved price


def test_a_published_product_keeps_its_kind_and_its_refund_window_cannot_shrink(client, creator_client):
    product_id = _draft(creator_client)
    post_form(creator_client, f"/creator/products/{product_id}/publish")
    form = creator_client.get(f"/creator/products/{product_id}/edit").get_data(as_text=True)
    assert re.search(r'<select id="kind" name="kind" required disabled', form)
    assert "至少 7 天" in form

    shorter = post_form(creator_client, f"/creator/products/{product_id}/edit",
                        {"title": "写作训练营", "price": "99", "refund_window_days": "1"})
    assert shorter.status_code == 400 and "不能少于 7 天" in shorter.get_data(as_text=True)
    cheaper = post_form(creator_client, f"/creator/products/{product_id}/edit",
                        {"title": "写作训练营", "kind": "ebook", "price": "99", "refund_window_days": "10"})
    assert cheaper.status_code == 303
    public = client.get(f"/products/{product_id}").get_data(as_text=True)
    assert "¥99.00" in public and "购买后 10 天内可申请退款" in public and "课程" in public


def test_another_creators_product_cannot_be_edited(app, creator_client, make_user, published_product):
    other = app.test_client()
    sign_in(other, make_user("creator").email)
    assert other.get(f"/creator/products/{published_product['id']}/edit").status_code == 404
    refused = post_form(other, f"/creator/products/{published_product['id']}/edit",
                        {"title": "Mine", "kind": "course", "price": "1", "refund_window_days": "7"})
    assert refused.status_code == 404
    assert client_title(app, published_product["id"]) == "Course A"


def test_the_edit_form_needs_its_csrf_token(creator_client):
    product_id = _draft(creator_client)
    refused = creator_client.post(f"/creator/products/{product_id}/edit",
                                  data={"title": "x", "kind": "course", "price": "1",
                                        "refund_window_days": "7"})
    assert refused.status_code == 400
    assert "写作训练营" in creator_client.get("/creator/products").get_data(as_text=True)


def client_title(app, product_id: str) -> str:
    return app.test_client().get(f"/api/v1/products/{product_id}").get_json()["title"]
