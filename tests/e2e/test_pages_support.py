"""Help and tickets over the Flask test client: a buyer asks the assistant and opens a ticket from an
order, support answers from the queue and the case screen (reply, status, refund behind a second factor,
access, asking the channel), and "You may also like" on the product, success and library pages."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import delete, select

from knowpay.access.models import Entitlement
from knowpay.accounts import totp
from knowpay.accounts.mail import FileMailer
from knowpay.accounts.models import User
from knowpay.fieldcrypt import FieldCipher
from knowpay.payments.models import Payment
from knowpay.recommend.service import refresh_recommendations
from knowpay.refunds.models import Refund
from knowpay.security.models import AuditEntry
from knowpay.support.models import Ticket
from tests.e2e.browser.forms import ensure_pages, post_form, sign_in
from tests.fakes import LaterClock
from tests.integration.test_recommend_api import make_product, sell


@pytest.fixture(autouse=True)
def _pages(app):
    ensure_pages(app)


def _signed_in(app, email: str):
    client = app.test_client()
    sign_in(client, email)
    return client


@pytest.fixture
def buyer_client(app, buyer):
    return _signed_in(app, buyer.email)


@pytest.fixture
def support_user(make_user):
    return make_user("support")


@pytest.fixture
def support_client(app, support_user):
    return _signed_in(app, support_user.email)


def _checkout(buyer_client, product_id: str) -> str:
    """Order `product_id` through the checkout page and the sandbox; the new payment's id."""
    answer = post_form(buyer_client, f"/checkout/products/{product_id}", {"channel": "sandbox"})
    assert answer.status_code == 303, answer.get_data(as_text=True)[:300]
    return answer.headers["Location"].rsplit("/", 1)[-1]


def _notify(client, fake_channel, payment_id: str, amount: int = 9900) -> None:
    body = fake_channel.notification_body(payment_id, amount)
    assert client.post("/notify/sandbox", data=body, content_type="application/json").status_code == 200


@pytest.fixture
def paid_order(buyer_client, client, published_product, fake_channel) -> dict:
    payment_id = _checkout(buyer_client, published_product["id"])
    _notify(client, fake_channel, payment_id)
    page = buyer_client.get(f"/checkout/payments/{payment_id}").get_data(as_text=True)
    return {"order_id": re.search(r"/me/orders/(ord_\w+)/receipt", page).group(1), "payment_id": payment_id}


def _open_ticket(buyer_client, order_id: str, body: str, **fields) -> str:
    sent = post_form(buyer_client, "/me/help/new", {"order_id": order_id, "body": body, "step": "send", **fields})
    assert sent.status_code == 303, sent.get_data(as_text=True)[:500]
    return re.search(r"/me/help/tickets/(tkt_\w+)$", sent.headers["Location"]).group(1)


def _mails_to(ctx, email: str) -> list[str]:
    folder = ctx.settings.instance_path / "mail"
    return [m.get_content() for m in FileMailer(folder, ctx.clock).messages() if m["To"] == email]


def _block(page: str, css_class: str) -> str:
    found = re.search(rf'<section class="{css_class}".*?</section>', page, re.S)
    return found.group(0) if found else ""


def test_a_buyer_gets_help_on_an_order_talks_to_support_and_closes_the_ticket(
        ctx, buyer, buyer_client, support_client, paid_order):
    order_page = buyer_client.get(f"/me/orders/{paid_order['order_id']}").get_data(as_text=True)
    assert f"/me/help/new?order_id={paid_order['order_id']}" in order_page
    form = buyer_client.get(f"/me/help/new?order_id={paid_order['order_id']}").get_data(as_text=True)
    assert paid_order["order_id"] in form and "Course A" in form

    # The assistant answers first, from this order: paid, access active.
    asked = post_form(buyer_client, "/me/help/new", {"order_id": paid_order["order_id"], "step": "ask",
                                                     "body": "我付了钱但是看不了课程"})
    answer = _block(asked.get_data(as_text=True), "card assistant-answer")
    assert asked.status_code == 200 and "已付款，内容已开通" in answer and "/me/library" in answer

    ticket_id = _open_ticket(buyer_client, paid_order["order_id"], "还是打不开第二章。\n请帮忙看看。",
                             category="paid_no_access")
    thread = buyer_client.get(f"/me/help/tickets/{ticket_id}").get_data(as_text=True)
    assert "还是打不开第二章。\n请帮忙看看。" in thread and "等待客服回复" in thread
    assert any(ticket_id in body for body in _mails_to(ctx, buyer.email))
    assert ticket_id in buyer_client.get("/me/help").get_data(as_text=True)

    queue = support_client.get("/admin/tickets").get_data(as_text=True)
    assert f"/admin/tickets/{ticket_id}" in queue and buyer.email in queue
    case = support_client.get(f"/admin/tickets/{ticket_id}").get_data(as_text=True)
    assert paid_order["order_id"] in case and paid_order["payment_id"] in case
    assert "&#34;payment_id&#34;" in case or "&quot;payment_id&quot;" in case  # the raw notification, escaped
    post_form(support_client, f"/admin/tickets/{ticket_id}/messages", {"body": "已为您检查，请刷新后再试。"})
    post_form(support_client, f"/admin/tickets/{ticket_id}/messages", {"body": "疑似缓存问题", "internal": "1"})

    thread = buyer_client.get(f"/me/help/tickets/{ticket_id}").get_data(as_text=True)
    assert "已为您检查，请刷新后再试。" in thread and "疑似缓存问题" not in thread and "已回复" in thread
    assert any("已为您检查" in body for body in _mails_to(ctx, buyer.email))
    post_form(buyer_client, f"/me/help/tickets/{ticket_id}/messages", {"body": "好了，谢谢！"})
    closed = post_form(buyer_client, f"/me/help/tickets/{ticket_id}/resolve")
    assert closed.status_code == 303
    thread = buyer_client.get(f"/me/help/tickets/{ticket_id}").get_data(as_text=True)
    assert "已解决" in thread and f"/me/help/tickets/{ticket_id}/messages" not in thread
    late = post_form(buyer_client, f"/me/help/tickets/{ticket_id}/messages", {"body": "还有一件事"})
    assert late.status_code == 303
    assert "如需继续咨询，请新建工单" in buyer_client.get(f"/me/help/tickets/{ticket_id}").get_data(as_text=True)
    with ctx.db.transaction(write=False) as session:
        ticket = session.get(Ticket, ticket_id)
        assert (ticket.status, ticket.entries) == ("resolved", 5)  # 3 messages, a note, the status change
        assert ticket.first_response_at is not None


def test_ticket_pages_are_the_owners_and_the_queue_is_for_staff(app, make_user, buyer_client, paid_order):
    ticket_id = _open_ticket(buyer_client, paid_order["order_id"], "help")
    stranger = _signed_in(app, make_user("buyer").email)
    assert stranger.get(f"/me/help/tickets/{ticket_id}").status_code == 404
    assert post_form(stranger, f"/me/help/tickets/{ticket_id}/messages", {"body": "me too"}).status_code == 404
    assert post_form(stranger, f"/me/help/tickets/{ticket_id}/resolve").status_code == 404
    assert stranger.get(f"/me/help/new?order_id={paid_order['order_id']}").status_code == 404
    assert post_form(stranger, "/me/help/new", {"order_id": paid_order["order_id"], "body": "x",
                                                "step": "send"}).status_code == 404
    assert post_form(stranger, "/me/help/refund", {"payment_id": paid_order["payment_id"]}).status_code == 404
    assert stranger.get("/admin/tickets").status_code == 403
    assert stranger.get(f"/admin/tickets/{ticket_id}").status_code == 403
    assert "/admin/tickets" not in stranger.get("/me").get_data(as_text=True)
    assert "/me/help" in stranger.get("/me").get_data(as_text=True)


def test_messages_show_as_text_never_as_markup(buyer_client, support_client, paid_order):
    body = '<script>alert("x")</script>\n<b>bold</b>'
    ticket_id = _open_ticket(buyer_client, paid_order["order_id"], body, subject="<img src=x onerror=alert(1)>")
    for page in (buyer_client.get(f"/me/help/tickets/{ticket_id}").get_data(as_text=True),
                 support_client.get(f"/admin/tickets/{ticket_id}").get_data(as_text=True),
                 support_client.get("/admin/tickets").get_data(as_text=True)):
        assert "<script>alert" not in page and "<img src=x" not in page
        assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_an_empty_or_oversized_message_is_refused_and_writes_nothing(ctx, buyer_client, paid_order):
    for text in ("   ", "字" * 2001):
        refused = post_form(buyer_client, "/me/help/new", {"order_id": paid_order["order_id"], "body": text,
                                                           "step": "send"})
        assert refused.status_code == 400 and 'aria-invalid="true"' in refused.get_data(as_text=True)
    assert post_form(buyer_client, "/me/help/ask", {"message": ""}).status_code == 400
    with ctx.db.transaction(write=False) as session:
        assert session.scalars(select(Ticket)).all() == []


def test_a_refund_from_the_case_screen_needs_a_second_factor_and_is_audited(
        ctx, support_user, support_client, buyer_client, paid_order):
    ticket_id = _open_ticket(buyer_client, paid_order["order_id"], "我要退款", category="refund")
    fields = {"payment_id": paid_order["payment_id"], "amount": "10", "reason": "课程当天无法访问"}
    post_form(support_client, f"/admin/tickets/{ticket_id}/refund", fields)
    assert "请先开启两步验证登录" in support_client.get(f"/admin/tickets/{ticket_id}").get_data(as_text=True)

    cipher = FieldCipher(ctx.settings.encryption_keys)
    with ctx.db.transaction() as session:
        user = session.get(User, support_user.id)
        secret = totp.begin_totp_setup(user, cipher=cipher).secret
        totp.confirm_totp_setup(session, user, totp.current_code(secret, ctx.clock), cipher=cipher, clock=ctx.clock)
    case = support_client.get(f"/admin/tickets/{ticket_id}").get_data(as_text=True)
    assert 'name="otp"' in case
    post_form(support_client, f"/admin/tickets/{ticket_id}/refund", {**fields, "otp": "000000"})
    assert "验证码无效或已被使用" in support_client.get(f"/admin/tickets/{ticket_id}").get_data(as_text=True)
    code = totp.current_code(secret, LaterClock(ctx.clock, timedelta(seconds=30)))
    post_form(support_client, f"/admin/tickets/{ticket_id}/refund", {**fields, "otp": code})
    case = support_client.get(f"/admin/tickets/{ticket_id}").get_data(as_text=True)
    assert "退款已发起" in case and "¥10.00" in case and "课程当天无法访问" in case
    with ctx.db.transaction(write=False) as session:
        refund = session.scalars(select(Refund)).one()
        assert (refund.amount, refund.requested_by) == (1000, support_user.id)
        assert session.scalar(select(AuditEntry.target).where(
            AuditEntry.action == "support.refund_requested")) == refund.id


def test_support_repairs_a_stuck_payment_and_missing_access_from_the_case_screen(
        ctx, client, fake_channel, buyer, buyer_client, support_client, published_product):
    payment_id = _checkout(buyer_client, published_product["id"])
    with ctx.db.transaction(write=False) as session:
        order_id = session.get(Payment, payment_id).order_id
    ticket_id = _open_ticket(buyer_client, order_id, "付了钱一直显示待支付", category="payment_stuck")
    fake_channel.trades[payment_id]["status"] = "succeeded"  # paid; the notification was lost
    post_form(support_client, f"/admin/tickets/{ticket_id}/check-payments")
    case = support_client.get(f"/admin/tickets/{ticket_id}").get_data(as_text=True)
    assert "已询问支付渠道" in case and "等待支付 → 成功" in case
    with ctx.db.transaction() as session:  # the grant went missing
        session.execute(delete(Entitlement).where(Entitlement.order_id == order_id))
    post_form(support_client, f"/admin/tickets/{ticket_id}/regrant")
    assert "订单所购内容的访问权限已开通" in support_client.get(f"/admin/tickets/{ticket_id}").get_data(as_text=True)
    with ctx.db.transaction(write=False) as session:
        assert session.scalars(select(Entitlement.status).where(Entitlement.order_id == order_id)).all() == ["active"]


def test_the_assistants_refund_button_files_the_refund_only_when_pressed(ctx, buyer_client, paid_order):
    answer = post_form(buyer_client, "/me/help/ask", {"message": "我想退款"}).get_data(as_text=True)
    block = _block(answer, "card assistant-answer")
    assert 'action="/me/help/refund"' in block and f'value="{paid_order["payment_id"]}"' in block
    with ctx.db.transaction(write=False) as session:
        assert session.scalars(select(Refund)).all() == []
    amount = re.search(r'name="amount" value="(\d+)"', block).group(1)
    reason = re.search(r'name="reason" value="([^"]+)"', block).group(1)
    pressed = post_form(buyer_client, "/me/help/refund", {"payment_id": paid_order["payment_id"], "amount": amount,
                                                          "reason": reason})
    assert pressed.status_code == 303 and pressed.headers["Location"].endswith("/me/refunds")
    with ctx.db.transaction(write=False) as session:
        refund = session.scalars(select(Refund)).one()
        assert (refund.payment_id, refund.amount) == (paid_order["payment_id"], 9900)


def test_you_may_also_like_on_the_product_success_and_library_pages(
        ctx, client, fake_channel, make_user, creator, buyer_client, published_product):
    a = published_product["id"]
    b = make_product(ctx, creator.id, "Course B")
    c = make_product(ctx, creator.id, "Course C")
    for _ in range(2):  # buyers of A also bought B
        sell(ctx, make_user("buyer").id, a, b)
    sell(ctx, make_user("buyer").id, c)
    refresh_recommendations(ctx)

    product_page = buyer_client.get(f"/products/{a}").get_data(as_text=True)
    block = _block(product_page, "recommended")
    assert block.index(f"/products/{b}") < block.index(f"/products/{c}") and f"/products/{a}" not in block

    payment_id = _checkout(buyer_client, a)
    waiting = buyer_client.get(f"/checkout/payments/{payment_id}").get_data(as_text=True)
    assert _block(waiting, "recommended") == ""
    _notify(client, fake_channel, payment_id)
    success = _block(buyer_client.get(f"/checkout/payments/{payment_id}/panel").get_data(as_text=True), "recommended")
    assert f"/products/{b}" in success and f"/products/{a}" not in success  # never what the buyer owns now

    library = _block(buyer_client.get("/me/library").get_data(as_text=True), "recommended")
    assert f"/products/{b}" in library and f"/products/{a}" not in library
