"""Shared fixtures: a migrated database per test on SQLite and (when it answers) PostgreSQL.

The schema always comes from the Alembic migrations, never from `create_all`, so the tests
also prove the migrations. SQLite: a migrated template file is copied per test. PostgreSQL:
one migrated database per test session, emptied with TRUNCATE between tests.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from knowpay.config import load_settings, normalise_database_url
from knowpay.db import Database
from knowpay.domain.clock import FixedClock, SystemClock
from knowpay.migrate import upgrade

FAST_PASSWORDS = {"SECURITY_PASSWORD_HASH_PASSLIB_OPTIONS": {"argon2__rounds": 1, "argon2__memory_cost": 1024}}
PG_ADMIN_URL = os.environ.get("KNOWPAY_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_reason() -> str | None:
    """None when PostgreSQL answers; otherwise why the PostgreSQL runs are skipped."""
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=2):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL at {PG_ADMIN_URL} does not answer ({exc.__class__.__name__}); set KNOWPAY_TEST_DATABASE_URL"


PG_SKIP_REASON = _pg_reason()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.sqlite3"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_test_url() -> Iterator[str]:
    if PG_SKIP_REASON:
        pytest.skip(PG_SKIP_REASON)
    name = f"knowpay_test_{os.getpid()}"
    admin = psycopg.connect(PG_ADMIN_URL, autocommit=True)
    admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    admin.execute(f'CREATE DATABASE "{name}"')
    base = normalise_database_url(PG_ADMIN_URL)
    url = base.rsplit("/", 1)[0] + "/" + name
    upgrade(url)
    yield url
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def _truncate_all(database: Database) -> None:
    with database.engine.begin() as conn:
        tables = [r[0] for r in conn.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"))]
        if tables:
            conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path) -> str:
    """A freshly migrated, empty database on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "knowpay.sqlite3"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("pg_test_url")
    database = Database(url, pool_size=1)
    _truncate_all(database)
    database.dispose()
    return url


@pytest.fixture
def sqlite_url(tmp_path, sqlite_template) -> str:
    """An empty migrated SQLite database only, for tests that need no second backend."""
    path = tmp_path / "knowpay.sqlite3"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def db(database_url) -> Iterator[Database]:
    database = Database(database_url, pool_size=10)
    yield database
    database.dispose()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 11, 25, 4, 0, 0))


@pytest.fixture
def settings(database_url, tmp_path):
    return load_settings({"KNOWPAY_DATABASE_URL": database_url, "KNOWPAY_INSTANCE_PATH": str(tmp_path)})


@pytest.fixture
def fake_channel():
    """A recording stand-in for a payment channel, registered as `sandbox`."""
    from tests.fakes import FakeChannel

    return FakeChannel()


@pytest.fixture
def app(settings, db, fake_channel):
    from knowpay.channels import Registry
    from knowpay.channels.bank_transfer import BankTransferChannel
    from knowpay.web import create_app

    bank = BankTransferChannel("KnowPay Test Ltd", "6222 1111 2222 3333", "Test Bank", days=3)
    application = create_app(settings, db=db, clock=SystemClock(), config={"TESTING": True, **FAST_PASSWORDS},
                             channels=Registry({"sandbox": fake_channel, "bank_transfer": bank}))
    return application


@pytest.fixture
def ctx(app):
    """The running app's Context (settings, db, clock, channels) for calling services directly."""
    return app.extensions["knowpay"]


@pytest.fixture
def client(app):
    return app.test_client()


class Caller:
    """A user of the API in tests: their id, e-mail and ready-made Authorization headers; with
    `totp_secret` when two-factor sign-in is on (its token then holds a fresh step-up)."""

    def __init__(self, id: str, email: str, token: str, totp_secret: str | None = None) -> None:
        self.id, self.email, self.token, self.totp_secret = id, email, token, totp_secret

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_user(app):
    """make_user("creator") → a Caller with a fresh account of that role and a bearer token.

    `second_factor=True`: two-factor sign-in on and the token signed in with it, as staff need for
    actions that move money or change roles (the step-up lasts KNOWPAY_STEP_UP_SECONDS)."""
    from knowpay.accounts import service as accounts
    from knowpay.accounts import totp
    from knowpay.fieldcrypt import FieldCipher

    rt = app.extensions["knowpay"]
    counter = iter(range(1, 10_000))

    def _make(role: str = "buyer", *, password: str = "correct-horse-9", second_factor: bool = False) -> Caller:
        n = next(counter)
        email = f"{role}{n}@example.com"
        secret = None
        with app.app_context(), rt.db.transaction() as session:
            user = accounts.register_user(session, email=email, password=password, username=f"{role}{n}",
                                          roles=(role,), clock=rt.clock)
            if second_factor:
                cipher = FieldCipher(rt.settings.encryption_keys)
                secret = totp.begin_totp_setup(user, cipher=cipher).secret
                totp.confirm_totp_setup(session, user, totp.current_code(secret, rt.clock), cipher=cipher,
                                        clock=rt.clock)
            issued = accounts.issue_token(session, user, clock=rt.clock, second_factor=second_factor)
            return Caller(user.id, email, issued.token, secret)

    return _make


@pytest.fixture
def buyer(make_user) -> Caller:
    return make_user("buyer")


@pytest.fixture
def creator(make_user) -> Caller:
    return make_user("creator")


@pytest.fixture
def admin(make_user) -> Caller:
    """An admin signed in with a second factor (money and role actions need one)."""
    return make_user("admin", second_factor=True)


@pytest.fixture
def published_product(client, creator) -> dict:
    """A published 99.00 CNY course by `creator`."""
    made = client.post("/api/v1/products", headers=creator.headers,
                       json={"title": "Course A", "kind": "course", "amount": 9900, "currency": "cny"})
    assert made.status_code == 201, made.get_json()
    published = client.post(f"/api/v1/products/{made.get_json()['id']}/publish", headers=creator.headers)
    assert published.status_code == 200, published.get_json()
    return published.get_json()
