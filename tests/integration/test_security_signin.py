"""Signing in for a token: lockout with backoff, two-factor codes and recovery codes, token expiry
and revocation, and step-up for admin actions — with a clock the tests move."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from knowpay.accounts import totp
from knowpay.accounts.models import AccessToken, User
from knowpay.channels import Registry
from knowpay.config import LockoutPolicy
from knowpay.security.models import AuditEntry
from knowpay.web import create_app
from tests.conftest import FAST_PASSWORDS

PASSWORD = "correct-horse-9"  # what make_user gives every account


@pytest.fixture
def settings(settings):
    # Small numbers so a test reaches the lockout quickly; the rate limits stay out of the way here.
    return settings.with_overrides(lockout=LockoutPolicy(threshold=3, ip_threshold=100, base_seconds=60,
                                                         max_seconds=600, window_seconds=3600))


@pytest.fixture
def app(settings, db, fake_channel, clock):
    return create_app(settings, db=db, clock=clock, config={"TESTING": True, **FAST_PASSWORDS},
                      channels=Registry({"sandbox": fake_channel}))


def sign_in(client, email, password=PASSWORD, **extra):
    return client.post("/api/v1/auth/token", json={"email": email, "password": password, **extra})


def error_of(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()["error"]


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def turn_on_totp(client, caller, clock) -> tuple[str, list[str]]:
    """Set up two-factor for `caller` through the API; returns the key and the recovery codes."""
    setup = client.post("/api/v1/me/2fa/setup", headers=caller.headers)
    assert setup.status_code == 200, setup.get_json()
    secret = setup.get_json()["secret"]
    assert setup.get_json()["otpauth_uri"].startswith("otpauth://totp/KnowPay:")
    confirm = client.post("/api/v1/me/2fa/confirm", headers=caller.headers,
                          json={"otp": totp.current_code(secret, clock)})
    assert confirm.status_code == 200, confirm.get_json()
    codes = confirm.get_json()["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    clock.advance(seconds=30)  # the next code is a new one
    return secret, codes


def test_guessing_passwords_ends_in_429_and_a_lockout_that_backs_off(client, buyer, clock, db):
    for _ in range(2):
        assert error_of(sign_in(client, buyer.email, "wrong-password-1"), 401)["code"] == "invalid_credentials"
    # The third failure locks for the base period; the right password does not get through now.
    assert sign_in(client, buyer.email, "wrong-password-1").status_code == 401
    locked = sign_in(client, buyer.email)
    assert error_of(locked, 429) == {"type": "rate_limited", "code": "too_many_attempts",
                                     "message": locked.get_json()["error"]["message"]}
    assert locked.headers["Retry-After"] == "60"

    clock.advance(seconds=61)
    # After the lock, one more wrong guess locks for twice as long.
    assert sign_in(client, buyer.email, "wrong-password-1").status_code == 401
    assert sign_in(client, buyer.email).headers["Retry-After"] == "120"
    clock.advance(seconds=61)
    assert error_of(sign_in(client, buyer.email), 429)["code"] == "too_many_attempts"
    clock.advance(seconds=60)
    assert sign_in(client, buyer.email).status_code == 200
    # Success clears the count: the next wrong guess is not locked at once.
    assert sign_in(client, buyer.email, "wrong-password-1").status_code == 401
    assert sign_in(client, buyer.email).status_code == 200
    with db.transaction(write=False) as session:
        actions = session.scalars(select(AuditEntry.action).order_by(AuditEntry.seq)).all()
    assert actions.count("auth.locked_out") == 2
    assert actions.count("auth.login_failed") == 5


def test_a_lockout_is_the_same_for_an_unknown_email(client, clock):
    for _ in range(3):
        assert error_of(sign_in(client, "nobody@example.com", "wrong-password-1"), 401)["code"] == "invalid_credentials"
    assert error_of(sign_in(client, "nobody@example.com"), 429)["code"] == "too_many_attempts"


def test_one_address_guessing_many_accounts_is_locked_out(client, settings, db, clock, make_user):
    from knowpay.web import create_app as build

    strict = settings.with_overrides(lockout=LockoutPolicy(threshold=100, ip_threshold=4, base_seconds=30))
    app = build(strict, db=db, clock=clock, config={"TESTING": True, **FAST_PASSWORDS})
    other = app.test_client()
    for n in range(4):
        assert sign_in(other, f"someone{n}@example.com", "wrong-password-1").status_code == 401
    victim = make_user("buyer")
    assert error_of(sign_in(other, victim.email), 429)["code"] == "too_many_attempts"


def test_an_expired_token_fails_and_a_fresh_one_lasts_the_configured_time(client, buyer, clock, settings):
    assert client.get("/api/v1/me", headers=buyer.headers).status_code == 200
    fresh = sign_in(client, buyer.email).get_json()
    clock.advance(seconds=settings.token_ttl_seconds - 1)
    assert client.get("/api/v1/me", headers=bearer(fresh["access_token"])).status_code == 200
    clock.advance(seconds=1)
    assert error_of(client.get("/api/v1/me", headers=bearer(fresh["access_token"])), 401)["code"] == "invalid_token"


def test_a_revoked_token_fails_and_others_keep_working(client, buyer, db):
    second = sign_in(client, buyer.email).get_json()["access_token"]
    revoked = client.post("/api/v1/auth/revoke", headers=bearer(second))
    assert revoked.status_code == 200 and revoked.get_json() == {"revoked": 1}
    assert error_of(client.get("/api/v1/me", headers=bearer(second)), 401)["code"] == "invalid_token"
    assert client.get("/api/v1/me", headers=buyer.headers).status_code == 200
    # DELETE /auth/token does the same for the token it is called with.
    assert client.delete("/api/v1/auth/token", headers=buyer.headers).get_json() == {"revoked": 1}
    assert client.get("/api/v1/me", headers=buyer.headers).status_code == 401
    with db.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(AuditEntry)
                              .where(AuditEntry.action == "auth.token_revoked")) == 2


def test_signing_out_everywhere_revokes_every_token(client, buyer):
    others = [sign_in(client, buyer.email).get_json()["access_token"] for _ in range(2)]
    assert client.delete("/api/v1/me/tokens", headers=buyer.headers).get_json() == {"revoked": 3}
    for token in [buyer.token, *others]:
        assert client.get("/api/v1/me", headers=bearer(token)).status_code == 401


def test_two_factor_asks_for_the_code_refuses_a_wrong_one_and_takes_a_good_one(client, buyer, clock, db):
    secret, _ = turn_on_totp(client, buyer, clock)
    with db.transaction(write=False) as session:
        stored = session.get(User, buyer.id).tf_totp_secret
    assert stored.startswith("kpe1:") and secret not in stored

    assert error_of(sign_in(client, buyer.email), 401) | {"message": ""} == {
        "type": "authentication", "code": "otp_required", "message": "", "param": "otp"}
    assert error_of(sign_in(client, buyer.email, otp="000000"), 401)["code"] == "invalid_otp"
    # Without the right password the code is never asked for.
    assert error_of(sign_in(client, buyer.email, "wrong-password-1"), 401)["code"] == "invalid_credentials"

    good = sign_in(client, buyer.email, otp=totp.current_code(secret, clock))
    assert good.status_code == 200, good.get_json()
    # The same code does not work twice.
    assert error_of(sign_in(client, buyer.email, otp=totp.current_code(secret, clock)), 401)["code"] == "invalid_otp"
    clock.advance(seconds=30)
    assert sign_in(client, buyer.email, otp=totp.current_code(secret, clock)).status_code == 200


def test_a_recovery_code_works_once(client, buyer, clock):
    _, codes = turn_on_totp(client, buyer, clock)
    assert sign_in(client, buyer.email, otp=codes[0].upper()).status_code == 200
    assert error_of(sign_in(client, buyer.email, otp=codes[0]), 401)["code"] == "invalid_otp"
    assert sign_in(client, buyer.email, otp=codes[1].replace("-", "")).status_code == 200
    status = client.get("/api/v1/me/2fa", headers=buyer.headers).get_json()
    assert status == {"enabled": True, "setup_pending": False, "recovery_codes_left": 8}


def test_wrong_codes_count_towards_the_lockout(client, buyer, clock):
    turn_on_totp(client, buyer, clock)
    for _ in range(3):
        assert sign_in(client, buyer.email, otp="123456").status_code == 401
    assert error_of(sign_in(client, buyer.email, otp="123456"), 429)["code"] == "too_many_attempts"


def test_turning_two_factor_off_needs_a_code(client, buyer, clock):
    secret, _ = turn_on_totp(client, buyer, clock)
    assert error_of(client.post("/api/v1/me/2fa/disable", headers=buyer.headers, json={}), 400)["param"] == "otp"
    assert error_of(client.post("/api/v1/me/2fa/disable", headers=buyer.headers, json={"otp": "000000"}),
                    401)["code"] == "invalid_otp"
    off = client.post("/api/v1/me/2fa/disable", headers=buyer.headers, json={"otp": totp.current_code(secret, clock)})
    assert off.status_code == 200 and off.get_json() == {"enabled": False}
    assert sign_in(client, buyer.email).status_code == 200
    # The old recovery codes went with it.
    assert client.get("/api/v1/me/2fa", headers=buyer.headers).get_json()["recovery_codes_left"] == 0


def test_confirming_set_up_with_a_wrong_code_keeps_two_factor_off(client, buyer):
    assert client.post("/api/v1/me/2fa/setup", headers=buyer.headers).status_code == 200
    wrong = client.post("/api/v1/me/2fa/confirm", headers=buyer.headers, json={"otp": "000000"})
    assert error_of(wrong, 401)["code"] == "invalid_otp"
    assert client.get("/api/v1/me/2fa", headers=buyer.headers).get_json()["enabled"] is False
    assert sign_in(client, buyer.email).status_code == 200


def test_role_changes_need_a_recent_second_factor(client, make_user, clock):
    admin, creator = make_user("admin"), make_user("buyer")
    url = f"/api/v1/users/{creator.id}/roles"
    body = {"roles": ["buyer", "creator"]}
    assert error_of(client.put(url, headers=admin.headers, json=body), 403)["code"] == "two_factor_not_enabled"
    secret, _ = turn_on_totp(client, admin, clock)
    # The admin's token proved a factor when two-factor was confirmed; later it needs a fresh one.
    clock.advance(minutes=11)
    assert error_of(client.put(url, headers=admin.headers, json=body), 403)["code"] == "second_factor_required"
    assert error_of(client.put(url, headers={**admin.headers, "KnowPay-OTP": "000000"}, json=body),
                    401)["code"] == "invalid_otp"
    changed = client.put(url, headers={**admin.headers, "KnowPay-OTP": totp.current_code(secret, clock)}, json=body)
    assert changed.status_code == 200, changed.get_json()
    assert changed.get_json()["roles"] == ["buyer", "creator"]
    # The header counted as a step-up for this token: the next change within the window needs no code.
    again = client.put(url, headers=admin.headers, json={"roles": ["creator"]})
    assert again.status_code == 200 and again.get_json()["roles"] == ["creator"]
    clock.advance(minutes=11)
    assert client.put(url, headers=admin.headers, json=body).status_code == 403
    clock.advance(seconds=30)
    step = client.post("/api/v1/auth/step-up", headers=admin.headers, json={"otp": totp.current_code(secret, clock)})
    assert step.status_code == 200 and step.get_json()["valid_for_seconds"] == 600
    assert client.put(url, headers=admin.headers, json=body).status_code == 200
    audit = client.get("/api/v1/audit?action=user.roles_changed", headers=admin.headers).get_json()["data"]
    assert [e["details"]["roles"] for e in audit] == [["buyer", "creator"], ["creator"], ["buyer", "creator"]]
    assert {e["actor_id"] for e in audit} == {admin.id} and {e["target"] for e in audit} == {creator.id}


def test_only_admins_read_the_audit_log(client, buyer):
    assert error_of(client.get("/api/v1/audit", headers=buyer.headers), 403)["code"] == "role_required"


def test_a_token_signed_in_with_a_code_counts_as_stepped_up(client, make_user, clock, db):
    admin = make_user("admin")
    secret, _ = turn_on_totp(client, admin, clock)
    token = sign_in(client, admin.email, otp=totp.current_code(secret, clock)).get_json()["access_token"]
    with db.transaction(write=False) as session:
        row = session.scalars(select(AccessToken).where(AccessToken.user_id == admin.id)
                              .order_by(AccessToken.created_at.desc())).first()
    assert row.second_factor_at == clock.now()
    target = make_user("buyer")
    assert client.put(f"/api/v1/users/{target.id}/roles", headers=bearer(token),
                      json={"roles": ["support"]}).status_code == 200
    assert row.expires_at - row.created_at == timedelta(hours=12)


def test_old_failure_counts_are_pruned(client, buyer, clock, ctx):
    from knowpay.security.lockout import prune_throttles

    assert sign_in(client, buyer.email, "wrong-password-1").status_code == 401
    with ctx.db.transaction() as session:
        assert prune_throttles(session, policy=ctx.settings.lockout, clock=clock) == 0
    clock.advance(hours=3)
    with ctx.db.transaction() as session:
        assert prune_throttles(session, policy=ctx.settings.lockout, clock=clock) == 2  # the account and the address
