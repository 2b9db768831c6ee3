"""Move creators' earnings from pending to available once a sale is past its settlement period.

Per payment, once: what is still on the creators' pending accounts from this payment (its
capture less the refunds already reversed) moves to their available accounts.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from knowpay.context import Context
from knowpay.domain.states import PaymentStatus
from knowpay.ledger import chart
from knowpay.ledger.models import JournalTransaction, LedgerAccount, Posting
from knowpay.ledger.service import Leg, post_transaction
from knowpay.payments.models import Payment
from knowpay.refunds.models import Refund

BATCH = 200


def _pending_share(session, payment: Payment) -> dict[str, int]:
    """creator id → what this payment still holds on their pending account."""
    keys = [f"payment:{payment.id}:captured"] + [
        f"refund:{rid}:succeeded" for rid in session.scalars(select(Refund.id).where(Refund.payment_id == payment.id))]
    rows = session.execute(
        select(LedgerAccount.code, Posting.amount).join(Posting, Posting.account_id == LedgerAccount.id)
        .join(JournalTransaction, JournalTransaction.id == Posting.transaction_id)
        .where(JournalTransaction.idempotency_key.in_(keys), LedgerAccount.code.like("creator:%:pending:%"))).all()
    share: dict[str, int] = {}
    for code, amount in rows:
        creator_id = code.split(":")[1]
        share[creator_id] = share.get(creator_id, 0) - amount  # liabilities grow with credits
    return {creator: amount for creator, amount in share.items() if amount}


def settle_payment(ctx: Context, payment_id: str) -> bool:
    with ctx.db.transaction() as session:
        payment = session.get(Payment, payment_id, with_for_update=True)
        moved = session.execute(update(Payment).where(Payment.id == payment_id, Payment.settled_at.is_(None))
                                .values(settled_at=ctx.clock.now()))
        if moved.rowcount != 1:
            return False
        share = _pending_share(session, payment)
        if not share:
            return True
        legs, specs = [], []
        for creator_id, amount in sorted(share.items()):
            pending, available = (chart.creator_pending(creator_id, payment.currency),
                                  chart.creator_available(creator_id, payment.currency))
            legs += [Leg(pending.code, amount, payment.currency), Leg(available.code, -amount, payment.currency)]
            specs += [pending, available]
        post_transaction(session, key=f"payment:{payment_id}:settled", kind="settlement", legs=legs,
                         accounts=specs, description=f"settle {payment_id}", meta={"payment_id": payment_id},
                         clock=ctx.clock)
        return True


def settle_due_earnings(ctx: Context) -> int:
    """The worker's daily sweep: settle every succeeded payment older than the settlement period."""
    cutoff = ctx.clock.now() - timedelta(days=ctx.settings.settlement_days)
    with ctx.db.transaction(write=False) as session:
        due = list(session.scalars(select(Payment.id).where(
            Payment.status == PaymentStatus.SUCCEEDED, Payment.settled_at.is_(None),
            Payment.succeeded_at <= cutoff).order_by(Payment.succeeded_at).limit(BATCH)))
    return sum(settle_payment(ctx, payment_id) for payment_id in due)
