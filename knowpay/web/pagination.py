"""Cursor pagination over (created_at, id), newest first: `{data, has_more, next_cursor}`."""

from __future__ import annotations

import base64
import json
from datetime import datetime

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session

from knowpay.domain.errors import InvalidRequest


def encode_cursor(created_at: datetime, id_: str) -> str:
    raw = json.dumps([created_at.isoformat(), id_]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, id_ = json.loads(raw)
        moment = datetime.fromisoformat(at)
        # Only cursors this module wrote are valid: naive UTC and a plain id (PostgreSQL refuses NUL).
        if not isinstance(id_, str) or "\x00" in id_ or moment.tzinfo is not None:
            raise ValueError(cursor)
        return moment, id_
    except (ValueError, TypeError):
        raise InvalidRequest("This cursor is not valid.", code="invalid_cursor", param="cursor") from None


def paginate(session: Session, stmt: Select, model, *, limit: int, cursor: str | None) -> tuple[list, bool, str | None]:
    if cursor:
        at, id_ = decode_cursor(cursor)
        stmt = stmt.where(or_(model.created_at < at, and_(model.created_at == at, model.id < id_)))
    rows = list(session.scalars(stmt.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)))
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if has_more and rows else None
    return rows, has_more, next_cursor
