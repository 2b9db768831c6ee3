"""Use cases for accounts: register, authenticate, issue and check bearer tokens and API keys.

Password hashing is Flask-Security's (Argon2id), so these need an application context.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from flask_security.utils import hash_password, verify_password
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from knowpay.accounts.models import ROLES, AccessToken, ApiKey, Role, User
from knowpay.domain.clock import Clock
from knowpay.domain.errors import AuthenticationFailed, Conflict, InvalidRequest

TOKEN_LIFETIME = timedelta(hours=12)
MIN_PASSWORD_LENGTH = 8


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def ensure_roles(session: Session) -> dict[str, Role]:
    roles = {r.name: r for r in session.scalars(select(Role))}
    for name in ROLES:
        if name not in roles:
            roles[name] = Role(name=name, description=name.title(), permissions=[])
            session.add(roles[name])
    session.flush()
    return roles


def register_user(session: Session, *, email: str, password: str, username: str,
                  roles: tuple[str, ...] = ("buyer",), clock: Clock) -> User:
    """Create an active user with these roles; a taken e-mail or username is a Conflict."""
    email = email.strip().lower()
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidRequest(f"The password must have at least {MIN_PASSWORD_LENGTH} characters.",
                             code="password_too_short", param="password")
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise InvalidRequest(f"Unknown role {sorted(unknown)[0]!r}.", code="invalid_role", param="role")
    if session.scalar(select(User.id).where(func.lower(User.email) == email)):
        raise Conflict("An account with this e-mail already exists.", code="email_taken", param="email")
    if session.scalar(select(User.id).where(User.username == username)):
        raise Conflict("This username is taken.", code="username_taken", param="username")
    all_roles = ensure_roles(session)
    now = clock.now()
    user = User(email=email, username=username, password=hash_password(password), active=True,
                fs_uniquifier=uuid.uuid4().hex, created_at=now, create_datetime=now, update_datetime=now)
    try:
        with session.begin_nested():
            session.add(user)
            user.roles = [all_roles[name] for name in roles]
            session.flush()
    except IntegrityError:
        raise Conflict("An account with this e-mail or username already exists.", code="email_taken",
                       param="email") from None
    return user


def grant_role(session: Session, user: User, role: str) -> None:
    roles = ensure_roles(session)
    if role not in roles:
        raise InvalidRequest(f"Unknown role {role!r}.", code="invalid_role", param="role")
    if roles[role] not in user.roles:
        user.roles.append(roles[role])


def authenticate(session: Session, *, email: str, password: str) -> User:
    """The active user with this e-mail and password, or AuthenticationFailed (same for either miss)."""
    user = session.scalar(select(User).where(func.lower(User.email) == email.strip().lower()))
    if user is None or not user.active or not user.password:
        # Spend the same time as a real check so a miss does not reveal which e-mails exist.
        hash_password(password)
        raise AuthenticationFailed("Wrong e-mail or password.", code="invalid_credentials")
    if not verify_password(password, user.password):
        raise AuthenticationFailed("Wrong e-mail or password.", code="invalid_credentials")
    # A hash made with older settings is upgraded in the caller's session. (Flask-Security's
    # verify_and_update_password would put the user into its datastore's own session and fail.)
    if current_app.extensions["security"].pwd_context.needs_update(user.password):
        user.password = hash_password(password)
    return user


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: datetime


def issue_token(session: Session, user: User, *, clock: Clock) -> IssuedToken:
    raw = "kpt_" + secrets.token_urlsafe(32)
    now = clock.now()
    row = AccessToken(user_id=user.id, token_hash=_digest(raw), created_at=now, expires_at=now + TOKEN_LIFETIME)
    session.add(row)
    session.flush()
    return IssuedToken(raw, row.expires_at)


def user_for_token(session: Session, raw: str, *, clock: Clock) -> User | None:
    """The active user behind an unexpired, unrevoked bearer token."""
    row = session.scalar(select(AccessToken).where(AccessToken.token_hash == _digest(raw)))
    if row is None or row.revoked_at is not None or row.expires_at <= clock.now():
        return None
    user = session.get(User, row.user_id)
    return user if user is not None and user.active else None


def revoke_token(session: Session, raw: str, *, clock: Clock) -> bool:
    return session.execute(update(AccessToken).where(
        AccessToken.token_hash == _digest(raw), AccessToken.revoked_at.is_(None))
        .values(revoked_at=clock.now())).rowcount == 1


@dataclass(frozen=True)
class IssuedKey:
    key: str
    record: ApiKey


def create_api_key(session: Session, *, name: str, clock: Clock) -> IssuedKey:
    if not name.strip():
        raise InvalidRequest("An API key needs a name.", code="invalid_name", param="name")
    raw = "sk_" + secrets.token_urlsafe(32)
    row = ApiKey(name=name.strip()[:100], prefix=raw[:10], key_hash=_digest(raw), created_at=clock.now())
    session.add(row)
    session.flush()
    return IssuedKey(raw, row)


def api_key_for(session: Session, raw: str, *, clock: Clock) -> ApiKey | None:
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == _digest(raw)))
    if row is None or row.revoked_at is not None:
        return None
    return row


def touch_api_key(session: Session, key_id: str, *, clock: Clock) -> None:
    session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=clock.now()))
