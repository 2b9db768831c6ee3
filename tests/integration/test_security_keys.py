"""Field-encryption key rotation: after a new key goes first, old values still decrypt; `knowpay keys
rotate` re-encrypts TOTP keys and payout bank details under it, after which the old key can go."""

from __future__ import annotations

import base64
import gc
from datetime import datetime

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from knowpay.accounts import totp
from knowpay.accounts.models import User
from knowpay.channels import Registry
from knowpay.cli import main
from knowpay.config import load_settings
from knowpay.fieldcrypt import DecryptionError, FieldCipher
from knowpay.payouts.models import Payout, PayoutAccount
from knowpay.web import create_app
from tests.conftest import FAST_PASSWORDS

OLD = "k1:" + base64.b64encode(b"1" * 32).decode()
NEW = "k2:" + base64.b64encode(b"2" * 32).decode()
PASSWORD = "correct-horse-9"


def env_for(db, tmp_path, keys: str) -> dict[str, str]:
    return {"KNOWPAY_DATABASE_URL": db.url, "KNOWPAY_INSTANCE_PATH": str(tmp_path), "KNOWPAY_ENCRYPTION_KEYS": keys}


def app_with(db, tmp_path, clock, fake_channel, keys: str):
    return create_app(load_settings(env_for(db, tmp_path, keys)), db=db, clock=clock,
                      config={"TESTING": True, **FAST_PASSWORDS}, channels=Registry({"sandbox": fake_channel}))


@pytest.fixture
def app(db, tmp_path, clock, fake_channel):
    return app_with(db, tmp_path, clock, fake_channel, OLD)


@pytest.fixture
def encrypted(client, ctx, db, buyer, creator, clock) -> dict:
    """A buyer's TOTP key and a creator's bank account (and a payout's copy of it), all under k1."""
    setup = client.post("/api/v1/me/2fa/setup", headers=buyer.headers).get_json()
    assert client.post("/api/v1/me/2fa/confirm", headers=buyer.headers,
                       json={"otp": totp.current_code(setup["secret"], clock)}).status_code == 200
    account = client.put("/api/v1/creator/payout-account", headers=creator.headers,
                         json={"holder_name": "李雷", "bank_name": "ICBC", "account_number": "6222 0000 1111 2222"})
    assert account.status_code == 200, account.get_json()
    with db.transaction() as session:
        stored = session.get(PayoutAccount, creator.id).details_encrypted
        session.add(Payout(creator_id=creator.id, amount=100, currency="cny", status="requested",
                           destination_encrypted=stored, destination_display="ICBC ****2222",
                           created_at=datetime(2026, 11, 25, 4, 0)))
    clock.advance(seconds=30)
    return {"secret": setup["secret"], "buyer": buyer, "creator": creator}


def stored_values(db) -> list[str]:
    with db.transaction(write=False) as session:
        return [*session.scalars(select(User.tf_totp_secret).where(User.tf_totp_secret.is_not(None))),
                *session.scalars(select(PayoutAccount.details_encrypted)),
                *session.scalars(select(Payout.destination_encrypted))]


def rotate(db, tmp_path, keys: str):
    result = CliRunner().invoke(main, ["keys", "rotate", "--batch", "1"], env=env_for(db, tmp_path, keys),
                                catch_exceptions=False)
    gc.collect()  # the command's engine closes its connections, as a finished process would
    return result


def test_rotation_re_encrypts_everything_and_old_values_work_until_then(db, tmp_path, clock, fake_channel,
                                                                         encrypted):
    values = stored_values(db)
    assert len(values) == 3 and all(v.startswith("kpe1:k1:") for v in values)
    # k2 goes first: values under k1 still decrypt, so two-factor sign-in keeps working.
    both = app_with(db, tmp_path, clock, fake_channel, f"{NEW},{OLD}").test_client()
    buyer = encrypted["buyer"]
    signed_in = both.post("/api/v1/auth/token", json={"email": buyer.email, "password": PASSWORD,
                                                      "otp": totp.current_code(encrypted["secret"], clock)})
    assert signed_in.status_code == 200, signed_in.get_json()

    result = rotate(db, tmp_path, f"{NEW},{OLD}")
    assert result.exit_code == 0, result.output
    assert "two-factor keys:" in result.stderr and "payout bank accounts:" in result.stderr  # progress
    assert "every encrypted value now uses key 'k2'" in result.stdout
    rotated = stored_values(db)
    assert all(v.startswith("kpe1:k2:") for v in rotated) and set(rotated).isdisjoint(values)

    # Without k1 everything still reads.
    only_new = FieldCipher([("k2", b"2" * 32)])
    with db.transaction(write=False) as session:
        account = session.get(PayoutAccount, encrypted["creator"].id)
        details = only_new.decrypt_json(account.details_encrypted, context=f"payout_account:{account.creator_id}")
        payout = session.scalars(select(Payout)).one()
        assert only_new.decrypt_json(payout.destination_encrypted, context=f"payout_account:{payout.creator_id}") \
            == details
    assert details["account_number"].replace(" ", "").endswith("2222")
    clock.advance(seconds=30)
    new_only_app = app_with(db, tmp_path, clock, fake_channel, NEW).test_client()
    assert new_only_app.post("/api/v1/auth/token", json={
        "email": buyer.email, "password": PASSWORD,
        "otp": totp.current_code(encrypted["secret"], clock)}).status_code == 200
    # Nothing is left to do the second time.
    assert rotate(db, tmp_path, NEW).exit_code == 0
    assert stored_values(db) == rotated


def test_a_value_no_key_can_read_is_reported_and_left_alone(db, tmp_path, encrypted):
    result = rotate(db, tmp_path, NEW)  # k1 forgotten too early
    assert result.exit_code == 1
    assert "UNREADABLE two-factor keys" in result.stderr
    assert all(v.startswith("kpe1:k1:") for v in stored_values(db))
    with pytest.raises(DecryptionError):
        FieldCipher([("k2", b"2" * 32)]).decrypt(stored_values(db)[0])
