"""Account tables: Flask-Security's user and role models with KnowPay's opaque ids, tokens, API keys."""

from __future__ import annotations

from datetime import datetime

from flask_security.models.sqla import FsModels, FsRoleMixin, FsUserMixin
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from knowpay.db import Base
from knowpay.domain.ids import new_id

FsModels.set_db_info(base_model=Base, user_table_name="users", role_table_name="roles")

ROLES = ("buyer", "creator", "support", "admin")


class Role(Base, FsRoleMixin):
    __tablename__ = "roles"


class User(Base, FsUserMixin):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("usr"))
    created_at: Mapped[datetime] = mapped_column()

    @property
    def role_names(self) -> list[str]:
        return sorted(role.name for role in self.roles)

    def has_any_role(self, *names: str) -> bool:
        return any(role.name in names for role in self.roles)


class AccessToken(Base):
    """A bearer token handed out by POST /auth/token; only its SHA-256 is stored."""

    __tablename__ = "access_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("tok"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


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
