"""Risk use cases: assess a request and store the decision, hold payments for a second factor or a
reviewer, the review queue, fraud marks, rule settings and value lists."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import NoReturn

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from knowpay.access.service import revoke_for_order
from knowpay.accounts import totp
from knowpay.accounts.models import User
from knowpay.context import Context
from knowpay.domain.errors import Conflict, InvalidRequest, NotFound, RiskBlocked
from knowpay.domain.states import OrderStatus, PaymentStatus
from knowpay.orders.models import Order
from knowpay.outbox.service import record_event
from knowpay.payments.models import Payment
from knowpay.risk.engine import Assessment, RuleConfig, changed_config, config_from_row, engine_for
from knowpay.risk.lists import LISTS, check_kind, normalize
from knowpay.risk.models import RiskDecision, RiskLabel, RiskListEntry, RiskRule
from knowpay.risk.outcomes import Outcome
from knowpay.risk.rules import registry, rule_named
from knowpay.risk.schemas import DecisionOut
from knowpay.risk.subject import Subject
from knowpay.security.signin import record_failed_second_factor

log = logging.getLogger(__name__)

# A payment in review keeps its order payable this long; a reviewer who decides later finds it expired.
REVIEW_HOLD = timedelta(days=3)
BLOCKED_MESSAGE = "This request did not pass our security review."
REJECTED_MESSAGE = "This payment did not pass our security review; no money was taken."
OTP_CHALLENGE = {"type": "otp_challenge"}


class RiskReviewPending(RiskBlocked):
    """The request waits for a reviewer; nothing was carried out yet."""

    code = "risk_review"


def _can_challenge(user: User) -> bool:
    return bool(getattr(user, "totp_enabled", False))


# -- subjects ------------------------------------------------------------------------------------------

def payment_subject(buyer: User, order: Order, ask) -> Subject:  # type: ignore[no-untyped-def]
    """A payment (or, for coin packs, a wallet top-up) as the buyer asked for it."""
    topup = any(item.kind == "coin_pack" for item in order.items)
    return Subject(kind="topup" if topup else "payment", user_id=buyer.id, email=buyer.email or "",
                   account_created_at=buyer.created_at, amount=order.amount_total, currency=order.currency,
                   channel=ask.channel, method=ask.method, ip=ask.client_ip, device_id=ask.device_id,
                   instruments={"wechat_openid": ask.openid} if ask.openid else {},
                   coupon_code=order.coupon_code, quantity=sum(item.quantity for item in order.items),
                   order_id=order.id, can_challenge=_can_challenge(buyer))


def _stored_subject(decision: RiskDecision) -> Subject | None:
    data = (decision.inputs or {}).get("subject")
    return Subject.from_json(data) if data else None


# -- decisions -----------------------------------------------------------------------------------------

def assess(ctx: Context, subject: Subject) -> Assessment:
    return engine_for(ctx).assess(subject, now=ctx.clock.now())


def store_decision(session: Session, ctx: Context, assessment: Assessment, *, order_id: str | None = None,
                   payment_id: str | None = None, refund_id: str | None = None, payout_id: str | None = None,
                   request: dict | None = None) -> RiskDecision:
    """Write the decision (and its alert, for a review or a block) in the caller's transaction."""
    subject = assessment.subject
    decision = RiskDecision(
        subject=subject.kind, user_id=subject.user_id, order_id=order_id or subject.order_id,
        payment_id=payment_id, refund_id=refund_id, payout_id=payout_id, amount=subject.amount,
        currency=subject.currency, outcome=str(assessment.outcome), shadow_outcome=str(assessment.shadow_outcome),
        inputs=assessment.inputs(), features=assessment.features, fired=[f.to_json() for f in assessment.fired],
        score=assessment.score, model_version=assessment.model_version, shadow_scores=assessment.shadow_scores,
        faults=assessment.faults, request=request,
        challenge_passed_at=assessment.at if assessment.challenge_passed else None,
        review_status="pending" if assessment.outcome == Outcome.REVIEW else None,
        created_at=assessment.at)
    session.add(decision)
    session.flush()
    alert = {Outcome.REVIEW: "risk.review_required", Outcome.BLOCK: "risk.blocked"}.get(assessment.outcome)
    if alert:
        record_event(session, type=alert, object_type="risk_decision", object_id=decision.id, sequence=1,
                     payload=decision_summary(decision), clock=ctx.clock)
    return decision


def decision_summary(decision: RiskDecision) -> dict:
    return DecisionOut.of(decision).model_dump(mode="json", exclude={"inputs", "features"})


def refuse_blocked(ctx: Context, assessment: Assessment, **links: str | None) -> NoReturn:
    """Store a block (it counts as a failed attempt too) and refuse: nothing reaches any channel."""
    with ctx.db.transaction() as session:
        decision = store_decision(session, ctx, assessment, **links)
    engine_for(ctx).record_failure(assessment.subject, now=assessment.at, failure_id=decision.id)
    raise RiskBlocked(BLOCKED_MESSAGE)


def pass_challenge(ctx: Context, buyer: User, assessment: Assessment, otp: str | None) -> None:
    """With a challenge and an `otp`: a valid code lets the request go on; a wrong one is refused and
    counted as a failure twice over: for velocity (guessing runs into the velocity rule) and for the
    sign-in lockout (guessing codes here is guessing the account's second factor)."""
    if assessment.outcome != Outcome.CHALLENGE or not otp:
        return
    with ctx.db.transaction() as session:
        user = session.get(User, buyer.id)
        ok = user is not None and totp.verify_second_factor(session, user, otp, ctx.clock)
    if ok:
        assessment.challenge_passed = True
        return
    assessment.notes.append("one-time code refused")
    with ctx.db.transaction() as session:
        decision = store_decision(session, ctx, assessment)
    engine_for(ctx).record_failure(assessment.subject, now=assessment.at, failure_id=decision.id)
    record_failed_second_factor(ctx, user_id=buyer.id, email=buyer.email or "", address=assessment.subject.ip,
                                via="payment_challenge")
    raise InvalidRequest("The one-time code is not valid.", code="invalid_otp", param="otp")


def assess_payment(ctx: Context, *, buyer: User, order: Order, ask) -> Assessment:  # type: ignore[no-untyped-def]
    """Assess a payment before any channel is called: refuse a block, check an `otp` against a challenge."""
    assessment = assess(ctx, payment_subject(buyer, order, ask))
    if assessment.outcome == Outcome.BLOCK:
        refuse_blocked(ctx, assessment, order_id=order.id)
    pass_challenge(ctx, buyer, assessment, getattr(ask, "otp", None))
    return assessment


def refuse_if_in_review(session: Session, order_id: str) -> None:
    """A second attempt must not get round a review of the first."""
    waiting = session.scalar(select(RiskDecision.id).where(
        RiskDecision.order_id == order_id, RiskDecision.review_status == "pending",
        RiskDecision.subject.in_(("payment", "topup")), RiskDecision.payment_id.is_not(None)).limit(1))
    if waiting:
        raise Conflict("A payment of this order is being reviewed; wait for the outcome.",
                       code="payment_in_review")


def challenged_payment(session: Session, order_id: str, channel: str, method: str | None) -> Payment | None:
    """The payment of this order still waiting for the buyer's second factor, to go on with."""
    for payment in session.scalars(select(Payment).where(
            Payment.order_id == order_id, Payment.status == PaymentStatus.REQUIRES_ACTION,
            Payment.channel == channel).with_for_update()):
        if payment.action == OTP_CHALLENGE and (method is None or payment.method == method):
            return payment
    return None


def hold_payment(session: Session, ctx: Context, assessment: Assessment, payment: Payment, order: Order) -> bool:
    """Store the payment's decision; True when it waits (for the buyer's second factor, or a reviewer)
    instead of going to its channel now."""
    store_decision(session, ctx, assessment, order_id=order.id, payment_id=payment.id)
    if not assessment.holds:
        return False
    now = ctx.clock.now()
    if assessment.outcome == Outcome.CHALLENGE:
        payment.action = dict(OTP_CHALLENGE)
    else:
        payment.status = PaymentStatus.PROCESSING
        payment.action = None
        # The order stays payable while a reviewer looks at it.
        session.execute(update(Order).where(Order.id == order.id, Order.status == OrderStatus.PENDING,
                                            Order.expires_at < now + REVIEW_HOLD)
                        .values(expires_at=now + REVIEW_HOLD))
    payment.next_query_at = None  # the channel has not seen it: nothing to ask about
    payment.updated_at = now
    session.flush()
    return True


def note_payment_failure(session: Session, payment: Payment, ctx: Context) -> None:
    """Count a failed payment (a channel's decline, a rejected review) as a failed attempt of its buyer,
    IP and device; `fail_payment` calls it in the failing transaction."""
    subject = Subject(kind="payment", user_id=payment.buyer_id, email="", account_created_at=payment.created_at,
                      amount=payment.amount, currency=payment.currency, ip=payment.client_ip,
                      device_id=payment.device_id)
    engine_for(ctx).record_failure(subject, now=ctx.clock.now(), failure_id=payment.id, session=session)


# -- refunds and payouts ---------------------------------------------------------------------------------

def check_refund(ctx: Context, *, actor: User, payment_id: str, amount: int | None,
                 reason: str | None) -> Assessment | None:
    """Assess a buyer's refund request before anything is recorded or sent. A block or a review
    refuses it for now (a review is carried out if a reviewer approves it); an allowed one is returned
    for `attach_refund` to store with the refund."""
    with ctx.db.transaction(write=False) as session:
        payment = session.get(Payment, payment_id)
        if payment is None or payment.buyer_id != actor.id:
            return None  # the refund service answers that one
        order_id = payment.order_id
        left = payment.amount - payment.amount_refunded
        subject = Subject(kind="refund", user_id=actor.id, email=actor.email or "",
                          account_created_at=actor.created_at, amount=amount if amount is not None else left,
                          currency=payment.currency, channel=payment.channel, order_id=order_id,
                          payment_id=payment.id)
    assessment = assess(ctx, subject)
    if assessment.outcome == Outcome.BLOCK:
        refuse_blocked(ctx, assessment, order_id=order_id, payment_id=payment_id)
    if assessment.outcome in (Outcome.REVIEW, Outcome.CHALLENGE):
        # A refund request carries no one-time code: a challenge is a review.
        assessment.outcome = Outcome.REVIEW
        with ctx.db.transaction() as session:
            store_decision(session, ctx, assessment, order_id=order_id, payment_id=payment_id,
                           request={"payment_id": payment_id, "amount": amount, "reason": reason,
                                    "actor_id": actor.id})
        raise RiskReviewPending("Your refund request is held for review; you will hear from us.")
    return assessment


def attach_refund(session: Session, ctx: Context, assessment: Assessment | None, refund) -> None:  # type: ignore[no-untyped-def]
    if assessment is not None:
        store_decision(session, ctx, assessment, order_id=refund.order_id, payment_id=refund.payment_id,
                       refund_id=refund.id)


def check_payout(ctx: Context, *, creator: User, amount: int, currency: str) -> Assessment:
    """Assess a payout request before it is recorded. A block refuses it; a review lets the payout be
    recorded (its money held) and puts it in the review queue: `attach_payout` stores the decision."""
    subject = Subject(kind="payout", user_id=creator.id, email=creator.email or "",
                      account_created_at=creator.created_at, amount=amount, currency=currency)
    assessment = assess(ctx, subject)
    if assessment.outcome == Outcome.BLOCK:
        refuse_blocked(ctx, assessment)
    if assessment.outcome == Outcome.CHALLENGE:
        assessment.outcome = Outcome.REVIEW
    return assessment


def attach_payout(session: Session, ctx: Context, assessment: Assessment, payout_id: str) -> RiskDecision:
    return store_decision(session, ctx, assessment, payout_id=payout_id)


# -- the review queue -------------------------------------------------------------------------------------

def reviews_query(status: str | None):  # type: ignore[no-untyped-def]
    stmt = select(RiskDecision).where(RiskDecision.review_status.is_not(None))
    if status:
        stmt = stmt.where(RiskDecision.review_status == status)
    return stmt


def get_decision(session: Session, decision_id: str) -> RiskDecision:
    decision = session.get(RiskDecision, decision_id)
    if decision is None:
        raise NotFound("No such risk decision.", param="id")
    return decision


def _decide(session: Session, decision_id: str, status: str, admin: User, note: str | None,
            now: datetime) -> RiskDecision:
    decision = get_decision(session, decision_id)
    moved = session.execute(update(RiskDecision).where(RiskDecision.id == decision_id,
                                                       RiskDecision.review_status == "pending")
                            .values(review_status=status, reviewed_by=admin.id, reviewed_at=now,
                                    review_note=(note or "").strip()[:300] or None))
    if moved.rowcount != 1:
        raise Conflict(f"This review is {decision.review_status or 'not a review'}, not pending.",
                       code="review_not_pending")
    session.refresh(decision)
    return decision


def _label(session: Session, payment_id: str, label: str, source: str, *, note: str | None, by: str | None,
           now: datetime) -> RiskLabel:
    existing = session.scalar(select(RiskLabel).where(RiskLabel.payment_id == payment_id,
                                                      RiskLabel.source == source))
    if existing is not None:
        existing.label, existing.note = label, note
        return existing
    row = RiskLabel(payment_id=payment_id, label=label, source=source, note=note, created_by=by, created_at=now)
    session.add(row)
    session.flush()
    return row


def approve_review(ctx: Context, *, decision_id: str, admin: User, note: str | None) -> RiskDecision:
    """Let the held request go on: a payment is sent to its channel now (the wallet pays now), a refund
    is recorded and sent, a payout continues to its own approval."""
    from knowpay.refunds.processing import push_refund
    from knowpay.refunds.service import open_refund

    now = ctx.clock.now()
    refund_id = None
    with ctx.db.transaction() as session:
        decision = _decide(session, decision_id, "approved", admin, note, now)
        if decision.subject in ("payment", "topup") and decision.payment_id:
            payment = session.get(Payment, decision.payment_id)
            if payment is None or payment.status != PaymentStatus.PROCESSING:
                # Expired (the order was not paid in time) or closed otherwise: nothing to let through.
                raise Conflict(f"The payment is {payment.status if payment else 'gone'}; it can no longer go on.",
                               code="payment_not_held")
            _label(session, decision.payment_id, "legit", "review", note=note, by=admin.id, now=now)
        elif decision.subject == "refund" and decision.request:
            held = decision.request
            reason = "approved after risk review" + (f": {held['reason']}" if held.get("reason") else "")
            refund_id = open_refund(ctx, session, actor=admin, payment_id=held["payment_id"],
                                    amount=held.get("amount"), reason=reason[:300]).id
            decision.refund_id = refund_id
    if decision.subject in ("payment", "topup") and decision.payment_id:
        from knowpay.payments.service import continue_payment

        subject = _stored_subject(decision)
        continue_payment(ctx, payment_id=decision.payment_id,
                         openid=subject.instruments.get("wechat_openid") if subject else None)
    elif refund_id:
        push_refund(ctx, refund_id)
    return decision


def reject_review(ctx: Context, *, decision_id: str, admin: User, note: str | None) -> RiskDecision:
    """Refuse the held request: a payment fails with `risk_rejected` (the buyer sees it on the payment
    and its status stream, and it counts as a failed attempt), a payout is rejected and its money
    returned to the creator."""
    from knowpay.payments.capture import fail_payment

    now = ctx.clock.now()
    with ctx.db.transaction() as session:
        decision = _decide(session, decision_id, "rejected", admin, note, now)
        if decision.subject in ("payment", "topup") and decision.payment_id:
            fail_payment(session, decision.payment_id, code="risk_rejected", message=REJECTED_MESSAGE, ctx=ctx)
            _label(session, decision.payment_id, "fraud", "review", note=note, by=admin.id, now=now)
        elif decision.subject == "payout" and decision.payout_id:
            from knowpay.payouts.service import reject_payout

            try:
                with session.begin_nested():
                    reject_payout(session, ctx, payout_id=decision.payout_id, admin=admin,
                                  reason=f"risk review: {note or 'rejected'}"[:300])
            except Conflict:
                log.info("risk review %s rejected, but payout %s can no longer be rejected", decision.id,
                         decision.payout_id)
    return decision


def mark_fraud(ctx: Context, *, payment_id: str, admin: User, note: str | None,
               source: str = "admin") -> tuple[RiskLabel, list[str]]:
    """Label a payment fraudulent (a training label) and revoke the access its order granted, the way a
    full refund does. Marking again changes nothing more."""
    with ctx.db.transaction() as session:
        payment = session.get(Payment, payment_id)
        if payment is None:
            raise NotFound("No such payment.", param="id")
        label = _label(session, payment.id, "fraud", source, note=(note or "").strip()[:300] or None,
                       by=admin.id, now=ctx.clock.now())
        revoked = [e.id for e in revoke_for_order(session, payment.order_id, clock=ctx.clock)]
        return label, revoked


# -- rules -----------------------------------------------------------------------------------------------

def rule_configs(session: Session) -> list[RuleConfig]:
    rows = {row.name: row for row in session.scalars(select(RiskRule))}
    return [config_from_row(rule, rows.get(name)) for name, rule in registry().items()]


def update_rule(ctx: Context, name: str, *, actor_id: str | None, enabled: bool | None = None,
                action: str | None = None, shadow: bool | None = None, params: dict | None = None) -> RuleConfig:
    """Change a rule's settings; refused with the bad field named when they do not validate."""
    rule = rule_named(name)
    if rule is None:
        raise NotFound(f"No risk rule {name!r}.", param="name")
    with ctx.db.transaction() as session:
        row = session.get(RiskRule, name, with_for_update=True)
        config = changed_config(config_from_row(rule, row), enabled=enabled, action=action, shadow=shadow,
                                params=params)
        if row is None:
            row = RiskRule(name=name)
            session.add(row)
        row.enabled, row.action, row.shadow = config.enabled, str(config.action), config.shadow
        row.params = config.params.model_dump(mode="json")
        row.updated_at, row.updated_by = ctx.clock.now(), actor_id
        session.flush()
        saved = config_from_row(rule, row)
    engine_for(ctx).config.invalidate()
    return saved


# -- value lists -----------------------------------------------------------------------------------------

def _check_list(list_name: str) -> str:
    if list_name not in LISTS:
        raise InvalidRequest("list must be block or allow.", code="invalid_parameter", param="list")
    return list_name


def add_list_entry(ctx: Context, *, kind: str, value: str, reason: str | None, list_name: str = "block",
                   actor_id: str | None) -> RiskListEntry:
    entry = RiskListEntry(list_name=_check_list(list_name), kind=check_kind(kind), value=normalize(kind, value),
                          reason=(reason or "").strip()[:300] or None, created_by=actor_id,
                          created_at=ctx.clock.now())
    try:
        with ctx.db.transaction() as session:
            session.add(entry)
            session.flush()
    except IntegrityError:
        raise Conflict(f"{entry.value} is already on the {list_name} list.", code="list_entry_exists",
                       param="value") from None
    engine_for(ctx).config.invalidate()
    return entry


def list_entries_query(kind: str, list_name: str | None):  # type: ignore[no-untyped-def]
    stmt = select(RiskListEntry).where(RiskListEntry.kind == check_kind(kind))
    if list_name:
        stmt = stmt.where(RiskListEntry.list_name == _check_list(list_name))
    return stmt


def remove_list_entry(ctx: Context, *, kind: str, entry_id: str) -> None:
    with ctx.db.transaction() as session:
        entry = session.get(RiskListEntry, entry_id)
        if entry is None or entry.kind != check_kind(kind):
            raise NotFound("No such list entry.", param="id")
        session.delete(entry)
    engine_for(ctx).config.invalidate()
