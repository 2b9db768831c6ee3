"""Record bank transfers as they arrive: the exact amount captures the payment; a partial or
excess amount is flagged for a person to resolve, never captured."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from knowpay.accounts.models import User
from knowpay.context import Context
from knowpay.domain.money import check_amount
from knowpay.domain.states import OrderStatus
from knowpay.orders.models import Order
from knowpay.payments.capture import OPEN, capture_payment
from knowpay.payments.models import BankTransferReceipt, Payment
from knowpay.security import audit


def hold_order_for_transfer(session: Session, payment: Payment, *, days: int, ctx: Context) -> None:
    """A transfer takes days, not minutes: keep the order payable that long."""
    until = ctx.clock.now() + timedelta(days=days)
    session.execute(update(Order).where(Order.id == payment.order_id, Order.status == OrderStatus.PENDING,
                                        Order.expires_at < until).values(expires_at=until))
    session.execute(update(Payment).where(Payment.id == payment.id).values(next_query_at=None))


def record_transfer(ctx: Context, *, admin: User, reference: str, amount: int, note: str | None) -> BankTransferReceipt:
    check_amount(amount)
    reference = reference.strip().upper()
    with ctx.db.transaction() as session:
        payment = session.scalar(select(Payment).where(Payment.channel == "bank_transfer",
                                                       Payment.channel_trade_no == reference).with_for_update())
        if payment is None:
            outcome = "unknown_reference"
        elif payment.status not in OPEN:
            outcome = "not_payable"
        elif amount < payment.amount:
            outcome = "partial"
        elif amount > payment.amount:
            outcome = "excess"
        else:
            capture_payment(session, payment.id, channel_trade_no=reference, ctx=ctx)
            outcome = "captured"
        receipt = BankTransferReceipt(reference=reference, amount=amount,
                                      currency=payment.currency if payment else ctx.settings.currency,
                                      payment_id=payment.id if payment else None, outcome=outcome,
                                      note=(note or "").strip()[:300] or None, recorded_by=admin.id,
                                      created_at=ctx.clock.now())
        session.add(receipt)
        session.flush()
        audit.record(session, admin.id, audit.BANK_TRANSFER_RECORDED, receipt.id,
                     {"reference": reference, "amount": amount, "currency": receipt.currency,
                      "payment_id": receipt.payment_id, "outcome": outcome}, ctx.clock)
        return receipt
