"""The payment assistant over the API, each intent on worked examples in Chinese and English."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from knowpay.accounts.models import User
from knowpay.refunds.models import Refund
from knowpay.support import assistant, faq
from knowpay.support.models import Ticket
from tests.integration.test_support_tickets import buy
from tests.fakes import LaterClock


@pytest.fixture
def seeded_faq(ctx):
    with ctx.db.transaction() as session:
        return faq.load_entries(session, faq.seed_entries(), clock=ctx.clock)


def ask(client, caller, message: str, locale: str | None = None) -> dict:
    body = {"message": message} if locale is None else {"message": message, "locale": locale}
    answer = client.post("/api/v1/assistant", headers=caller.headers, json=body)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def product(client, creator, title: str, **fields) -> dict:
    made = client.post("/api/v1/products", headers=creator.headers,
                       json={"title": title, "kind": "course", "amount": 9900, "currency": "cny", **fields})
    return client.post(f"/api/v1/products/{made.get_json()['id']}/publish", headers=creator.headers).get_json()


@pytest.mark.parametrize("message, locale, said", [
    ("我付了钱但是看不了课程", None, "已付款成功"),
    ("I paid but have no access", None, "went through"),
])
def test_paid_but_no_access_repairs_a_stuck_payment_through_the_channel_query(
        client, ctx, fake_channel, buyer, published_product, message, locale, said):
    stuck = buy(client, fake_channel, buyer, published_product["id"], notify=False)
    fake_channel.trades[stuck["id"]]["status"] = "succeeded"  # paid at the channel; the notification was lost
    answer = ask(client, buyer, message, locale)
    assert answer["intent"] == "paid_no_access"
    assert said in answer["reply"] and "¥99.00" in answer["reply"] and "Course A" in answer["reply"]
    assert [a["type"] for a in answer["actions"]] == ["view_entitlements"]
    assert fake_channel.count("query") == 1
    assert client.get(f"/api/v1/orders/{stuck['order_id']}", headers=buyer.headers).get_json()["status"] == "paid"
    entitlements = client.get("/api/v1/entitlements", headers=buyer.headers).get_json()["data"]
    assert [(e["product_id"], e["status"]) for e in entitlements] == [(published_product["id"], "active")]


def test_paid_but_the_channel_has_no_money_offers_a_ticket_and_writes_none(
        client, ctx, fake_channel, buyer, published_product):
    pending = buy(client, fake_channel, buyer, published_product["id"], notify=False)
    answer = ask(client, buyer, "I paid but the course is still locked")
    assert answer["intent"] == "paid_no_access"
    assert "has not received it yet" in answer["reply"]
    offer = answer["actions"][0]
    assert (offer["type"], offer["method"], offer["path"]) == ("open_ticket", "POST", "/api/v1/tickets")
    assert offer["body"]["payment_id"] == pending["id"] and offer["body"]["category"] == "paid_no_access"
    with ctx.db.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 0
    pressed = client.post(offer["path"], headers=buyer.headers, json=offer["body"])  # the buyer presses it
    assert pressed.status_code == 201 and pressed.get_json()["payment_id"] == pending["id"]


def test_paid_with_access_active_says_so(client, fake_channel, buyer, published_product):
    buy(client, fake_channel, buyer, published_product["id"])
    answer = ask(client, buyer, "我已经付款了但是看不了", "zh-CN")
    assert answer["intent"] == "paid_no_access"
    assert "内容已开通" in answer["reply"]
    assert [a["type"] for a in answer["actions"]] == ["view_entitlements"]


def test_a_refund_within_the_window_is_offered_as_a_button_that_files_it(
        client, ctx, fake_channel, buyer, published_product):
    paid = buy(client, fake_channel, buyer, published_product["id"])
    answer = ask(client, buyer, "I want a refund")
    assert answer["intent"] == "refund"
    assert "can be refunded" in answer["reply"] and "7-day window" in answer["reply"]
    button = answer["actions"][0]
    assert (button["type"], button["method"], button["path"]) == ("request_refund", "POST", "/api/v1/refunds")
    assert button["body"]["payment_id"] == paid["id"] and button["body"]["amount"] == 9900
    with ctx.db.transaction(write=False) as session:  # the assistant moved no money
        assert session.scalar(select(func.count()).select_from(Refund)) == 0
    assert fake_channel.count("refund") == 0
    pressed = client.post(button["path"], headers={**buyer.headers, **button["headers"]}, json=button["body"])
    assert pressed.status_code == 201 and pressed.get_json()["amount"] == 9900
    again = ask(client, buyer, "我想退款")
    assert "已经全部退款" in again["reply"] and not any(a["type"] == "request_refund" for a in again["actions"])


def test_a_refund_after_the_window_is_refused_and_handed_to_support(client, ctx, fake_channel, buyer, creator):
    short = product(client, creator, "Short window", refund_window_days=1)
    now = ctx.clock
    ctx.clock = LaterClock(now, timedelta(days=-2))  # bought two days ago
    paid = buy(client, fake_channel, buyer, short["id"])
    ctx.clock = now
    answer = ask(client, buyer, "退款", "zh-CN")
    assert answer["intent"] == "refund"
    assert "1 天退款期" in answer["reply"] and "无法自助退款" in answer["reply"]
    assert [a["type"] for a in answer["actions"]] == ["open_ticket"]
    assert answer["actions"][0]["body"]["payment_id"] == paid["id"]


def test_a_refund_names_the_product_the_buyer_means(client, fake_channel, buyer, creator, published_product):
    other = product(client, creator, "Piano Basics")
    buy(client, fake_channel, buyer, published_product["id"])
    piano = buy(client, fake_channel, buyer, other["id"])
    answer = ask(client, buyer, "I'd like a refund for Piano Basics please")
    assert [a["body"]["payment_id"] for a in answer["actions"]] == [piano["id"]]


def test_a_declined_payment_is_explained_from_its_recorded_reason(client, fake_channel, buyer, published_product):
    pending = buy(client, fake_channel, buyer, published_product["id"], notify=False)
    body = fake_channel.notification_body(pending["id"], pending["amount"], status="failed")
    client.post("/notify/sandbox", data=body, content_type="application/json")
    for message, said in (("why was my payment declined", "did not go through: the payment channel declined it"),
                          ("为什么我的付款被拒绝了", "没有成功：支付渠道拒绝了这笔付款")):
        answer = ask(client, buyer, message)
        assert answer["intent"] == "payment_declined"
        assert said in answer["reply"]
        assert [(a["type"], a["path"]) for a in answer["actions"]] == [
            ("pay_order", f"/api/v1/orders/{pending['order_id']}/payments")]  # the order can still be paid


def test_where_is_my_receipt_names_the_order_and_the_channel_transaction(client, fake_channel, buyer,
                                                                        published_product):
    paid = buy(client, fake_channel, buyer, published_product["id"])
    answer = ask(client, buyer, "where is my receipt")
    assert answer["intent"] == "receipt"
    assert paid["channel_trade_no"] in answer["reply"] and "¥99.00" in answer["reply"]
    assert [a["type"] for a in answer["actions"]] == ["view_order", "open_ticket"]
    assert answer["actions"][0]["path"] == f"/api/v1/orders/{paid['order_id']}"
    zh = ask(client, buyer, "我的收据在哪")
    assert "交易单号" in zh["reply"]


def test_how_to_pay_with_each_channel_comes_from_the_faq_and_says_if_it_is_offered(client, ctx, buyer, seeded_faq):
    # This test app has only the sandbox and bank transfer channels (and the wallet).
    for message, locale, topic, offered in (
            ("怎么用支付宝付款", "zh-CN", "pay.alipay", False),
            ("How do I pay with WeChat Pay?", "en", "pay.wechat", False),
            ("can I pay by card?", "en", "pay.stripe", False),
            ("怎么用钱包金币付款", "zh-CN", "pay.wallet", True),
            ("How do I pay by bank transfer?", "en", "pay.bank_transfer", True),
            ("可以用花呗分期付款吗", "zh-CN", "pay.installments", False)):
        answer = ask(client, buyer, message)
        assert answer["intent"] == "how_to_pay", message
        with ctx.db.transaction(write=False) as session:
            entry = faq.entry_for_topic(session, topic, locale)
        assert answer["reply"].endswith(entry.answer), message
        assert ("not offered" in answer["reply"] or "目前这里不提供" in answer["reply"]) is not offered, message


def test_how_to_pay_without_a_channel_lists_what_is_offered(client, buyer, seeded_faq):
    answer = ask(client, buyer, "what payment methods do you accept?")
    assert answer["intent"] == "how_to_pay"
    assert answer["reply"].startswith("Here you can pay with: bank transfer, the sandbox, wallet coins.")


def test_a_free_question_is_answered_from_the_faq(client, buyer, seeded_faq):
    answer = ask(client, buyer, "退款多久能到账")
    assert answer["intent"] == "faq"
    assert answer["reply"].startswith("退款提交后立即发给支付渠道")
    english = ask(client, buyer, "I was charged twice for one order")
    assert english["intent"] == "faq" and "refunded automatically" in english["reply"]


def test_an_answer_the_admins_add_to_the_faq_is_found_at_once(client, make_user, buyer, seeded_faq):
    admin = make_user("admin", second_factor=True)
    added = client.post("/api/v1/support/faq", headers=admin.headers, json={
        "locale": "en", "question": "Do courses come with a certificate?",
        "answer": "Yes: finish every lesson and the certificate appears in your library.",
        "keywords": "certificate diploma"})
    assert added.status_code == 201, added.get_json()
    answer = ask(client, buyer, "will I get a diploma at the end?")
    assert (answer["intent"], answer["reply"]) == ("faq", ("Yes: finish every lesson and the certificate appears in "
                                                          "your library."))
    hidden = client.patch(f"/api/v1/support/faq/{added.get_json()['id']}", headers=admin.headers,
                          json={"published": False})
    assert hidden.status_code == 200 and hidden.get_json()["published"] is False
    assert ask(client, buyer, "will I get a diploma at the end?")["intent"] == "handover"
    assert client.patch(f"/api/v1/support/faq/{added.get_json()['id']}", headers=buyer.headers,
                        json={"published": True}).status_code == 403
    assert client.delete(f"/api/v1/support/faq/{added.get_json()['id']}", headers=admin.headers).status_code == 200
    assert client.delete(f"/api/v1/support/faq/{added.get_json()['id']}", headers=admin.headers).status_code == 404


def test_when_unsure_or_asked_it_hands_over_to_a_person(client, buyer, seeded_faq):
    for message in ("tell me a joke about cats", "今天天气怎么样", "转人工"):
        answer = ask(client, buyer, message)
        assert answer["intent"] == "handover", message
        ticket = answer["actions"][-1]
        assert ticket["type"] == "open_ticket" and ticket["body"]["body"] == message


def test_a_question_never_returns_another_buyers_order(client, ctx, fake_channel, make_user, creator):
    secret = product(client, creator, "Secret Course of Alice")
    alice, mallory = make_user("buyer"), make_user("buyer")
    paid = buy(client, fake_channel, alice, secret["id"])
    failed = buy(client, fake_channel, alice, secret["id"], notify=False)
    client.post("/notify/sandbox", data=fake_channel.notification_body(failed["id"], 9900, status="failed"),
                content_type="application/json")
    for message in (f"I paid but have no access to {paid['order_id']}", f"I want a refund for {paid['order_id']}",
                    f"why was {failed['id']} declined", f"where is the receipt for {paid['id']}",
                    f"我付了钱但是看不了 {paid['order_id']}"):
        answer = ask(client, mallory, message)
        shown = str(answer)
        assert "Secret Course of Alice" not in shown and "¥99.00" not in shown, message
        assert paid["channel_trade_no"] not in shown
        assert "could not find" in answer["reply"] or "没有找到" in answer["reply"]
        assert not any(a["type"] in ("request_refund", "view_order", "pay_order") for a in answer["actions"])
    assert fake_channel.count("query") == 0


def test_a_question_asked_from_an_order_page_is_about_that_order_and_only_the_askers(
        client, ctx, fake_channel, make_user, creator):
    alices_course, bobs_course = product(client, creator, "Alice's Course"), product(client, creator, "Bob's Course")
    alice, bob = make_user("buyer"), make_user("buyer")
    alices = buy(client, fake_channel, alice, alices_course["id"])
    buy(client, fake_channel, bob, bobs_course["id"])
    with ctx.db.transaction(write=False) as session:
        asker = session.get(User, bob.id)
    answer = assistant.answer(ctx, buyer=asker, message="I want a refund", about=(alices["order_id"],))
    assert "Alice's Course" not in answer.reply and f"could not find {alices['order_id']}" in answer.reply
    assert not any(a["type"] == "request_refund" for a in answer.actions)
    with ctx.db.transaction(write=False) as session:
        asker = session.get(User, alice.id)
    own = assistant.answer(ctx, buyer=asker, message="I want a refund", about=(alices["order_id"], "not-an-id"))
    assert [a["body"]["payment_id"] for a in own.actions if a["type"] == "request_refund"] == [alices["id"]]


def test_bad_assistant_input_is_400_and_asks_nothing(client, fake_channel, buyer, published_product):
    buy(client, fake_channel, buyer, published_product["id"], notify=False)
    for body, param in (({"message": ""}, "message"), ({"message": "   "}, "message"),
                        ({"message": "x" * 2001}, "message"), ({"message": "refund", "locale": "fr"}, "locale"),
                        ({}, "message")):
        refused = client.post("/api/v1/assistant", headers=buyer.headers, json=body)
        assert refused.status_code == 400, body
        assert refused.get_json()["error"]["type"] == "invalid_request"
        assert refused.get_json()["error"]["param"] == param
    assert fake_channel.count("query") == 0


def test_the_assistant_needs_a_signed_in_buyer(client):
    assert client.post("/api/v1/assistant", json={"message": "hi"}).status_code == 401
