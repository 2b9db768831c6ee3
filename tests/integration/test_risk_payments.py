"""Risk in front of payments: block, challenge with the second factor, review then approve or reject."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import func, select

from knowpay.access.models import Entitlement
from knowpay.accounts import totp
from knowpay.accounts.models import User
from knowpay.domain.errors import InvalidRequest
from knowpay.fieldcrypt import FieldCipher
from knowpay.outbox.models import OutboxEvent
from knowpay.payments.models import Payment
from knowpay.payments.service import PaymentAsk, create_payment
from knowpay.risk.models import RiskDecision, RiskLabel
from knowpay.security.lockout import account_key
from knowpay.security.models import SignInThrottle
from knowpay.web.api import payments as payments_api


def _order(client, buyer, product_id) -> dict:
    made = client.post("/api/v1/orders", headers=buyer.headers, json={"items": [{"product_id": product_id}]})
    assert made.status_code == 201, made.get_json()
    return made.get_json()


def _pay(client, buyer, order_id, **body):
    return client.post(f"/api/v1/orders/{order_id}/payments", headers=buyer.headers,
                       json={"channel": "sandbox", **body})


def _set_rule(client, admin, name, **changes) -> dict:
    answer = client.patch(f"/api/v1/risk/rules/{name}", headers=admin.headers, json=changes)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def _decisions(ctx) -> list[RiskDecision]:
    with ctx.db.transaction(write=False) as session:
        return list(session.scalars(select(RiskDecision).order_by(RiskDecision.created_at)))


def _enrol_second_factor(app, ctx, caller) -> list[str]:
    """Turn on TOTP for the caller the way the 2FA set-up does; returns their recovery codes."""
    cipher = FieldCipher(ctx.settings.encryption_keys)
    with app.app_context(), ctx.db.transaction() as session:
        user = session.get(User, caller.id)
        setup = totp.begin_totp_setup(user, cipher=cipher)
        return totp.confirm_totp_setup(session, user, totp.current_code(setup.secret, ctx.clock), cipher=cipher,
                                       clock=ctx.clock)


def _user(ctx, caller) -> User:
    with ctx.db.transaction(write=False) as session:
        user = session.get(User, caller.id)
        _ = user.roles
        return user


def test_a_blocked_buyer_is_refused_and_no_channel_hears_of_it(client, ctx, admin, buyer, published_product,
                                                               fake_channel):
    listed = client.post("/api/v1/risk/lists/email/entries", headers=admin.headers,
                         json={"value": buyer.email.upper(), "reason": "chargebacks"})
    assert listed.status_code == 201, listed.get_json()
    assert listed.get_json()["value"] == buyer.email and listed.get_json()["list"] == "block"
    order = _order(client, buyer, published_product["id"])

    refused = _pay(client, buyer, order["id"], device_id="phone-1")

    assert refused.status_code == 403
    assert refused.get_json()["error"]["type"] == "risk_blocked"
    assert refused.get_json()["error"]["code"] == "risk_blocked"
    assert fake_channel.calls == []
    [decision] = _decisions(ctx)
    assert (decision.outcome, decision.subject, decision.payment_id, decision.order_id) == (
        "block", "payment", None, order["id"])
    assert [f["rule"] for f in decision.fired] == ["blocklist"]
    with ctx.db.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(Payment)) == 0
        assert list(session.scalars(select(OutboxEvent.type).where(OutboxEvent.type.like("risk.%")))) == [
            "risk.blocked"]
    shown = client.get(f"/api/v1/risk/decisions/{decision.id}", headers=admin.headers)
    assert shown.status_code == 200
    body = shown.get_json()
    assert body["inputs"]["signals"]["email"] == buyer.email
    assert body["inputs"]["subject"]["device_id"] == "phone-1"
    assert body["fired"][0]["reason"] == f"on the block list: email {buyer.email}"
    assert client.get(f"/api/v1/risk/decisions/{decision.id}", headers=buyer.headers).status_code == 403


def test_an_ip_inside_a_blocked_range_is_refused(client, ctx, admin, buyer, published_product, fake_channel):
    assert client.post("/api/v1/risk/lists/ip/entries", headers=admin.headers,
                       json={"value": "36.112.0.0/16"}).status_code == 201
    order = _order(client, buyer, published_product["id"])
    refused = client.post(f"/api/v1/orders/{order['id']}/payments", headers=buyer.headers,
                          json={"channel": "sandbox"}, environ_base={"REMOTE_ADDR": "36.112.9.7"})
    assert refused.status_code == 403
    elsewhere = client.post(f"/api/v1/orders/{order['id']}/payments", headers=buyer.headers,
                            json={"channel": "sandbox"}, environ_base={"REMOTE_ADDR": "36.113.9.7"})
    assert elsewhere.status_code == 201, elsewhere.get_json()
    assert fake_channel.count("create") == 1


def test_a_payment_in_review_waits_then_goes_to_its_channel_when_approved(client, ctx, admin, buyer,
                                                                          published_product, fake_channel):
    _set_rule(client, admin, "amount", params={"max_amount": 5000})
    order = _order(client, buyer, published_product["id"])

    held = _pay(client, buyer, order["id"])

    assert held.status_code == 201, held.get_json()
    payment = held.get_json()
    assert (payment["status"], payment["action"]) == ("processing", None)
    assert fake_channel.calls == []
    queue = client.get("/api/v1/risk/reviews", headers=admin.headers).get_json()["data"]
    assert [(r["payment_id"], r["outcome"], r["review"]["status"]) for r in queue] == [
        (payment["id"], "review", "pending")]
    assert "amount 9900 above the limit 5000" in queue[0]["fired"][0]["reason"]
    again = _pay(client, buyer, order["id"])
    assert (again.status_code, again.get_json()["error"]["code"]) == (409, "payment_in_review")
    with ctx.db.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(Entitlement)) == 0
        assert "risk.review_required" in session.scalars(select(OutboxEvent.type)).all()

    approved = client.post(f"/api/v1/risk/reviews/{queue[0]['id']}/approve", headers=admin.headers,
                           json={"note": "known customer"})

    assert approved.status_code == 200, approved.get_json()
    assert approved.get_json()["review"]["status"] == "approved"
    assert fake_channel.count("create") == 1
    now = client.get(f"/api/v1/payments/{payment['id']}", headers=buyer.headers).get_json()
    assert now["action"] == {"type": "qr_code", "code_url": f"fake://pay/{payment['id']}"}
    with ctx.db.transaction(write=False) as session:
        assert session.get(Payment, payment["id"]).next_query_at is not None  # a lost notification is chased
    body = fake_channel.notification_body(payment["id"], payment["amount"])
    assert client.post("/notify/sandbox", data=body, content_type="application/json").status_code == 200
    assert client.get(f"/api/v1/payments/{payment['id']}", headers=buyer.headers).get_json()["status"] == "succeeded"
    assert [e["status"] for e in client.get("/api/v1/entitlements", headers=buyer.headers).get_json()["data"]] == [
        "active"]
    with ctx.db.transaction(write=False) as session:
        assert session.scalars(select(RiskLabel.label)).all() == ["legit"]
    twice = client.post(f"/api/v1/risk/reviews/{queue[0]['id']}/approve", headers=admin.headers, json={})
    assert (twice.status_code, twice.get_json()["error"]["code"]) == (409, "review_not_pending")
    assert fake_channel.count("create") == 1


def test_a_rejected_review_fails_the_payment_and_the_buyer_sees_why(app, client, ctx, admin, buyer,
                                                                    published_product, fake_channel, monkeypatch):
    monkeypatch.setattr(payments_api, "STREAM_POLL_SECONDS", 0.05)
    _set_rule(client, admin, "amount", params={"max_amount": 5000})
    order = _order(client, buyer, published_product["id"])
    payment = _pay(client, buyer, order["id"]).get_json()
    [review] = client.get("/api/v1/risk/reviews", headers=admin.headers).get_json()["data"]
    first = client.get(f"/api/v1/payments/{payment['id']}/stream", headers=buyer.headers, buffered=False)
    chunks = iter(first.response)
    seen = ""
    while "event: status" not in seen:
        seen += next(chunks).decode()

    rejected = client.post(f"/api/v1/risk/reviews/{review['id']}/reject", headers=admin.headers,
                           json={"note": "stolen card pattern"})

    assert rejected.status_code == 200, rejected.get_json()
    rest = "".join(c.decode() for c in chunks)
    events = [json.loads(block.split("data: ", 1)[1]) for block in (seen + rest).split("\n\n")
              if "event: status" in block]
    assert [(e["status"], e["failure_code"]) for e in events] == [("processing", None), ("failed", "risk_rejected")]
    shown = client.get(f"/api/v1/payments/{payment['id']}", headers=buyer.headers).get_json()
    assert (shown["status"], shown["failure_code"]) == ("failed", "risk_rejected")
    assert "security review" in shown["failure_message"]
    assert fake_channel.calls == []
    assert client.get("/api/v1/entitlements", headers=buyer.headers).get_json()["data"] == []
    with ctx.db.transaction(write=False) as session:
        assert session.scalars(select(RiskLabel.label)).all() == ["fraud"]
        assert "payment.failed" in session.scalars(select(OutboxEvent.type)).all()
    retry = _pay(client, buyer, order["id"])
    assert retry.status_code == 201  # decided: the order may be tried again (and is assessed again)


def test_a_challenge_goes_on_to_the_channel_with_the_buyers_second_factor(app, client, ctx, admin, buyer,
                                                                          published_product, fake_channel):
    recovery_codes = _enrol_second_factor(app, ctx, buyer)
    _set_rule(client, admin, "amount", action="challenge", params={"max_amount": 5000})
    order = _order(client, buyer, published_product["id"])

    challenged = _pay(client, buyer, order["id"])

    assert challenged.status_code == 201, challenged.get_json()
    assert challenged.get_json()["action"] == {"type": "otp_challenge"}
    assert challenged.get_json()["status"] == "requires_action"
    assert fake_channel.calls == []
    ask = PaymentAsk(channel="sandbox")
    with app.app_context():
        with pytest.raises(InvalidRequest) as wrong:
            create_payment(ctx, buyer=_user(ctx, buyer), order_id=order["id"],
                           ask=PaymentAsk(channel="sandbox", otp="000000"))
        assert (wrong.value.code, wrong.value.param) == ("invalid_otp", "otp")
        assert fake_channel.calls == []
        with ctx.db.transaction(write=False) as session:  # a guessed code counts towards the lockout too
            assert session.scalar(select(SignInThrottle.failures).where(
                SignInThrottle.key == account_key(buyer.email))) == 1

        paid = create_payment(ctx, buyer=_user(ctx, buyer), order_id=order["id"],
                              ask=PaymentAsk(channel=ask.channel, otp=recovery_codes[0]))

    assert paid.id == challenged.get_json()["id"]
    assert fake_channel.calls == [("create", paid.id)]
    assert paid.next_query_at is not None
    assert paid.action == {"type": "qr_code", "code_url": f"fake://pay/{paid.id}"}
    outcomes = [(d.outcome, d.challenge_passed_at is not None, d.payment_id) for d in _decisions(ctx)]
    assert outcomes == [("challenge", False, paid.id), ("challenge", False, None), ("challenge", True, paid.id)]


def test_a_challenge_for_a_buyer_without_a_second_factor_becomes_a_review(client, ctx, admin, buyer,
                                                                          published_product, fake_channel):
    _set_rule(client, admin, "amount", action="challenge", params={"max_amount": 5000})
    order = _order(client, buyer, published_product["id"])
    held = _pay(client, buyer, order["id"]).get_json()
    assert held["status"] == "processing"
    [decision] = _decisions(ctx)
    assert decision.outcome == "review" and "challenge not possible" in decision.inputs["notes"][0]
    assert fake_channel.calls == []


def test_a_wallet_payment_in_review_is_paid_from_the_wallet_on_approval(client, ctx, admin, creator, buyer,
                                                                        fake_channel):
    pack = client.post("/api/v1/products", headers=admin.headers, json={
        "title": "coins", "kind": "coin_pack", "amount": 20000, "currency": "cny", "coins": 20000}).get_json()
    client.post(f"/api/v1/products/{pack['id']}/publish", headers=admin.headers)
    course = client.post("/api/v1/products", headers=creator.headers, json={
        "title": "Course", "kind": "course", "amount": 15000, "currency": "cny"}).get_json()
    client.post(f"/api/v1/products/{course['id']}/publish", headers=creator.headers)
    top_up = _pay(client, buyer, _order(client, buyer, pack["id"])["id"]).get_json()
    body = fake_channel.notification_body(top_up["id"], top_up["amount"])
    assert client.post("/notify/sandbox", data=body, content_type="application/json").status_code == 200
    _set_rule(client, admin, "amount", params={"max_amount": 12000, "subjects": ["payment"]})

    held = _pay(client, buyer, _order(client, buyer, course["id"])["id"], channel="wallet").get_json()
    assert held["status"] == "processing"
    assert client.get("/api/v1/wallet", headers=buyer.headers).get_json()["balance"] == 20000
    [review] = client.get("/api/v1/risk/reviews", headers=admin.headers).get_json()["data"]
    assert client.post(f"/api/v1/risk/reviews/{review['id']}/approve", headers=admin.headers,
                       json={}).status_code == 200

    assert client.get(f"/api/v1/payments/{held['id']}", headers=buyer.headers).get_json()["status"] == "succeeded"
    assert client.get("/api/v1/wallet", headers=buyer.headers).get_json()["balance"] == 5000
    subjects = [d.subject for d in _decisions(ctx)]
    assert subjects == ["topup", "payment"]


def test_a_top_up_is_assessed_as_a_top_up(client, ctx, admin, buyer, fake_channel):
    pack = client.post("/api/v1/products", headers=admin.headers, json={
        "title": "coins", "kind": "coin_pack", "amount": 50000, "currency": "cny", "coins": 50000}).get_json()
    client.post(f"/api/v1/products/{pack['id']}/publish", headers=admin.headers)
    _set_rule(client, admin, "amount", action="block", params={"max_amount": 30000, "subjects": ["topup"]})
    refused = _pay(client, buyer, _order(client, buyer, pack["id"])["id"])
    assert refused.status_code == 403
    assert fake_channel.calls == []
    [decision] = _decisions(ctx)
    assert (decision.subject, decision.outcome, decision.amount) == ("topup", "block", 50000)


def test_marking_a_payment_fraudulent_revokes_its_access_and_labels_it(client, ctx, admin, buyer,
                                                                      published_product, fake_channel):
    payment = _pay(client, buyer, _order(client, buyer, published_product["id"])["id"]).get_json()
    body = fake_channel.notification_body(payment["id"], payment["amount"])
    client.post("/notify/sandbox", data=body, content_type="application/json")
    assert client.get("/api/v1/entitlements", headers=buyer.headers).get_json()["data"][0]["status"] == "active"

    marked = client.post(f"/api/v1/risk/payments/{payment['id']}/fraud", headers=admin.headers,
                         json={"note": "cardholder disputes it"})

    assert marked.status_code == 200, marked.get_json()
    assert len(marked.get_json()["revoked_entitlements"]) == 1
    assert client.get("/api/v1/entitlements", headers=buyer.headers).get_json()["data"][0]["status"] == "revoked"
    again = client.post(f"/api/v1/risk/payments/{payment['id']}/fraud", headers=admin.headers, json={})
    assert again.status_code == 200 and again.get_json()["revoked_entitlements"] == []
    with ctx.db.transaction(write=False) as session:
        assert [(lbl.label, lbl.source) for lbl in session.scalars(select(RiskLabel))] == [("fraud", "admin")]
        assert "entitlement.revoked" in session.scalars(select(OutboxEvent.type)).all()


def test_the_status_stream_tells_the_buyer_when_an_approved_review_gives_the_payment_its_action(
        client, ctx, admin, buyer, published_product, fake_channel, monkeypatch):
    monkeypatch.setattr(payments_api, "STREAM_POLL_SECONDS", 0.05)
    monkeypatch.setattr(payments_api, "STREAM_KEEPALIVE_SECONDS", 0.1)  # so a read never waits long
    _set_rule(client, admin, "amount", params={"max_amount": 5000})
    payment = _pay(client, buyer, _order(client, buyer, published_product["id"])["id"]).get_json()
    [review] = client.get("/api/v1/risk/reviews", headers=admin.headers).get_json()["data"]
    stream = client.get(f"/api/v1/payments/{payment['id']}/stream", headers=buyer.headers, buffered=False)
    chunks = iter(stream.response)
    seen = ""
    while "event: status" not in seen:
        seen += next(chunks).decode()

    assert client.post(f"/api/v1/risk/reviews/{review['id']}/approve", headers=admin.headers,
                       json={}).status_code == 200
    deadline = time.monotonic() + 5
    while seen.count("event: status") < 2 and time.monotonic() < deadline:
        seen += next(chunks).decode()
    body = fake_channel.notification_body(payment["id"], payment["amount"])
    assert client.post("/notify/sandbox", data=body, content_type="application/json").status_code == 200

    rest = "".join(c.decode() for c in chunks)
    events = [(block.split("id: ", 1)[1].split("\n", 1)[0], json.loads(block.split("data: ", 1)[1]))
              for block in (seen + rest).split("\n\n") if "event: status" in block]
    assert [(e["status"], (e["action"] or {}).get("type")) for _, e in events] == [
        ("processing", None), ("processing", "qr_code"), ("succeeded", "qr_code")]
    versions = [int(version) for version, _ in events]
    assert versions == sorted(set(versions))
