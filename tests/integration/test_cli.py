"""The `knowpay` command (API.md): init, users create, apikeys create — on SQLite."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect, select, update

from knowpay.cli import main
from knowpay.config import load_settings
from knowpay.db import Database
from knowpay.domain.clock import SystemClock
from tests.conftest import FAST_PASSWORDS


@pytest.fixture
def env(sqlite_url, tmp_path) -> dict[str, str]:
    return {"KNOWPAY_DATABASE_URL": sqlite_url, "KNOWPAY_INSTANCE_PATH": str(tmp_path / "instance")}


@pytest.fixture
def knowpay(env):
    """knowpay("users", "create", ...) → click's Result, run with the test database in the environment."""
    runner = CliRunner()

    def _run(*args: str):
        return runner.invoke(main, list(args), env=env, catch_exceptions=False)

    return _run


@pytest.fixture
def client(env):
    """A client of an app on the same database the commands write to."""
    from knowpay.web import create_app

    db = Database(env["KNOWPAY_DATABASE_URL"], pool_size=2)
    app = create_app(load_settings(env), db=db, clock=SystemClock(),
                     config={"TESTING": True, **FAST_PASSWORDS})
    yield app.test_client()
    db.dispose()


def test_init_creates_a_new_database_and_can_run_again(tmp_path):
    path = tmp_path / "fresh" / "knowpay.sqlite3"
    env = {"KNOWPAY_DATABASE_URL": f"sqlite:///{path}", "KNOWPAY_INSTANCE_PATH": str(tmp_path / "instance")}
    runner = CliRunner()
    first = runner.invoke(main, ["init"], env=env, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "database ready" in first.output
    assert path.exists()
    database = Database(env["KNOWPAY_DATABASE_URL"], pool_size=1)
    tables = set(inspect(database.engine).get_table_names())
    database.dispose()
    assert {"users", "products", "orders", "idempotency_keys", "alembic_version"} <= tables
    again = runner.invoke(main, ["init"], env=env, catch_exceptions=False)
    assert again.exit_code == 0, again.output


def test_init_defaults_to_a_file_in_the_instance_folder(tmp_path):
    instance = tmp_path / "instance"
    env = {"KNOWPAY_DATABASE_URL": "", "KNOWPAY_INSTANCE_PATH": str(instance)}
    result = CliRunner().invoke(main, ["init"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (instance / "knowpay.sqlite3").exists()


def test_init_refuses_a_bad_setting_with_a_message(tmp_path):
    result = CliRunner().invoke(main, ["init"], env={"KNOWPAY_INSTANCE_PATH": str(tmp_path),
                                                     "KNOWPAY_ENV": "staging"})
    assert result.exit_code != 0
    assert "KNOWPAY_ENV" in result.output


def test_a_user_created_on_the_command_line_can_get_a_token(knowpay, client):
    result = knowpay("users", "create", "--email", "Ann@Example.com", "--password", "long-enough-1")
    assert result.exit_code == 0, result.output
    assert "usr_" in result.output
    token = client.post("/api/v1/auth/token", json={"email": "ann@example.com", "password": "long-enough-1"})
    assert token.status_code == 200, token.get_json()
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token.get_json()['access_token']}"})
    assert me.get_json()["email"] == "ann@example.com"
    assert me.get_json()["username"] == "Ann"
    assert me.get_json()["roles"] == ["buyer"]


def test_a_creator_made_on_the_command_line_may_sell(knowpay, client):
    result = knowpay("users", "create", "--email", "cleo@example.com", "--password", "long-enough-1",
                     "--role", "creator", "--username", "cleo")
    assert result.exit_code == 0, result.output
    access = client.post("/api/v1/auth/token",
                         json={"email": "cleo@example.com", "password": "long-enough-1"})
    headers = {"Authorization": f"Bearer {access.get_json()['access_token']}"}
    made = client.post("/api/v1/products", headers=headers,
                       json={"title": "T", "kind": "course", "amount": 100, "currency": "cny"})
    assert made.status_code == 201, made.get_json()


def test_users_create_refuses_a_taken_email(knowpay):
    first = knowpay("users", "create", "--email", "ann@example.com", "--password", "long-enough-1")
    assert first.exit_code == 0
    again = knowpay("users", "create", "--email", "ann@example.com", "--password", "long-enough-1",
                    "--username", "ann2")
    assert again.exit_code == 1
    assert "already exists" in again.output


def test_users_create_refuses_a_short_password(knowpay, client):
    result = knowpay("users", "create", "--email", "ann@example.com", "--password", "short")
    assert result.exit_code == 1
    assert "at least" in result.output
    login = {"email": "ann@example.com", "password": "short"}
    assert client.post("/api/v1/auth/token", json=login).status_code == 401


def test_users_create_refuses_an_unknown_role(knowpay):
    result = knowpay("users", "create", "--email", "ann@example.com", "--password", "long-enough-1",
                     "--role", "owner")
    assert result.exit_code == 2
    assert "owner" in result.output


def test_apikeys_create_prints_an_sk_key_that_authenticates(knowpay, client):
    result = knowpay("apikeys", "create", "--name", "course-site")
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert key.startswith("sk_") and "\n" not in key
    assert len(key) > 30
    assert "store it now" in result.stderr
    listed = client.get("/api/v1/products", headers={"Authorization": f"Bearer {key}"})
    assert listed.status_code == 200, listed.get_json()
    assert listed.get_json() == {"data": [], "has_more": False, "next_cursor": None}


def test_every_api_key_is_new(knowpay):
    first = knowpay("apikeys", "create", "--name", "a").stdout.strip()
    second = knowpay("apikeys", "create", "--name", "a").stdout.strip()
    assert first != second


def test_an_invalid_api_key_is_401(knowpay, client):
    key = knowpay("apikeys", "create", "--name", "course-site").stdout.strip()
    response = client.get("/api/v1/products", headers={"Authorization": f"Bearer {key}x"})
    assert response.status_code == 401
    assert response.get_json()["error"]["type"] == "authentication"
    assert response.get_json()["error"]["code"] == "invalid_api_key"


def test_a_revoked_api_key_is_401(knowpay, client, env):
    from knowpay.accounts.models import ApiKey

    key = knowpay("apikeys", "create", "--name", "course-site").stdout.strip()
    database = Database(env["KNOWPAY_DATABASE_URL"], pool_size=1)
    with database.transaction() as session:
        session.execute(update(ApiKey).values(revoked_at=SystemClock().now()))
    database.dispose()
    assert client.get("/api/v1/products", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_the_api_key_is_stored_only_as_a_hash(knowpay, env):
    from knowpay.accounts.models import ApiKey

    key = knowpay("apikeys", "create", "--name", "course-site").stdout.strip()
    database = Database(env["KNOWPAY_DATABASE_URL"], pool_size=1)
    with database.transaction(write=False) as session:
        row = session.scalars(select(ApiKey)).one()
    database.dispose()
    assert row.name == "course-site"
    assert key not in (row.key_hash, row.prefix)
    assert key.startswith(row.prefix)


def test_an_api_key_acts_for_the_platform_not_a_user(knowpay, client):
    key = knowpay("apikeys", "create", "--name", "svc").stdout.strip()
    response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 403
    assert response.get_json()["error"]["type"] == "permission"


def test_apikeys_create_needs_a_name(knowpay):
    result = CliRunner().invoke(main, ["apikeys", "create"])
    assert result.exit_code == 2
    blank = knowpay("apikeys", "create", "--name", "  ")
    assert blank.exit_code == 1


def test_serve_offers_host_port_and_workers():
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--workers"):
        assert option in result.output
