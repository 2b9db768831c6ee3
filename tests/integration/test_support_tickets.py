"""Tickets over the API: ownership, replies and statuses, the support case view, and the refund and
access support gives from a ticket through the same services (audited, the buyer mailed)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import delete, func, select

from knowpay.access.models import Entitlement
from knowpay.accounts.mail import FileMailer
from knowpay.accounts.models import User
from knowpay.outbox.models import OutboxEvent
from knowpay.refunds.models import Refund
from knowpay.risk import service as risk
from knowpay.security.models import AuditEntry
from knowpay.support.models import Ticket, TicketEntry


def buy(client, fake_channel, buyer, product_id, *, notify: bool = True) -> dict:
    """Order and pay `product_id` through the fake channel; the payment as the API shows it."""
    order = client.post("/api/v1/orders", headers=buyer.headers, json={"items": [{"product_id": product_id}]})
    assert order.status_code == 201, order.get_json()
    payment = client.post(f"/api/v1/orders/{order.get_json()['id']}/payments", headers=buyer.headers,
                          json={"channel": "sandbox"}).get_json()
    if notify:
        body = fake_channel.notification_body(payment["id"], payment["amount"])
        assert client.post("/notify/sandbox", data=body, content_type="application/json").status_code == 200
    return client.get(f"/api/v1/payments/{payment['id']}", headers=buyer.headers).get_json()


def open_ticket(client, caller, **fields) -> dict:
    made = client.post("/api/v1/tickets", headers=caller.headers,
                       json={"subject": "No access", "body": "I paid but cannot open the course.", **fields})
    assert made.status_code == 201, made.get_json()
    return made.get_json()


def sent_mails(ctx) -> list[dict]:
    """What the mail backend (files, on the embedded default) holds: every message (files made within
    one second come in no set order)."""
    folder = ctx.settings.instance_path / "mail"
    messages = FileMailer(folder, ctx.clock).messages() if folder.exists() else []
    return [{"to": m["To"], "subject": m["Subject"], "body": m.get_content()} for m in messages]


def count(ctx, model) -> int:
    with ctx.db.transaction(write=False) as session:
        return session.scalar(select(func.count()).select_from(model))


@pytest.fixture
def support_agent(make_user):
    return make_user("support", second_factor=True)


@pytest.fixture
def paid(client, fake_channel, buyer, published_product) -> dict:
    return buy(client, fake_channel, buyer, published_product["id"])


def test_a_buyer_opens_a_ticket_on_their_payment_and_gets_a_receipt_by_mail(client, ctx, buyer, paid):
    ticket = open_ticket(client, buyer, payment_id=paid["id"], category="paid_no_access")
    assert ticket["id"].startswith("tkt_")
    assert (ticket["status"], ticket["order_id"], ticket["payment_id"]) == ("open", paid["order_id"], paid["id"])
    assert [(m["kind"], m["author_role"], m["body"]) for m in ticket["messages"]] == [
        ("message", "buyer", "I paid but cannot open the course.")]
    assert client.get(f"/api/v1/tickets/{ticket['id']}", headers=buyer.headers).get_json() == ticket
    listed = client.get("/api/v1/tickets", headers=buyer.headers).get_json()
    assert [t["id"] for t in listed["data"]] == [ticket["id"]]
    mails = sent_mails(ctx)
    assert [m["to"] for m in mails] == [buyer.email]
    assert ticket["id"] in mails[0]["body"] and ticket["id"] in mails[0]["subject"]


def test_a_ticket_about_someone_elses_order_or_payment_is_404_and_writes_nothing(client, ctx, make_user, paid):
    stranger = make_user("buyer")
    for field, object_id in (("order_id", paid["order_id"]), ("payment_id", paid["id"])):
        refused = client.post("/api/v1/tickets", headers=stranger.headers,
                              json={"subject": "Hi", "body": "Let me see this.", field: object_id})
        assert refused.status_code == 404
        error = refused.get_json()["error"]
        assert (error["type"], error["code"], error["param"]) == ("not_found", "resource_missing", field)
    assert count(ctx, Ticket) == 0 and count(ctx, TicketEntry) == 0
    assert sent_mails(ctx) == []


def test_another_buyer_gets_404_on_every_ticket_route(client, make_user, buyer, paid):
    ticket = open_ticket(client, buyer, order_id=paid["order_id"])
    stranger = make_user("buyer")
    tid = ticket["id"]
    assert client.get(f"/api/v1/tickets/{tid}", headers=stranger.headers).status_code == 404
    assert client.post(f"/api/v1/tickets/{tid}/messages", headers=stranger.headers,
                       json={"body": "me too"}).status_code == 404
    assert client.post(f"/api/v1/tickets/{tid}/status", headers=stranger.headers,
                       json={"status": "resolved"}).status_code == 404
    assert client.get("/api/v1/tickets", headers=stranger.headers).get_json()["data"] == []
    # and the staff routes are for staff
    assert client.get("/api/v1/support/tickets", headers=buyer.headers).status_code == 403
    assert client.post(f"/api/v1/tickets/{tid}/refund", headers=buyer.headers,
                       json={"reason": "x"}).status_code == 403


def test_a_reply_to_a_resolved_ticket_is_409_and_writes_nothing(client, ctx, buyer, support_agent, paid):
    ticket = open_ticket(client, buyer, order_id=paid["order_id"])
    resolved = client.post(f"/api/v1/tickets/{ticket['id']}/status", headers=buyer.headers,
                           json={"status": "resolved"})
    assert resolved.status_code == 200 and resolved.get_json()["status"] == "resolved"
    before = count(ctx, TicketEntry)
    for caller in (buyer, support_agent):
        late = client.post(f"/api/v1/tickets/{ticket['id']}/messages", headers=caller.headers,
                           json={"body": "one more thing"})
        assert late.status_code == 409
        assert late.get_json()["error"]["code"] == "ticket_resolved"
    assert count(ctx, TicketEntry) == before
    # a buyer cannot reopen it; support can
    assert client.post(f"/api/v1/tickets/{ticket['id']}/status", headers=buyer.headers,
                       json={"status": "open"}).status_code == 403
    assert client.post(f"/api/v1/tickets/{ticket['id']}/status", headers=support_agent.headers,
                       json={"status": "open"}).get_json()["status"] == "open"


def test_support_replies_wait_on_the_buyer_and_stamp_the_first_reply_once(client, ctx, buyer, support_agent, paid):
    ticket = open_ticket(client, buyer, order_id=paid["order_id"])
    tid = ticket["id"]
    answer = client.post(f"/api/v1/tickets/{tid}/messages", headers=support_agent.headers,
                         json={"body": "Checking with the channel now."})
    assert answer.status_code == 201 and answer.get_json()["author_role"] == "support"
    after_first = client.get(f"/api/v1/tickets/{tid}", headers=buyer.headers).get_json()
    assert after_first["status"] == "waiting_on_buyer"
    assert after_first["first_response_at"] is not None
    client.post(f"/api/v1/tickets/{tid}/messages", headers=buyer.headers, json={"body": "Thanks, still nothing."})
    client.post(f"/api/v1/tickets/{tid}/messages", headers=support_agent.headers, json={"body": "Fixed now."})
    again = client.get(f"/api/v1/tickets/{tid}", headers=buyer.headers).get_json()
    assert again["status"] == "waiting_on_buyer"
    assert again["first_response_at"] == after_first["first_response_at"]
    assert [m["author_role"] for m in again["messages"]] == ["buyer", "support", "buyer", "support"]
    mails = [m for m in sent_mails(ctx) if "Support replied" in m["body"]]
    assert [m["to"] for m in mails] == [buyer.email, buyer.email]
    assert any("Fixed now." in m["body"] for m in mails)
    stats = client.get("/api/v1/support/stats", headers=support_agent.headers).get_json()
    assert stats["tickets"] == {"open": 0, "waiting_on_buyer": 1, "resolved": 0}
    assert stats["first_reply"]["answered"] == 1 and stats["first_reply"]["p50_seconds"] >= 0


def test_internal_notes_are_for_support_only(client, buyer, support_agent, paid):
    ticket = open_ticket(client, buyer, order_id=paid["order_id"])
    tid = ticket["id"]
    note = client.post(f"/api/v1/tickets/{tid}/messages", headers=support_agent.headers,
                       json={"body": "Looks like a lost notification.", "internal": True})
    assert note.status_code == 201 and note.get_json()["kind"] == "note"
    seen = client.get(f"/api/v1/tickets/{tid}", headers=buyer.headers).get_json()
    assert [m["kind"] for m in seen["messages"]] == ["message"]
    assert seen["status"] == "open" and seen["first_response_at"] is None
    refused = client.post(f"/api/v1/tickets/{tid}/messages", headers=buyer.headers,
                          json={"body": "sneaky", "internal": True})
    assert refused.status_code == 400 and refused.get_json()["error"]["param"] == "internal"


def test_messages_are_plain_text_stored_and_returned_exactly_as_written(client, buyer, paid):
    body = '<script>alert("x")</script> & <b>bold</b>\n第二行'
    ticket = open_ticket(client, buyer, order_id=paid["order_id"], subject="<img src=x onerror=alert(1)>", body=body)
    fetched = client.get(f"/api/v1/tickets/{ticket['id']}", headers=buyer.headers)
    assert fetched.mimetype == "application/json"
    assert fetched.get_json()["subject"] == "<img src=x onerror=alert(1)>"
    assert fetched.get_json()["messages"][0]["body"] == body


def test_bad_ticket_input_is_400_and_writes_nothing(client, ctx, buyer):
    for body, code, param in (
            ({"subject": "Help", "body": ""}, "parameter_empty", "body"),
            ({"subject": "Help", "body": "   \n "}, "parameter_empty", "body"),
            ({"subject": "Help", "body": "x" * 2001}, "parameter_too_long", "body"),
            ({"subject": "", "body": "text"}, "invalid_parameter", "subject"),
            ({"subject": "Help", "body": "text", "category": "bogus"}, "invalid_parameter", "category"),
            ({"subject": "Help", "body": "text", "html": "<b>"}, "unknown_parameter", "html")):
        refused = client.post("/api/v1/tickets", headers=buyer.headers, json=body)
        assert refused.status_code == 400, body
        assert (refused.get_json()["error"]["code"], refused.get_json()["error"].get("param")) == (code, param)
    assert count(ctx, Ticket) == 0


def test_a_message_of_exactly_2000_characters_is_accepted_and_one_more_is_not(client, buyer, paid):
    ticket = open_ticket(client, buyer, order_id=paid["order_id"])
    ok = client.post(f"/api/v1/tickets/{ticket['id']}/messages", headers=buyer.headers, json={"body": "字" * 2000})
    assert ok.status_code == 201
    too_long = client.post(f"/api/v1/tickets/{ticket['id']}/messages", headers=buyer.headers,
                           json={"body": "字" * 2001})
    assert too_long.status_code == 400 and too_long.get_json()["error"]["param"] == "body"


def test_support_sees_the_whole_case_on_one_call(client, ctx, buyer, support_agent, paid, fake_channel):
    ticket = open_ticket(client, buyer, payment_id=paid["id"])
    case = client.get(f"/api/v1/support/tickets/{ticket['id']}", headers=support_agent.headers)
    assert case.status_code == 200
    case = case.get_json()
    assert case["ticket"]["buyer_id"] == buyer.id and case["buyer"]["email"] == buyer.email
    assert case["order"]["id"] == paid["order_id"] and case["order"]["status"] == "paid"
    assert [p["id"] for p in case["payments"]] == [paid["id"]]
    assert [(n["status"], n["payment_id"]) for n in case["notifications"]] == [("processed", paid["id"])]
    assert json.loads(case["notifications"][0]["body"])["payment_id"] == paid["id"]  # the raw body
    assert [e["status"] for e in case["entitlements"]] == ["active"]
    assert case["refunds"] == []
    # the risk module's decisions on the payment, when that module is installed
    assert all(decision["payment_id"] == paid["id"] for decision in case["risk_decisions"])
    assert case["first_reply_seconds"] is None
    queue = client.get("/api/v1/support/tickets?status=open", headers=support_agent.headers).get_json()
    assert [t["id"] for t in queue["data"]] == [ticket["id"]]
    assert client.get("/api/v1/support/tickets?status=resolved",
                      headers=support_agent.headers).get_json()["data"] == []


def test_support_refunds_from_the_ticket_through_the_refund_service_audited(
        client, ctx, make_user, buyer, support_agent, paid, fake_channel):
    ticket = open_ticket(client, buyer, payment_id=paid["id"], category="refund")
    without_second_factor = make_user("support")
    unproved = client.post(f"/api/v1/tickets/{ticket['id']}/refund", headers=without_second_factor.headers,
                           json={"amount": 1000, "reason": "goodwill"})
    assert unproved.status_code == 403 and unproved.get_json()["error"]["code"] == "two_factor_not_enabled"
    missing = client.post(f"/api/v1/tickets/{ticket['id']}/refund", headers=support_agent.headers, json={})
    assert missing.status_code == 400 and missing.get_json()["error"]["param"] == "reason"
    made = client.post(f"/api/v1/tickets/{ticket['id']}/refund", headers=support_agent.headers,
                       json={"amount": 1000, "reason": "course was unavailable for a day"})
    assert made.status_code == 201, made.get_json()
    refund = made.get_json()
    assert (refund["payment_id"], refund["amount"], refund["status"]) == (paid["id"], 1000, "succeeded")
    assert fake_channel.count("refund") == 1
    too_much = client.post(f"/api/v1/tickets/{ticket['id']}/refund", headers=support_agent.headers,
                           json={"amount": 9000, "reason": "again"})
    assert too_much.status_code == 409 and too_much.get_json()["error"]["code"] == "refund_exceeds_payment"
    with ctx.db.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(Refund)) == 1
        entry = session.scalars(select(TicketEntry).where(TicketEntry.kind == "refund_requested")).one()
        assert entry.data["refund_id"] == refund["id"] and entry.author_id == support_agent.id
        audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "support.refund_requested")).one()
        assert (audit.actor_id, audit.target) == (support_agent.id, refund["id"])
        assert json.loads(audit.details)["ticket_id"] == ticket["id"]
    assert any("¥10.00" in m["body"] for m in sent_mails(ctx) if m["to"] == buyer.email)
    case = client.get(f"/api/v1/support/tickets/{ticket['id']}", headers=support_agent.headers).get_json()
    assert [r["id"] for r in case["refunds"]] == [refund["id"]]


def test_support_grants_missing_access_from_the_ticket(client, ctx, buyer, support_agent, paid):
    with ctx.db.transaction() as session:  # the grant went missing
        session.execute(delete(Entitlement).where(Entitlement.order_id == paid["order_id"]))
    assert client.get("/api/v1/entitlements", headers=buyer.headers).get_json()["data"] == []
    ticket = open_ticket(client, buyer, order_id=paid["order_id"], category="paid_no_access")
    granted = client.post(f"/api/v1/tickets/{ticket['id']}/regrant", headers=support_agent.headers)
    assert granted.status_code == 200, granted.get_json()
    assert [e["status"] for e in granted.get_json()["data"]] == ["active"]
    assert [e["status"] for e in client.get("/api/v1/entitlements", headers=buyer.headers).get_json()["data"]] == [
        "active"]
    again = client.post(f"/api/v1/tickets/{ticket['id']}/regrant", headers=support_agent.headers)
    assert len(again.get_json()["data"]) == 1  # a replay grants nothing twice
    with ctx.db.transaction(write=False) as session:
        actions = session.scalars(select(AuditEntry.action).where(AuditEntry.action.like("support.%"))).all()
        assert actions == ["support.access_granted", "support.access_granted"]
    assert any("available in your library" in m["body"] for m in sent_mails(ctx))


def test_support_restores_access_a_mistaken_fraud_mark_revoked(client, ctx, buyer, admin, support_agent, paid):
    with ctx.db.transaction(write=False) as session:
        marker = session.get(User, admin.id)
    _, revoked = risk.mark_fraud(ctx, payment_id=paid["id"], admin=marker, note="looked stolen")
    assert [e["status"] for e in client.get("/api/v1/entitlements", headers=buyer.headers).get_json()["data"]] == [
        "revoked"]
    ticket = open_ticket(client, buyer, order_id=paid["order_id"], category="paid_no_access")
    restored = client.post(f"/api/v1/tickets/{ticket['id']}/regrant", headers=support_agent.headers)
    assert restored.status_code == 200, restored.get_json()
    assert [(e["id"], e["status"]) for e in restored.get_json()["data"]] == [(revoked[0], "active")]
    again = client.post(f"/api/v1/tickets/{ticket['id']}/regrant", headers=support_agent.headers)
    assert [e["id"] for e in again.get_json()["data"]] == [revoked[0]]
    with ctx.db.transaction(write=False) as session:
        events = session.execute(select(OutboxEvent.type, OutboxEvent.sequence).where(
            OutboxEvent.object_id == revoked[0]).order_by(OutboxEvent.sequence)).all()
        assert events == [("entitlement.granted", 1), ("entitlement.revoked", 2), ("entitlement.granted", 3)]
        entries = session.scalars(select(TicketEntry).where(TicketEntry.kind == "access_granted")
                                  .order_by(TicketEntry.seq)).all()
        assert [e.data["restored"] for e in entries] == [[revoked[0]], []]
    assert any("available in your library" in m["body"] for m in sent_mails(ctx))


def test_access_is_not_granted_for_an_unpaid_order(client, fake_channel, buyer, support_agent, published_product):
    pending = buy(client, fake_channel, buyer, published_product["id"], notify=False)
    ticket = open_ticket(client, buyer, payment_id=pending["id"])
    refused = client.post(f"/api/v1/tickets/{ticket['id']}/regrant", headers=support_agent.headers)
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "order_not_paid"


def test_support_asks_the_channel_from_the_ticket_and_a_paid_trade_completes(
        client, ctx, fake_channel, buyer, support_agent, published_product):
    pending = buy(client, fake_channel, buyer, published_product["id"], notify=False)
    ticket = open_ticket(client, buyer, payment_id=pending["id"], category="payment_stuck")
    fake_channel.trades[pending["id"]]["status"] = "succeeded"  # paid; the notification was lost
    checked = client.post(f"/api/v1/tickets/{ticket['id']}/check-payments", headers=support_agent.headers)
    assert checked.status_code == 200
    assert checked.get_json()["data"] == [{"payment_id": pending["id"], "channel": "sandbox",
                                           "before": "requires_action", "after": "succeeded"}]
    assert client.get(f"/api/v1/orders/{pending['order_id']}", headers=buyer.headers).get_json()["status"] == "paid"
