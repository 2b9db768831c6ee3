"""Account tables: Flask-Security's user and role models with KnowPay's opaque ids, tokens, API keys,
the recovery codes of two-factor sign-in, and a buyer's WeChat openid."""

from __future__ import annotations

from datetime import datetime

from flask_security.models.sqla import FsModels, FsRoleMixin, FsUserMixin
from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from knowpay.db import Base
from knowpay.domain.ids import new_id

# The security tables are registered with the metadata (Alembic, tests) through this import until
# knowpay/models.py lists them itself.
from knowpay.security import models as _security_models  # noqa: F401

FsModels.set_db_info(base_model=Base, user_table_name="users", role_table_name="roles")

ROLES = ("buyer", "creator", "support", "admin")
# Flask-Security's name for an authenticator-app second factor (users.tf_primary_method).
TOTP_METHOD = "authenticator"


class Role(Base, FsRoleMixin):
    __tablename__ = "roles"


class User(Base, FsUserMixin):
    """A person. With two-factor on, `tf_totp_secret` holds the FieldCipher-encrypted TOTP key."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("usr"))
    created_at: Mapped[datetime] = mapped_column()
    # A TOTP key being set up (encrypted like tf_totp_secret), until a code from it confirms it.
    totp_pending_secret: Mapped[str | None] = mapped_column(String(255))
    # The time step of the last accepted TOTP code: a code is never accepted twice.
    totp_last_counter: Mapped[int | None] = mapped_column(Integer)
    # Set when the account was deleted and its personal fields anonymised.
    deleted_at: Mapped[datetime | None] = mapped_column()

    @property
    def role_names(self) -> list[str]:
        return sorted(role.name for role in self.roles)

    def has_any_role(self, *names: str) -> bool:
        return any(role.name in names for role in self.roles)

    @property
    def totp_enabled(self) -> bool:
        return self.tf_primary_method == TOTP_METHOD and bool(self.tf_totp_secret)


class AccessToken(Base):
    """A bearer token handed out by POST /auth/token; only its SHA-256 is stored."""

    __tablename__ = "access_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("tok"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    # When the holder last proved a second factor with this token (at sign-in or a step-up).
    second_factor_at: Mapped[datetime | None] = mapped_column()


class ApiKey(Base):
    """A platform service's `sk_...` key; only its SHA-256 and a short prefix for display are stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("key"))
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(12))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column()
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


class RecoveryCode(Base):
    """A one-time code that stands in for the authenticator app; only its SHA-256 is stored."""

    __tablename__ = "recovery_codes"
    __table_args__ = (UniqueConstraint("user_id", "code_hash", name="uq_recovery_codes_user_code"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column()


class WeChatIdentity(Base):
    """The openid WeChat's web authorisation gave for a user under one official account (app id), which
    WeChat Pay's JSAPI needs. Personal data: `openid_encrypted` is FieldCipher-encrypted, bound to the row."""

    __tablename__ = "wechat_identities"
    __table_args__ = (UniqueConstraint("user_id", "app_id", name="uq_wechat_identities_user_app"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # The unique (user_id, app_id) is the index by user.
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    app_id: Mapped[str] = mapped_column(String(32))
    openid_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column()
