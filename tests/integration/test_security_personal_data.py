"""Personal data: a user exports everything we hold about them, and deleting the account anonymises
the person but keeps the orders, payments, refunds and ledger that the law requires."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from knowpay.accounts import totp
from knowpay.accounts.models import AccessToken, RecoveryCode, User
from knowpay.channels import Registry
from knowpay.ledger.models import Posting
from knowpay.orders.models import Order
from knowpay.payments.models import Payment
from knowpay.refunds.models import Refund
from knowpay.security.models import AuditEntry
from knowpay.web import create_app
from tests.conftest import FAST_PASSWORDS

PASSWORD = "correct-horse-9"


@pytest.fixture
def app(settings, db, fake_channel, clock):
    return create_app(settings, db=db, clock=clock, config={"TESTING": True, **FAST_PASSWORDS},
                      channels=Registry({"sandbox": fake_channel}))


@pytest.fixture
def paid(client, buyer, published_product, fake_channel) -> dict:
    order = client.post("/api/v1/orders", headers=buyer.headers,
                        json={"items": [{"product_id": published_product["id"]}]}).get_json()
    payment = client.post(f"/api/v1/orders/{order['id']}/payments", headers=buyer.headers,
                          json={"channel": "sandbox"}).get_json()
    body = fake_channel.notification_body(payment["id"], payment["amount"])
    assert client.post("/notify/sandbox", data=body, content_type="application/json").status_code == 200
    refund = client.post("/api/v1/refunds", headers=buyer.headers, json={"payment_id": payment["id"], "amount": 900})
    assert refund.status_code == 201, refund.get_json()
    return {"order": order, "payment": payment, "refund": refund.get_json()}


def counts(db, buyer_id: str) -> dict:
    with db.transaction(write=False) as session:
        return {
            "orders": session.scalar(select(func.count()).select_from(Order).where(Order.buyer_id == buyer_id)),
            "payments": session.scalar(select(func.count()).select_from(Payment).where(Payment.buyer_id == buyer_id)),
            "refunds": session.scalar(select(func.count()).select_from(Refund)),
            "postings": session.scalar(select(func.count()).select_from(Posting)),
        }


def test_the_export_holds_the_account_and_its_money_but_no_secrets(client, buyer, paid):
    response = client.get("/api/v1/me/export", headers=buyer.headers)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    data = response.get_json()
    assert data["format"] == "knowpay-personal-data/1"
    assert (data["account"]["id"], data["account"]["email"], data["account"]["roles"]) == (
        buyer.id, buyer.email, ["buyer"])
    assert [o["id"] for o in data["orders"]] == [paid["order"]["id"]]
    assert [p["id"] for p in data["payments"]] == [paid["payment"]["id"]]
    assert [(r["id"], r["amount"]) for r in data["refunds"]] == [(paid["refund"]["id"], 900)]
    assert [e["order_id"] for e in data["entitlements"]] == [paid["order"]["id"]]
    assert data["wallet"] == {"balance": 0, "currency": "coin"}
    assert len(data["sign_in_tokens"]) == 1
    assert data["tickets"] == []
    text = json.dumps(data)
    assert buyer.token not in text and "argon2" not in text and "token_hash" not in text


def test_deleting_needs_the_password(client, buyer):
    wrong = client.delete("/api/v1/me", headers=buyer.headers, json={"password": "not-the-password"})
    assert wrong.status_code == 401 and wrong.get_json()["error"]["code"] == "invalid_credentials"
    assert client.get("/api/v1/me", headers=buyer.headers).status_code == 200


def test_deleting_the_account_anonymises_it_and_keeps_the_money_records(client, db, buyer, paid):
    before = counts(db, buyer.id)
    other = client.post("/api/v1/auth/token", json={"email": buyer.email, "password": PASSWORD}).get_json()
    deleted = client.delete("/api/v1/me", headers=buyer.headers, json={"password": PASSWORD})
    assert deleted.status_code == 200, deleted.get_json()
    assert deleted.get_json() == {"deleted": True, "id": buyer.id}

    with db.transaction(write=False) as session:
        user = session.get(User, buyer.id)
        assert (user.email, user.username, user.password, user.active) == (
            f"deleted-{buyer.id}@invalid", None, None, False)
        assert user.deleted_at is not None and user.tf_totp_secret is None
        assert session.scalar(select(func.count()).select_from(AccessToken)
                              .where(AccessToken.user_id == buyer.id, AccessToken.revoked_at.is_(None))) == 0
        assert session.scalar(select(AuditEntry.action).where(AuditEntry.target == buyer.id)
                              .order_by(AuditEntry.seq.desc()).limit(1)) == "user.deleted"
    assert counts(db, buyer.id) == before
    for token in (buyer.token, other["access_token"]):
        assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert client.post("/api/v1/auth/token", json={"email": buyer.email, "password": PASSWORD}).status_code == 401
    # The address is free again for a new account.
    again = client.post("/api/v1/auth/register", json={"email": buyer.email, "password": PASSWORD, "username": "new"})
    assert again.status_code == 201


def test_deleting_with_two_factor_on_needs_the_code_too(client, db, buyer, clock):
    setup = client.post("/api/v1/me/2fa/setup", headers=buyer.headers).get_json()
    client.post("/api/v1/me/2fa/confirm", headers=buyer.headers, json={"otp": totp.current_code(setup["secret"], clock)})
    clock.advance(seconds=30)
    missing = client.delete("/api/v1/me", headers=buyer.headers, json={"password": PASSWORD})
    assert missing.status_code == 401 and missing.get_json()["error"]["code"] == "otp_required"
    done = client.delete("/api/v1/me", headers=buyer.headers,
                          json={"password": PASSWORD, "otp": totp.current_code(setup["secret"], clock)})
    assert done.status_code == 200, done.get_json()
    with db.transaction(write=False) as session:
        assert session.get(User, buyer.id).tf_primary_method is None
        assert session.scalar(select(func.count()).select_from(RecoveryCode)
                              .where(RecoveryCode.user_id == buyer.id)) == 0
