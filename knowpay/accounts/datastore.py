"""Flask-Security's user datastore, made to create users the way `register_user` does."""

from __future__ import annotations

import uuid
from typing import Any

from flask import current_app
from flask_security import SQLAlchemySessionUserDatastore

from knowpay.accounts.models import User
from knowpay.accounts.service import ensure_roles


class KnowPayUserDatastore(SQLAlchemySessionUserDatastore):
    """Users registered through Flask-Security's pages are buyers with KnowPay's fields filled in."""

    def create_user(self, **kwargs: Any) -> User:
        now = current_app.extensions["knowpay"].clock.now()
        kwargs["email"] = str(kwargs["email"]).strip().lower()
        kwargs.setdefault("fs_uniquifier", uuid.uuid4().hex)
        kwargs.setdefault("created_at", now)
        kwargs.setdefault("create_datetime", now)
        kwargs.setdefault("update_datetime", now)
        roles = ensure_roles(self.db.session)  # type: ignore[attr-defined]
        kwargs["roles"] = [roles[name] if isinstance(name, str) else name for name in kwargs.get("roles") or ["buyer"]]
        return super().create_user(**kwargs)  # type: ignore[return-value]
