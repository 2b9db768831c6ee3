"""Use cases for accounts: register, authenticate, change passwords, issue, check and revoke bearer
tokens, API keys, and roles.

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
from sqlalchemy.orm import Session, joinedload

from knowpay.accounts.models import ROLES, AccessToken, ApiKey, Role, User
from knowpay.accounts.passwords import check_password
from knowpay.domain.clock import Clock
from knowpay.domain.errors import AuthenticationFailed, Conflict, InvalidRequest

TOKEN_LIFETIME = timedelta(hours=12)


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
                  roles: tuple[str, ...] = ("buyer",), clock: Clock, confirmed: bool = False) -> User:
    """Create an active user with these roles; a taken e-mail or username is a Conflict.

    The password must pass the policy (long enough, not common or breached). `confirmed` marks the
    e-mail address as confirmed (accounts made by an operator); otherwise a confirmation mail is due.
    """
    email = email.strip().lower()
    check_password(password, email=email, username=username)
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise InvalidRequest(f"Unknown role {min(unknown)!r}.", code="invalid_role", param="role")
    if session.scalar(select(User.id).where(func.lower(User.email) == email)):
        raise Conflict("An account with this e-mail already exists.", code="email_taken", param="email")
    if session.scalar(select(User.id).where(User.username == username)):
        raise Conflict("This username is taken.", code="username_taken", param="username")
    all_roles = ensure_roles(session)
    now = clock.now()
    user = User(email=email, username=username, password=hash_password(password), active=True,
                fs_uniquifier=uuid.uuid4().hex, created_at=now, create_datetime=now, update_datetime=now,
                confirmed_at=now if confirmed else None)
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


def set_roles(session: Session, user: User, names: list[str]) -> tuple[list[str], list[str]]:
    """Give the user exactly these roles; returns (added, removed) role names."""
    wanted = set(names)
    unknown = wanted - set(ROLES)
    if unknown:
        raise InvalidRequest(f"Unknown role {min(unknown)!r}.", code="invalid_role", param="roles")
    if not wanted:
        raise InvalidRequest("A user needs at least one role.", code="invalid_role", param="roles")
    roles = ensure_roles(session)
    current = set(user.role_names)
    user.roles = [roles[name] for name in sorted(wanted)]
    session.flush()
    return sorted(wanted - current), sorted(current - wanted)


def get_user(session: Session, user_id: str) -> User:
    from knowpay.domain.errors import NotFound

    user = session.get(User, user_id)
    if user is None or user.deleted_at is not None:
        raise NotFound("No such user.", code="resource_missing", param="id")
    return user


def find_user_by_email(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(func.lower(User.email) == email.strip().lower()))


def authenticate(session: Session, *, email: str, password: str) -> User:
    """The active user with this e-mail and password, or AuthenticationFailed (same for either miss)."""
    user = find_user_by_email(session, email)
    if user is None or not user.active or not user.password:
        # Spend the same time as a real check so a miss does not reveal which e-mails exist.
        hash_password(password)
        raise AuthenticationFailed("Wrong e-mail or password.", code="invalid_credentials")
    if not verify_password(password, user.password):
        raise AuthenticationFailed("Wrong e-mail or password.", code="invalid_credentials")
    _rehash_if_needed(user, password)
    return user


def check_current_password(user: User, password: str) -> None:
    """Re-authentication of a signed-in user (account deletion, password change)."""
    if not user.password or not verify_password(password, user.password):
        raise AuthenticationFailed("The password is wrong.", code="invalid_credentials", param="password")
    _rehash_if_needed(user, password)


def change_password(session: Session, user: User, *, current: str, new: str, clock: Clock,
                    keep_token_id: str | None = None) -> int:
    """Set a new password (it must pass the policy) and revoke every other bearer token of the user;
    returns how many were revoked."""
    check_current_password(user, current)
    check_password(new, email=user.email, username=user.username)
    if verify_password(new, user.password):
        raise InvalidRequest("The new password is the same as the current one.", code="password_unchanged",
                             param="new_password")
    user.password = hash_password(new)
    user.update_datetime = clock.now()
    return revoke_all_tokens(session, user.id, clock=clock, except_id=keep_token_id)


def _rehash_if_needed(user: User, password: str) -> None:
    # A hash made with older settings is upgraded in the caller's session. (Flask-Security's
    # verify_and_update_password would put the user into its datastore's own session and fail.)
    if current_app.extensions["security"].pwd_context.needs_update(user.password):
        user.password = hash_password(password)


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: datetime


def issue_token(session: Session, user: User, *, clock: Clock, lifetime: timedelta = TOKEN_LIFETIME,
                second_factor: bool = False) -> IssuedToken:
    """A new bearer token; `second_factor` records that the holder just proved one (a step-up)."""
    raw = "kpt_" + secrets.token_urlsafe(32)
    now = clock.now()
    row = AccessToken(user_id=user.id, token_hash=_digest(raw), created_at=now, expires_at=now + lifetime,
                      second_factor_at=now if second_factor else None)
    session.add(row)
    session.flush()
    return IssuedToken(raw, row.expires_at)


def token_for(session: Session, raw: str, *, clock: Clock) -> AccessToken | None:
    """The unexpired, unrevoked token row behind a raw bearer token."""
    row = session.scalar(select(AccessToken).where(AccessToken.token_hash == _digest(raw)))
    if row is None or row.revoked_at is not None or row.expires_at <= clock.now():
        return None
    return row


def principal_for_token(session: Session, raw: str, *, clock: Clock) -> tuple[AccessToken, User] | None:
    """The unexpired, unrevoked token row behind a raw bearer token and its active user with the
    user's roles loaded: one query, as every authenticated request pays for it."""
    found = session.execute(
        select(AccessToken, User).join(User, User.id == AccessToken.user_id)
        .where(AccessToken.token_hash == _digest(raw)).options(joinedload(User.roles))).unique().first()
    if found is None:
        return None
    token, user = found
    if token.revoked_at is not None or token.expires_at <= clock.now() or not user.active:
        return None
    return token, user


def user_for_token(session: Session, raw: str, *, clock: Clock) -> User | None:
    """The active user behind an unexpired, unrevoked bearer token."""
    found = principal_for_token(session, raw, clock=clock)
    return found[1] if found else None


def revoke_token(session: Session, raw: str, *, clock: Clock) -> bool:
    return session.execute(update(AccessToken).where(
        AccessToken.token_hash == _digest(raw), AccessToken.revoked_at.is_(None))
        .values(revoked_at=clock.now())).rowcount == 1


def revoke_token_by_id(session: Session, token_id: str, *, clock: Clock) -> bool:
    return session.execute(update(AccessToken).where(
        AccessToken.id == token_id, AccessToken.revoked_at.is_(None))
        .values(revoked_at=clock.now())).rowcount == 1


def revoke_all_tokens(session: Session, user_id: str, *, clock: Clock, except_id: str | None = None) -> int:
    """Revoke every live bearer token of a user (but `except_id`); returns how many."""
    stmt = update(AccessToken).where(AccessToken.user_id == user_id, AccessToken.revoked_at.is_(None),
                                     AccessToken.expires_at > clock.now())
    if except_id is not None:
        stmt = stmt.where(AccessToken.id != except_id)
    return session.execute(stmt.values(revoked_at=clock.now())).rowcount


def record_step_up(session: Session, token_id: str, *, clock: Clock) -> None:
    """The holder of this token has just proved a second factor."""
    session.execute(update(AccessToken).where(AccessToken.id == token_id).values(second_factor_at=clock.now()))


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
