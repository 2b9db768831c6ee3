"""Creator earnings and payouts: request up to what is available, then admin approve / reject / mark paid.

Each step is a ledger transaction: request holds the amount out of available, approval moves it
to the platform's approved-payouts liability, payment takes it out of the bank; rejection puts it
back where the creator can use it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from knowpay.accounts.models import User
from knowpay.context import Context
from knowpay.domain.errors import Conflict, InvalidRequest, NotFound
from knowpay.domain.money import check_amount
from knowpay.domain.states import PayoutStatus, sources_of
from knowpay.fieldcrypt import FieldCipher
from knowpay.ledger import chart
from knowpay.ledger.models import LedgerAccount
from knowpay.ledger.service import AccountSpec, Leg, balance_of, post_transaction
from knowpay.outbox.service import record_event
from knowpay.payouts.models import Payout, PayoutAccount
from knowpay.risk import service as risk
from knowpay.risk.models import RiskDecision
from knowpay.security import audit


@dataclass(frozen=True)
class Earnings:
    pending: int
    available: int
    in_payout: int
    paid_out: int
    currency: str


def cipher(ctx: Context) -> FieldCipher:
    return FieldCipher(ctx.settings.encryption_keys)


def earnings(session: Session, creator_id: str, currency: str) -> Earnings:
    paid_out = session.scalar(select(func.coalesce(func.sum(Payout.amount), 0)).where(
        Payout.creator_id == creator_id, Payout.status == PayoutStatus.PAID, Payout.currency == currency)) or 0
    return Earnings(
        pending=balance_of(session, chart.creator_pending(creator_id, currency).code),
        available=balance_of(session, chart.creator_available(creator_id, currency).code),
        in_payout=balance_of(session, chart.payout_hold(creator_id, currency).code),
        paid_out=int(paid_out), currency=currency)


def _mask(account_number: str) -> str:
    digits = "".join(ch for ch in account_number if ch.isalnum())
    return "•••• " + digits[-4:] if len(digits) >= 4 else "••••"


def set_payout_account(session: Session, ctx: Context, *, creator: User, holder_name: str, bank_name: str,
                       account_number: str) -> PayoutAccount:
    if not all(v.strip() for v in (holder_name, bank_name, account_number)):
        raise InvalidRequest("holder_name, bank_name and account_number are all needed.", code="parameter_missing")
    details = {"holder_name": holder_name.strip(), "bank_name": bank_name.strip(),
               "account_number": account_number.strip()}
    row = session.get(PayoutAccount, creator.id) or PayoutAccount(creator_id=creator.id)
    row.details_encrypted = cipher(ctx).encrypt_json(details, context=f"payout_account:{creator.id}")
    row.display = f"{details['bank_name'][:40]} {_mask(details['account_number'])}"
    row.updated_at = ctx.clock.now()
    session.add(row)
    session.flush()
    audit.record(session, creator.id, audit.PAYOUT_ACCOUNT_SET, creator.id, {"display": row.display}, ctx.clock)
    return row


def _event(session: Session, payout: Payout, type_: str, ctx: Context) -> None:
    from knowpay.payouts.schemas import PayoutOut

    record_event(session, type=type_, object_type="payout", object_id=payout.id, sequence=payout.version,
                 payload=PayoutOut.model_validate(payout).model_dump(mode="json"), clock=ctx.clock)


def request_payout(session: Session, ctx: Context, *, creator: User, amount: int) -> Payout:
    """Hold `amount` of the creator's available earnings for a payout; never more than available.

    Risk assesses it first (before this session writes): a block refuses it, a review records it and
    puts it in the risk review queue."""
    check_amount(amount)
    currency = ctx.settings.currency
    assessment = risk.check_payout(ctx, creator=creator, amount=amount, currency=currency)
    account = session.get(PayoutAccount, creator.id)
    if account is None:
        raise InvalidRequest("Add a payout bank account first.", code="payout_account_missing")
    available = chart.creator_available(creator.id, currency)
    # Lock the available account before reading it, so two requests cannot both spend the same money.
    session.execute(select(LedgerAccount.id).where(LedgerAccount.code == available.code).with_for_update())
    left = balance_of(session, available.code)
    if amount > left:
        raise Conflict(f"Only {max(left, 0)} is available for payout.", code="payout_exceeds_available",
                       param="amount")
    payout = Payout(creator_id=creator.id, amount=amount, currency=currency, status=PayoutStatus.REQUESTED,
                    destination_encrypted=account.details_encrypted, destination_display=account.display,
                    version=1, created_at=ctx.clock.now())
    session.add(payout)
    session.flush()
    hold = chart.payout_hold(creator.id, currency)
    _post(session, ctx, payout, "requested", [(available, amount), (hold, -amount)])
    _event(session, payout, "payout.requested", ctx)
    risk.attach_payout(session, ctx, assessment, payout.id)
    _audit(session, ctx, creator, audit.PAYOUT_REQUESTED, payout)
    return payout


def _post(session: Session, ctx: Context, payout: Payout, step: str, legs: list[tuple[AccountSpec, int]]) -> None:
    post_transaction(session, key=f"payout:{payout.id}:{step}", kind=f"payout_{step}",
                     legs=[Leg(spec.code, amount, payout.currency) for spec, amount in legs],
                     accounts=[spec for spec, _ in legs], description=f"payout {payout.id} {step}",
                     meta={"payout_id": payout.id}, clock=ctx.clock)


def get_payout_for(session: Session, payout_id: str, user: User) -> Payout:
    payout = session.get(Payout, payout_id)
    if payout is None or (payout.creator_id != user.id and not user.has_any_role("admin")):
        raise NotFound("No such payout.", param="id")
    return payout


def _move(session: Session, payout: Payout, target: PayoutStatus, ctx: Context, **values) -> Payout:
    moved = session.execute(update(Payout).where(
        Payout.id == payout.id, Payout.status.in_([s.value for s in sources_of(target)]))
        .values(status=target, version=Payout.version + 1, **values))
    if moved.rowcount != 1:
        session.refresh(payout)
        raise Conflict(f"A {payout.status} payout cannot become {target}.", code="invalid_payout_status")
    session.refresh(payout)
    return payout


def _audit(session: Session, ctx: Context, actor: User, action: str, payout: Payout, **details: object) -> None:
    audit.record(session, actor.id, action, payout.id,
                 {"creator_id": payout.creator_id, "amount": payout.amount, "currency": payout.currency, **details},
                 ctx.clock)


def refuse_if_in_review(session: Session, payout: Payout) -> None:
    """A payout held by risk waits for its review; approving it first would get round the review."""
    waiting = session.scalar(select(RiskDecision.id).where(RiskDecision.payout_id == payout.id,
                                                           RiskDecision.review_status == "pending").limit(1))
    if waiting:
        raise Conflict("This payout is waiting for a risk review; decide the review first.",
                       code="payout_in_review")


def approve_payout(session: Session, ctx: Context, *, payout_id: str, admin: User) -> Payout:
    payout = get_payout_for(session, payout_id, admin)
    refuse_if_in_review(session, payout)
    _move(session, payout, PayoutStatus.APPROVED, ctx, approved_at=ctx.clock.now(), decided_by=admin.id)
    _post(session, ctx, payout, "approved", [(chart.payout_hold(payout.creator_id, payout.currency), payout.amount),
                                             (chart.payouts_approved(payout.currency), -payout.amount)])
    _event(session, payout, "payout.approved", ctx)
    _audit(session, ctx, admin, audit.PAYOUT_APPROVED, payout)
    return payout


def reject_payout(session: Session, ctx: Context, *, payout_id: str, admin: User, reason: str) -> Payout:
    if not reason.strip():
        raise InvalidRequest("Say why the payout is rejected.", code="parameter_missing", param="reason")
    payout = get_payout_for(session, payout_id, admin)
    was = payout.status
    _move(session, payout, PayoutStatus.REJECTED, ctx, rejected_at=ctx.clock.now(), decided_by=admin.id,
          reason=reason.strip()[:300])
    source = (chart.payouts_approved(payout.currency) if was == PayoutStatus.APPROVED
              else chart.payout_hold(payout.creator_id, payout.currency))
    _post(session, ctx, payout, "rejected", [(source, payout.amount),
                                             (chart.creator_available(payout.creator_id, payout.currency),
                                              -payout.amount)])
    _event(session, payout, "payout.rejected", ctx)
    _audit(session, ctx, admin, audit.PAYOUT_REJECTED, payout, reason=payout.reason)
    return payout


def mark_payout_paid(session: Session, ctx: Context, *, payout_id: str, admin: User, reference: str | None) -> Payout:
    payout = get_payout_for(session, payout_id, admin)
    _move(session, payout, PayoutStatus.PAID, ctx, paid_at=ctx.clock.now(), reference=(reference or "")[:100] or None)
    _post(session, ctx, payout, "paid", [(chart.payouts_approved(payout.currency), payout.amount),
                                         (chart.bank(payout.currency), -payout.amount)])
    _event(session, payout, "payout.paid", ctx)
    _audit(session, ctx, admin, audit.PAYOUT_PAID, payout, reference=payout.reference)
    return payout
