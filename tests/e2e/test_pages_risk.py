"""Risk in the admin console over the Flask test client: who may open it, the review queue with its
reasons, approving (the buyer's page and event stream then show the QR code) and rejecting, rule
settings refused with the bad parameter named, block and allow lists, and the daily report."""

from __future__ import annotations

import json
import re
import time

import pytest

from knowpay.web.views import checkout
from tests.e2e.browser.forms import ensure_pages, post_form, sign_in


@pytest.fixture(autouse=True)
def _pages(app):
    ensure_pages(app)


@pytest.fixture
def admin_client(app, make_user):
    """An admin's browser session (signed in with a password: no page here asks for a second factor)."""
    client = app.test_client()
    sign_in(client, make_user("admin").email)
    return client


@pytest.fixture
def buyer_client(app, buyer):
    client = app.test_client()
    sign_in(client, buyer.email)
    return client


def _held_payment(client, admin, buyer, product_id) -> dict:
    """A payment the amount rule holds for review (the product costs ¥99.00, the limit is ¥50.00)."""
    changed = client.patch("/api/v1/risk/rules/amount", headers=admin.headers, json={"params": {"max_amount": 5000}})
    assert changed.status_code == 200, changed.get_json()
    order = client.post("/api/v1/orders", headers=buyer.headers, json={"items": [{"product_id": product_id}]})
    payment = client.post(f"/api/v1/orders/{order.get_json()['id']}/payments", headers=buyer.headers,
                          json={"channel": "sandbox"}).get_json()
    assert payment["status"] == "processing", payment
    return payment


def _decision_id(page: str) -> str:
    return re.search(r"/admin/risk/decisions/(rsk_\w+)", page).group(1)


def _events(text: str) -> list[dict]:
    return [json.loads(block.split("data: ", 1)[1]) for block in text.split("\n\n") if "event: status" in block]


def test_only_staff_open_the_queue_and_only_admins_decide(app, client, make_user, admin, buyer, creator,
                                                          published_product, fake_channel):
    _held_payment(client, admin, buyer, published_product["id"])
    for who in (buyer, creator):
        other = app.test_client()
        sign_in(other, who.email)
        assert other.get("/admin/risk/reviews").status_code == 403
    support = app.test_client()
    sign_in(support, make_user("support").email)
    queue = support.get("/admin/risk/reviews")
    page = queue.get_data(as_text=True)
    assert queue.status_code == 200 and queue.headers["Cache-Control"] == "no-store"
    assert "风控审核队列" in page and buyer.email in page and "amount 9900 above the limit 5000" in page
    detail = support.get(f"/admin/risk/decisions/{_decision_id(page)}").get_data(as_text=True)
    assert "转人工审核" in detail and "/approve" not in detail
    assert post_form(support, f"/admin/risk/reviews/{_decision_id(page)}/approve").status_code == 403
    for path in ("/admin/risk/rules", "/admin/risk/lists", "/admin/risk/report"):
        assert support.get(path).status_code == 403
    menu = support.get("/admin").get_data(as_text=True)
    assert 'href="/admin/risk/reviews"' in menu and "/admin/risk/rules" not in menu
    assert fake_channel.calls == []


def test_approving_a_review_sends_the_payment_on_and_the_buyers_page_shows_the_qr_code(
        admin_client, buyer_client, client, admin, buyer, published_product, fake_channel, monkeypatch):
    monkeypatch.setattr(checkout, "STREAM_POLL_SECONDS", 0.05)
    monkeypatch.setattr(checkout, "STREAM_KEEPALIVE_SECONDS", 0.1)  # so a read never waits long
    payment = _held_payment(client, admin, buyer, published_product["id"])
    waiting = buyer_client.get(f"/checkout/payments/{payment['id']}/panel").get_data(as_text=True)
    assert "正在审核这笔支付" in waiting and '<svg class="qr"' not in waiting
    stream = buyer_client.get(f"/checkout/payments/{payment['id']}/events", buffered=False)
    chunks = iter(stream.response)
    seen = ""
    while "event: status" not in seen:
        seen += next(chunks).decode()

    queue = admin_client.get("/admin/risk/reviews").get_data(as_text=True)
    decision_id = _decision_id(queue)
    detail = admin_client.get(f"/admin/risk/decisions/{decision_id}").get_data(as_text=True)
    assert "amount 9900 above the limit 5000" in detail and f"/admin/risk/reviews/{decision_id}/approve" in detail
    assert 'name="csrf_token"' in detail
    approved = post_form(admin_client, f"/admin/risk/reviews/{decision_id}/approve", {"note": "regular customer"})

    assert approved.status_code == 303 and approved.headers["Location"].endswith("/admin/risk/reviews")
    assert "已批准：该请求将继续处理。" in admin_client.get("/admin/risk/reviews").get_data(as_text=True)
    assert fake_channel.count("create") == 1
    deadline = time.monotonic() + 5
    while len(_events(seen)) < 2 and time.monotonic() < deadline:
        seen += next(chunks).decode()
    first, second = _events(seen)[:2]
    assert (first["status"], second["status"]) == ("processing", "processing")
    assert second["version"] > first["version"] and not second["final"]
    panel = buyer_client.get(f"/checkout/payments/{payment['id']}/panel").get_data(as_text=True)
    assert '<svg class="qr"' in panel and f'data-version="{second["version"]}"' in panel
    decided = admin_client.get("/admin/risk/reviews", query_string={"status": "approved"}).get_data(as_text=True)
    assert "regular customer" in decided


def test_rejecting_a_review_fails_the_payment_and_a_form_without_its_token_is_refused(
        admin_client, buyer_client, client, admin, buyer, published_product, fake_channel):
    payment = _held_payment(client, admin, buyer, published_product["id"])
    decision_id = _decision_id(admin_client.get("/admin/risk/reviews").get_data(as_text=True))
    forged = admin_client.post(f"/admin/risk/reviews/{decision_id}/reject", data={"note": "x"})
    assert forged.status_code == 400

    post_form(admin_client, f"/admin/risk/reviews/{decision_id}/reject", {"note": "stolen card pattern"})

    assert "暂无待审核的请求。" in admin_client.get("/admin/risk/reviews").get_data(as_text=True)
    shown = client.get(f"/api/v1/payments/{payment['id']}", headers=buyer.headers).get_json()
    assert (shown["status"], shown["failure_code"]) == ("failed", "risk_rejected")
    assert "支付失败" in buyer_client.get(f"/checkout/payments/{payment['id']}/panel").get_data(as_text=True)
    again = post_form(admin_client, f"/admin/risk/reviews/{decision_id}/approve")
    assert again.status_code == 303 and again.headers["Location"].endswith(f"/admin/risk/decisions/{decision_id}")
    assert "not pending" in admin_client.get(f"/admin/risk/decisions/{decision_id}").get_data(as_text=True)
    assert fake_channel.calls == []


def test_a_rule_setting_that_does_not_validate_is_refused_with_the_parameter_named(admin_client, client, admin):
    page = admin_client.get("/admin/risk/rules").get_data(as_text=True)
    assert 'id="rule-amount"' in page and 'id="rule-velocity"' in page and "影子模式" in page

    post_form(admin_client, "/admin/risk/rules/amount", {"enabled": "1", "action": "review",
                                                         "params": '{"max_amount": -5}'})
    refused = admin_client.get("/admin/risk/rules").get_data(as_text=True)
    assert "未保存" in refused and "params.max_amount" in refused
    post_form(admin_client, "/admin/risk/rules/amount", {"enabled": "1", "action": "review", "params": "{nope"})
    assert "params must be JSON" in admin_client.get("/admin/risk/rules").get_data(as_text=True)

    saved = post_form(admin_client, "/admin/risk/rules/amount", {"enabled": "1", "shadow": "1", "action": "block",
                                                                 "params": '{"max_amount": 7000}'})
    assert saved.status_code == 303 and saved.headers["Location"].endswith("/admin/risk/rules#rule-amount")
    assert "规则 amount 已保存。" in admin_client.get("/admin/risk/rules").get_data(as_text=True)
    [rule] = [r for r in client.get("/api/v1/risk/rules", headers=admin.headers).get_json()["data"]
              if r["name"] == "amount"]
    assert (rule["enabled"], rule["shadow"], rule["action"], rule["params"]["max_amount"]) == (True, True, "block",
                                                                                                7000)
    assert admin_client.get("/admin/risk/rules/nope").status_code == 405
    assert post_form(admin_client, "/admin/risk/rules/nope", {"params": "{}"}).status_code == 404


def test_values_go_on_and_off_the_block_list(admin_client, client, admin, buyer):
    post_form(admin_client, "/admin/risk/lists", {"list": "block", "kind": "email", "value": buyer.email.upper(),
                                                  "reason": "chargebacks"})
    page = admin_client.get("/admin/risk/lists").get_data(as_text=True)
    assert "已加入名单。" in page and buyer.email in page and "黑名单" in page and "chargebacks" in page
    post_form(admin_client, "/admin/risk/lists", {"list": "block", "kind": "ip", "value": "not-an-ip"})
    assert "已加入名单" not in admin_client.get("/admin/risk/lists").get_data(as_text=True)
    [entry] = client.get("/api/v1/risk/lists/email/entries", headers=admin.headers).get_json()["data"]

    post_form(admin_client, f"/admin/risk/lists/email/{entry['id']}/delete")

    assert "已从名单中移除。" in admin_client.get("/admin/risk/lists").get_data(as_text=True)
    assert client.get("/api/v1/risk/lists/email/entries", headers=admin.headers).get_json()["data"] == []


def test_the_daily_report_shows_outcomes_reviews_and_the_shadow_comparison(ctx, admin_client, client, admin, buyer,
                                                                          published_product, fake_channel):
    assert client.patch("/api/v1/risk/rules/amount", headers=admin.headers,
                        json={"shadow": True, "params": {"max_amount": 5000}}).status_code == 200
    order = client.post("/api/v1/orders", headers=buyer.headers,
                        json={"items": [{"product_id": published_product["id"]}]}).get_json()
    paid = client.post(f"/api/v1/orders/{order['id']}/payments", headers=buyer.headers, json={"channel": "sandbox"})
    assert paid.get_json()["status"] == "requires_action"  # the shadow rule only watched
    from knowpay.reconciliation.service import local_day

    today = local_day(ctx.clock.now(), ctx.settings.timezone).isoformat()
    page = admin_client.get("/admin/risk/report", query_string={"date": today}).get_data(as_text=True)
    assert f"{today} 风控报告" in page and "影子对比" in page
    assert re.search(r"放行</span> → <span class=\"badge badge-warn\">转人工审核</span></span></div>"
                     r"<span class=\"row-side\">1</span>", page)
    assert "尚未训练模型" in page
    assert admin_client.get("/admin/risk/report", query_string={"date": "nonsense"}).status_code == 200
