"""A buyer's WeChat identity: the openid WeChat's web authorisation gives under one official account, kept
encrypted at rest, found again for JSAPI payments, listed in the personal-data export and forgotten on
account deletion."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from knowpay.accounts.models import WeChatIdentity
from knowpay.domain.clock import Clock, isoformat
from knowpay.fieldcrypt import DecryptionError, FieldCipher


def openid_context(user_id: str, app_id: str) -> str:
    """What each encrypted openid is bound to, so a value copied to another user or app does not decrypt."""
    return f"wechat_openid:{user_id}:{app_id}"


def remember_openid(session: Session, cipher: FieldCipher, *, user_id: str, app_id: str, openid: str,
                    clock: Clock) -> None:
    """Keep `openid` as the user's under `app_id`, replacing an older one."""
    now = clock.now()
    sealed = cipher.encrypt(openid, context=openid_context(user_id, app_id))
    row = session.scalar(select(WeChatIdentity).where(WeChatIdentity.user_id == user_id,
                                                      WeChatIdentity.app_id == app_id).with_for_update())
    if row is None:
        try:
            with session.begin_nested():
                session.add(WeChatIdentity(user_id=user_id, app_id=app_id, openid_encrypted=sealed,
                                           created_at=now, updated_at=now))
            return
        except IntegrityError:  # the same buyer's other tab stored it first: replace theirs
            row = session.scalar(select(WeChatIdentity).where(WeChatIdentity.user_id == user_id,
                                                              WeChatIdentity.app_id == app_id))
    row.openid_encrypted = sealed
    row.updated_at = now
    session.flush()


def openid_for(session: Session, cipher: FieldCipher, *, user_id: str, app_id: str) -> str | None:
    """The user's openid under `app_id`; None when unknown, or when no configured key reads it any more
    (the buyer is then simply asked again, silently)."""
    sealed = session.scalar(select(WeChatIdentity.openid_encrypted).where(
        WeChatIdentity.user_id == user_id, WeChatIdentity.app_id == app_id))
    if sealed is None:
        return None
    try:
        return cipher.decrypt(sealed, context=openid_context(user_id, app_id))
    except DecryptionError:
        return None


def export_openids(session: Session, cipher: FieldCipher, user_id: str) -> list[dict]:
    """Every openid held for the user, readable, for the personal-data export."""
    rows = session.scalars(select(WeChatIdentity).where(WeChatIdentity.user_id == user_id)
                           .order_by(WeChatIdentity.created_at, WeChatIdentity.id))
    exported = []
    for row in rows:
        openid: str | None
        try:
            openid = cipher.decrypt(row.openid_encrypted, context=openid_context(user_id, row.app_id))
        except DecryptionError:
            openid = None  # held, but no configured key reads it: say so rather than hide the row
        exported.append({"app_id": row.app_id, "openid": openid, "created_at": isoformat(row.created_at),
                         "updated_at": isoformat(row.updated_at)})
    return exported


def forget_openids(session: Session, user_id: str) -> None:
    session.execute(delete(WeChatIdentity).where(WeChatIdentity.user_id == user_id))
