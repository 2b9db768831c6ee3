"""Signing in for a bearer token: password, then the second factor when it is on, behind the lockout.

Failures are counted in a transaction of their own (the sign-in's own transaction rolls back),
and audited there; success clears the account's count and is audited with the new token.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from knowpay.accounts import service as accounts
from knowpay.accounts import totp
from knowpay.accounts.service import IssuedToken
from knowpay.context import Context
from knowpay.domain.errors import AuthenticationFailed
from knowpay.fieldcrypt import FieldCipher
from knowpay.security import audit, lockout


@dataclass(frozen=True)
class SignInAttempt:
    email: str
    password: str
    otp: str | None
    address: str | None


def sign_in_for_token(ctx: Context, attempt: SignInAttempt) -> IssuedToken:
    """A bearer token for a correct password (and TOTP or recovery code when two-factor is on).

    401 `invalid_credentials`, `otp_required` (password right, no code sent: not counted as a
    failure) or `invalid_otp`; 429 `too_many_attempts` while the account or address is locked.
    """
    policy, clock = ctx.settings.lockout, ctx.clock
    keys = lockout.sign_in_keys(policy, email=attempt.email, address=attempt.address)
    lockout.ensure_not_locked(ctx.db, keys, clock=clock)
    cipher = FieldCipher(ctx.settings.encryption_keys)
    try:
        with ctx.db.transaction() as session:
            user = accounts.authenticate(session, email=attempt.email, password=attempt.password)
            used = None
            if user.totp_enabled:
                if not attempt.otp:
                    raise AuthenticationFailed("This account uses two-factor sign-in: send the code from the "
                                               "authenticator app (or a recovery code) as `otp`.",
                                               code="otp_required", param="otp")
                used = totp.check_second_factor(session, user, attempt.otp, clock, cipher=cipher)
                if used is None:
                    raise AuthenticationFailed("This code is not valid or was already used.", code="invalid_otp",
                                               param="otp")
            lockout.clear_account(session, attempt.email)
            issued = accounts.issue_token(session, user, clock=clock,
                                          lifetime=timedelta(seconds=ctx.settings.token_ttl_seconds),
                                          second_factor=used is not None)
            audit.record(session, user.id, audit.LOGIN, user.id,
                         {"via": "api", "second_factor": used, "ip": attempt.address}, clock)
            if used == totp.SECOND_FACTOR_RECOVERY_CODE:
                audit.record(session, user.id, audit.RECOVERY_CODE_USED, user.id,
                             {"left": totp.unused_recovery_codes(session, user.id)}, clock)
            return issued
    except AuthenticationFailed as failure:
        if failure.code != "otp_required":
            record_failed_sign_in(ctx, email=attempt.email, address=attempt.address,
                                  reason="otp" if failure.code == "invalid_otp" else "password", via="api")
        raise


def record_failed_sign_in(ctx: Context, *, email: str, address: str | None, reason: str, via: str) -> int:
    """Count and audit one failed sign-in in its own transaction; returns the lock it started (seconds)."""
    policy, clock = ctx.settings.lockout, ctx.clock
    keys = lockout.sign_in_keys(policy, email=email, address=address)
    with ctx.db.transaction() as session:
        locked_for = lockout.record_failure(session, keys, policy=policy, clock=clock)
        known = accounts.find_user_by_email(session, email)
        target = known.id if known is not None else None
        audit.record(session, None, audit.LOGIN_FAILED, target, {"reason": reason, "via": via, "ip": address}, clock)
        if locked_for:
            audit.record(session, None, audit.LOCKED_OUT, target,
                         {"seconds": locked_for, "ip": address, "via": via}, clock)
    return locked_for


def record_failed_second_factor(ctx: Context, *, user_id: str, email: str, address: str | None, via: str) -> int:
    """A wrong code at a step-up (2FA changes, deleting the account, a payment challenge) counts too."""
    policy, clock = ctx.settings.lockout, ctx.clock
    keys = lockout.sign_in_keys(policy, email=email, address=address)
    with ctx.db.transaction() as session:
        locked_for = lockout.record_failure(session, keys, policy=policy, clock=clock)
        audit.record(session, user_id, audit.LOGIN_FAILED, user_id, {"reason": "otp", "via": via, "ip": address},
                     clock)
    return locked_for
