"""Two-factor sign-in: TOTP (RFC 6238, authenticator apps) with one-time recovery codes.

The TOTP key is stored encrypted with FieldCipher, bound to its user (`totp:<user id>`); each accepted
code's time step is remembered so a code works once. Recovery codes are stored as SHA-256 digests
(80 random bits each) and each works once. Flask-Security's form sign-in checks codes through
`KnowPayTotp`, so the API and the pages share one implementation.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC

from flask import current_app
from flask_security.totp import Totp
from passlib.totp import TOTP, TokenError
from sqlalchemy import delete, or_, update
from sqlalchemy.orm import Session, object_session

from knowpay.accounts.models import TOTP_METHOD, RecoveryCode, User
from knowpay.domain.clock import Clock
from knowpay.domain.errors import AuthenticationFailed, Conflict
from knowpay.fieldcrypt import FieldCipher

ISSUER = "KnowPay"
RECOVERY_CODE_COUNT = 10
# Codes from one step before or after now are accepted too: phones' clocks drift.
WINDOW_SECONDS = 30
_FACTORY = TOTP.using(issuer=ISSUER, digits=6, alg="sha1", period=30)
_RECOVERY_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_RECOVERY_SHAPE = re.compile(r"^[a-z2-7]{16}$")
SECOND_FACTOR_TOTP = "totp"
SECOND_FACTOR_RECOVERY_CODE = "recovery_code"


@dataclass(frozen=True)
class TotpSetup:
    """What an authenticator app needs: the key (base32) and the otpauth:// URI a QR code is drawn from."""

    secret: str
    uri: str


def cipher_from_app() -> FieldCipher:
    return FieldCipher(current_app.extensions["knowpay"].settings.encryption_keys)


def secret_context(user_id: str) -> str:
    return f"totp:{user_id}"


def _unix(clock: Clock) -> float:
    return clock.now().replace(tzinfo=UTC).timestamp()


def current_code(secret: str, clock: Clock) -> str:
    """The code an authenticator app shows now for this base32 key (tests and the CLI use it)."""
    return str(_FACTORY(key=secret, format="base32").generate(time=_unix(clock)).token)


def begin_totp_setup(user: User, *, cipher: FieldCipher) -> TotpSetup:
    """Draw a new key and keep it pending until a code from it is confirmed."""
    if user.totp_enabled:
        raise Conflict("Two-factor sign-in is already on; turn it off first.", code="totp_already_enabled")
    totp = _FACTORY.new()
    user.totp_pending_secret = cipher.encrypt(totp.base32_key, context=secret_context(user.id))
    return TotpSetup(secret=totp.base32_key, uri=totp.to_uri(label=user.email, issuer=ISSUER))


def confirm_totp_setup(session: Session, user: User, code: str, *, cipher: FieldCipher,
                       clock: Clock) -> list[str]:
    """Turn two-factor on with a code from the pending key; returns fresh recovery codes (shown once)."""
    if user.totp_enabled:
        raise Conflict("Two-factor sign-in is already on.", code="totp_already_enabled")
    if not user.totp_pending_secret:
        raise Conflict("Start the set-up first (POST /api/v1/me/2fa/setup).", code="totp_setup_not_started")
    key = cipher.decrypt(user.totp_pending_secret, context=secret_context(user.id))
    counter = _match(key, code, clock, last_counter=None)
    if counter is None:
        raise AuthenticationFailed("This code is not valid; check the app and the phone's clock.",
                                   code="invalid_otp")
    user.tf_primary_method = TOTP_METHOD
    user.tf_totp_secret = user.totp_pending_secret
    user.totp_pending_secret = None
    user.totp_last_counter = counter
    return replace_recovery_codes(session, user, clock=clock)


def disable_totp(session: Session, user: User) -> None:
    """Turn two-factor off (the caller has checked a code) and drop the recovery codes."""
    user.tf_primary_method = None
    user.tf_totp_secret = None
    user.totp_pending_secret = None
    user.totp_last_counter = None
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))


def replace_recovery_codes(session: Session, user: User, *, clock: Clock) -> list[str]:
    """Ten new one-time codes like `k3xq-7mzp-w2ab-qr5t`; the old ones stop working."""
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = ["".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(16)) for _ in range(RECOVERY_CODE_COUNT)]
    now = clock.now()
    session.add_all(RecoveryCode(user_id=user.id, code_hash=_digest(code), created_at=now) for code in codes)
    session.flush()
    return ["-".join(code[i:i + 4] for i in range(0, 16, 4)) for code in codes]


def check_second_factor(session: Session, user: User, otp: str | None, clock: Clock, *,
                        cipher: FieldCipher | None = None) -> str | None:
    """Accept a TOTP code or an unused recovery code, once: returns which one it was, or None.

    Changes made here (the code's time step remembered, the recovery code spent) belong to the
    caller's transaction.
    """
    if not otp or not user.totp_enabled or not user.tf_totp_secret:
        return None
    candidate = otp.strip().replace(" ", "")
    if candidate.isdigit():
        cipher = cipher or cipher_from_app()
        key = cipher.decrypt(user.tf_totp_secret, context=secret_context(user.id))
        counter = _match(key, candidate, clock, last_counter=user.totp_last_counter)
        if counter is None:
            return None
        # Compare-and-set: of two requests with the same code, only one gets it.
        claimed = session.execute(
            update(User).where(User.id == user.id,
                               or_(User.totp_last_counter.is_(None), User.totp_last_counter < counter))
            .values(totp_last_counter=counter).execution_options(synchronize_session=False))
        if claimed.rowcount != 1:
            return None
        user.totp_last_counter = counter
        return SECOND_FACTOR_TOTP
    normalized = candidate.replace("-", "").lower()
    if not _RECOVERY_SHAPE.match(normalized):
        return None
    spent = session.execute(
        update(RecoveryCode).where(RecoveryCode.user_id == user.id, RecoveryCode.code_hash == _digest(normalized),
                                   RecoveryCode.used_at.is_(None))
        .values(used_at=clock.now()).execution_options(synchronize_session=False))
    return SECOND_FACTOR_RECOVERY_CODE if spent.rowcount == 1 else None


def verify_second_factor(session: Session, user: User, otp: str | None, clock: Clock) -> bool:
    """True when `otp` is a valid TOTP code or an unused recovery code of `user` (spent by this call).

    For step-up checks such as a risky payment's `otp_challenge`; needs an application context.
    """
    return check_second_factor(session, user, otp, clock) is not None


def unused_recovery_codes(session: Session, user_id: str) -> int:
    from sqlalchemy import func, select

    return session.scalar(select(func.count()).select_from(RecoveryCode).where(
        RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))) or 0


def _digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def _match(key: str, code: str, clock: Clock, *, last_counter: int | None) -> int | None:
    code = code.strip().replace(" ", "")
    if not code.isdigit():
        return None
    try:
        found = _FACTORY(key=key, format="base32").match(code, time=_unix(clock), window=WINDOW_SECONDS,
                                                         last_counter=last_counter)
    except TokenError:
        return None
    return int(found.counter)


class KnowPayTotp(Totp):
    """Flask-Security's two-factor pages check codes here: the same keys, replay rule and recovery codes.

    Keys are set up through the API (`/api/v1/me/2fa/...`), never by Flask-Security, so it never
    needs to generate one; it never sends codes either (authenticator apps only).
    """

    def verify_totp(self, token: str, totp_secret: str, user, window: int = 0) -> bool:  # type: ignore[no-untyped-def]
        session = object_session(user)
        if session is None or user.tf_totp_secret != totp_secret:
            return False
        return verify_second_factor(session, user, str(token), current_app.extensions["knowpay"].clock)

    def generate_totp_password(self, totp_secret: str) -> str:
        return ""

    def generate_totp_secret(self) -> str:
        raise RuntimeError("two-factor keys are set up through the API (POST /api/v1/me/2fa/setup)")
