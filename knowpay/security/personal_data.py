"""A user's personal data: export it as JSON, or delete the account.

Deletion anonymises what identifies the person (e-mail, username, password, two-factor, sign-in
traces, a creator's payout bank account, WeChat openids) and revokes every token, but keeps orders, payments,
refunds, payouts and ledger postings, which the law requires us to keep; they now point at an
account nobody can sign in to.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from knowpay.access.models import Entitlement
from knowpay.accounts import service as accounts
from knowpay.accounts import totp
from knowpay.accounts.models import AccessToken, User
from knowpay.accounts.wechat_identity import export_openids, forget_openids
from knowpay.catalog.models import Product
from knowpay.domain.clock import Clock, isoformat
from knowpay.fieldcrypt import FieldCipher
from knowpay.orders.models import Order
from knowpay.payments.models import Payment
from knowpay.payouts.models import Payout, PayoutAccount
from knowpay.payouts.schemas import PayoutOut
from knowpay.refunds.models import Refund
from knowpay.representations import EntitlementOut, OrderOut, PaymentOut, ProductOut, RefundOut, as_json
from knowpay.security import lockout
from knowpay.support.models import Ticket
from knowpay.wallet.service import coin_balance

EXPORT_FORMAT = "knowpay-personal-data/1"


def deleted_email(user_id: str) -> str:
    return f"deleted-{user_id}@invalid"


def export_personal_data(session: Session, user: User, *, currency: str, clock: Clock,
                         cipher: FieldCipher) -> dict[str, Any]:
    """Everything we hold about the user, in the API's shapes (no password hash, keys or tokens);
    support tickets are listed by subject and status (their messages are read at GET /tickets/{id}).
    `cipher` reads what is encrypted at rest and belongs in the export (WeChat openids)."""
    orders = list(session.scalars(select(Order).where(Order.buyer_id == user.id).order_by(Order.created_at)))
    payments = list(session.scalars(select(Payment).where(Payment.buyer_id == user.id).order_by(Payment.created_at)))
    refunds = list(session.scalars(select(Refund).where(Refund.payment_id.in_([p.id for p in payments]))
                                   .order_by(Refund.created_at))) if payments else []
    entitlements = list(session.scalars(select(Entitlement).where(Entitlement.user_id == user.id)
                                        .order_by(Entitlement.starts_at)))
    products = list(session.scalars(select(Product).where(Product.creator_id == user.id).order_by(Product.created_at)))
    payouts = list(session.scalars(select(Payout).where(Payout.creator_id == user.id).order_by(Payout.created_at)))
    payout_account = session.get(PayoutAccount, user.id)
    tokens = list(session.scalars(select(AccessToken).where(AccessToken.user_id == user.id)
                                  .order_by(AccessToken.created_at)))
    tickets = list(session.scalars(select(Ticket).where(Ticket.buyer_id == user.id).order_by(Ticket.created_at)))
    return {
        "format": EXPORT_FORMAT,
        "exported_at": isoformat(clock.now()),
        "account": {
            "id": user.id,
            "email": user.email,
            "username": user.username,
            "roles": user.role_names,
            "created_at": isoformat(user.created_at),
            "email_confirmed_at": isoformat(user.confirmed_at),
            "two_factor": {"enabled": user.totp_enabled,
                           "recovery_codes_left": totp.unused_recovery_codes(session, user.id)},
            "wechat_openids": export_openids(session, cipher, user.id),
        },
        "sign_in_tokens": [{"id": t.id, "created_at": isoformat(t.created_at), "expires_at": isoformat(t.expires_at),
                            "revoked_at": isoformat(t.revoked_at)} for t in tokens],
        "orders": [as_json(OrderOut, o) for o in orders],
        "payments": [as_json(PaymentOut, p) for p in payments],
        "refunds": [as_json(RefundOut, r) for r in refunds],
        "entitlements": [as_json(EntitlementOut, e) for e in entitlements],
        "wallet": {"balance": coin_balance(session, user.id, currency), "currency": "coin"},
        "products": [as_json(ProductOut, p) for p in products],
        "payouts": [as_json(PayoutOut, p) for p in payouts],
        "payout_account": ({"display": payout_account.display, "updated_at": isoformat(payout_account.updated_at)}
                           if payout_account is not None else None),
        "tickets": [{"id": t.id, "subject": t.subject, "category": t.category, "status": t.status,
                     "order_id": t.order_id, "payment_id": t.payment_id, "created_at": isoformat(t.created_at),
                     "resolved_at": isoformat(t.resolved_at)} for t in tickets],
    }


def delete_account(session: Session, user: User, *, clock: Clock) -> None:
    """Anonymise the account in place (the caller has re-authenticated the user)."""
    now = clock.now()
    original_email = user.email
    accounts.revoke_all_tokens(session, user.id, clock=clock)
    totp.disable_totp(session, user)
    session.execute(delete(PayoutAccount).where(PayoutAccount.creator_id == user.id))
    forget_openids(session, user.id)
    lockout.clear_account(session, original_email)
    user.email = deleted_email(user.id)
    user.username = None
    user.password = None
    user.active = False
    # A new uniquifier ends every signed-in browser session and invalidates mailed links.
    user.fs_uniquifier = uuid.uuid4().hex
    user.confirmed_at = None
    user.last_login_at = user.current_login_at = None
    user.last_login_ip = user.current_login_ip = None
    user.tf_phone_number = user.us_phone_number = user.us_totp_secrets = None
    user.mf_recovery_codes = None
    user.deleted_at = now
    user.update_datetime = now
    session.flush()
