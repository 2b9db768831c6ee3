"""Accounts over the API: register, exchange a password for a token, and who am I."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from knowpay.accounts.models import AccessToken, User
from knowpay.domain.ids import has_prefix

PASSWORD = "long-enough-1"


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def register(client, email="ann@example.com", password=PASSWORD, username="ann"):
    return client.post("/api/v1/auth/register",
                       json={"email": email, "password": password, "username": username})


def token_for(client, email="ann@example.com", password=PASSWORD):
    return client.post("/api/v1/auth/token", json={"email": email, "password": password})


def assert_error(response, status: int, type_: str, code: str | None = None):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["type"] == type_
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def count_users(db) -> int:
    with db.transaction(write=False) as session:
        return session.scalar(select(func.count()).select_from(User))


def test_register_answers_201_with_the_user_shape(client):
    response = register(client)
    assert response.status_code == 201, response.get_json()
    user = response.get_json()
    assert set(user) == {"id", "email", "username", "roles", "created_at"}
    assert has_prefix(user["id"], "usr")
    assert user["email"] == "ann@example.com"
    assert user["username"] == "ann"
    assert user["roles"] == ["buyer"]
    assert user["created_at"].endswith("Z")
    created = datetime.fromisoformat(user["created_at"].removesuffix("Z"))
    assert abs(created - utcnow()) < timedelta(minutes=1)
    assert "password" not in response.get_data(as_text=True)


def test_register_ids_are_not_sequential(client):
    first = register(client, "a1@example.com", username="a1").get_json()["id"]
    second = register(client, "a2@example.com", username="a2").get_json()["id"]
    assert first != second
    assert has_prefix(first, "usr") and has_prefix(second, "usr")


def test_register_with_a_taken_email_is_409_and_adds_nobody(client, db):
    assert register(client).status_code == 201
    before = count_users(db)
    error = assert_error(register(client, "ANN@example.com", username="ann2"), 409, "conflict", "email_taken")
    assert error["param"] == "email"
    assert count_users(db) == before


def test_register_with_a_taken_username_is_409(client):
    assert register(client).status_code == 201
    assert_error(register(client, "bob@example.com", username="ann"), 409, "conflict")


def test_register_refuses_a_short_password_naming_it(client, db):
    error = assert_error(register(client, password="short"), 400, "invalid_request")
    assert error["param"] == "password"
    assert count_users(db) == 0


def test_register_refuses_an_invalid_email_naming_it(client, db):
    error = assert_error(register(client, email="not-an-email"), 400, "invalid_request")
    assert error["param"] == "email"
    assert count_users(db) == 0


@pytest.mark.parametrize("missing", ["email", "password", "username"])
def test_register_names_a_missing_field(client, missing):
    body = {"email": "ann@example.com", "password": PASSWORD, "username": "ann"}
    del body[missing]
    error = assert_error(client.post("/api/v1/auth/register", json=body), 400, "invalid_request")
    assert error["param"] == missing


def test_register_cannot_choose_roles(client):
    response = client.post("/api/v1/auth/register", json={
        "email": "ann@example.com", "password": PASSWORD, "username": "ann", "roles": ["admin"]})
    error = assert_error(response, 400, "invalid_request")
    assert error["param"] == "roles"


def test_token_for_the_right_password_is_a_bearer_token(client):
    register(client)
    response = token_for(client)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["token_type"] == "bearer"
    assert body["access_token"]
    expires = datetime.fromisoformat(body["expires_at"].removesuffix("Z"))
    assert expires > utcnow() + timedelta(minutes=5)


def test_token_email_is_case_insensitive(client):
    register(client)
    assert token_for(client, email="Ann@Example.COM").status_code == 200


def test_token_with_a_wrong_password_is_401_invalid_credentials(client):
    register(client)
    assert_error(token_for(client, password="wrong-password-1"), 401, "authentication", "invalid_credentials")


def test_token_for_an_unknown_email_is_the_same_401(client):
    assert_error(token_for(client, email="nobody@example.com"), 401, "authentication", "invalid_credentials")


def test_me_returns_the_caller(client):
    user = register(client).get_json()
    access = token_for(client).get_json()["access_token"]
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {access}"})
    assert me.status_code == 200
    assert me.get_json() == user


def test_me_for_a_made_user_shows_its_role(client, creator):
    me = client.get("/api/v1/me", headers=creator.headers)
    assert me.status_code == 200
    assert me.get_json()["id"] == creator.id
    assert me.get_json()["roles"] == ["creator"]


def test_me_without_a_token_is_401(client):
    assert_error(client.get("/api/v1/me"), 401, "authentication", "authentication_required")


def test_me_with_an_unknown_token_is_401(client):
    assert_error(client.get("/api/v1/me", headers={"Authorization": "Bearer kpt_made-up"}),
                 401, "authentication", "invalid_token")


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "token-without-scheme"])
def test_me_with_a_malformed_authorization_header_is_401(client, header):
    assert_error(client.get("/api/v1/me", headers={"Authorization": header}), 401, "authentication")


def test_me_with_an_expired_token_is_401(client, db, buyer):
    assert client.get("/api/v1/me", headers=buyer.headers).status_code == 200
    with db.transaction() as session:
        session.execute(update(AccessToken).where(AccessToken.user_id == buyer.id)
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
    assert_error(client.get("/api/v1/me", headers=buyer.headers), 401, "authentication", "invalid_token")


def test_me_with_a_revoked_token_is_401(client, db, buyer):
    with db.transaction() as session:
        session.execute(update(AccessToken).where(AccessToken.user_id == buyer.id)
                        .values(revoked_at=utcnow()))
    assert_error(client.get("/api/v1/me", headers=buyer.headers), 401, "authentication", "invalid_token")


def test_a_deactivated_user_token_stops_working(client, db, buyer):
    with db.transaction() as session:
        session.execute(update(User).where(User.id == buyer.id).values(active=False))
    assert_error(client.get("/api/v1/me", headers=buyer.headers), 401, "authentication")


def test_a_deactivated_user_cannot_get_a_token(client, db):
    register(client)
    with db.transaction() as session:
        session.execute(update(User).values(active=False))
    assert_error(token_for(client), 401, "authentication", "invalid_credentials")


def test_a_password_hashed_with_older_settings_still_logs_in_and_is_rehashed(client, db, settings):
    from knowpay.accounts import service as accounts
    from knowpay.domain.clock import SystemClock
    from knowpay.web import create_app

    # The account was made when the hash settings were different (here: the production defaults).
    older = create_app(settings, db=db, clock=SystemClock(), config={"TESTING": True})
    with older.app_context(), db.transaction() as session:
        accounts.register_user(session, email="ann@example.com", password=PASSWORD, username="ann",
                               clock=SystemClock())
    with db.transaction(write=False) as session:
        old_hash = session.scalars(select(User.password)).one()
    response = token_for(client)
    assert response.status_code == 200, response.get_json()
    with db.transaction(write=False) as session:
        new_hash = session.scalars(select(User.password)).one()
    assert new_hash != old_hash
    assert token_for(client).status_code == 200
    assert token_for(client, password="wrong-password-1").status_code == 401
