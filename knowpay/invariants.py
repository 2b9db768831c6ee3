"""The continuous invariant checker behind `knowpay verify` and the daily worker job.

Checks, reporting offending ids: every ledger transaction balanced and every cached balance equal
to its postings; each order's money equal to captured − refunded; access active exactly for paid,
not fully refunded orders; wallets never negative. A failure is logged at error level and written
as an `invariant.violated` outbox event.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import func, literal, select

from knowpay.access.models import Entitlement
from knowpay.context import Context
from knowpay.domain.states import OrderStatus, PaymentStatus, RefundStatus
from knowpay.ledger.models import JournalTransaction
from knowpay.ledger.service import verify_ledger
from knowpay.orders.models import Order, OrderItem
from knowpay.outbox.service import record_event
from knowpay.payments.models import Payment
from knowpay.refunds.models import Refund

log = logging.getLogger(__name__)
PAID = (OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED)


@dataclass
class Violation:
    check: str
    ids: list[str]
    detail: str


@dataclass
class InvariantReport:
    checked: dict[str, int] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict:
        return {"ok": self.ok, "checked": self.checked,
                "violations": [{"check": v.check, "ids": v.ids[:50], "detail": v.detail} for v in self.violations]}


def _orders(session, report: InvariantReport) -> None:
    orders = list(session.scalars(select(Order).where(Order.status.in_(PAID))))
    report.checked["orders"] = len(orders)
    captured = dict(session.execute(
        select(Payment.order_id, func.sum(Payment.amount)).join(
            JournalTransaction, JournalTransaction.idempotency_key == literal("payment:") + Payment.id + ":captured")
        .where(JournalTransaction.kind == "capture", Payment.status == PaymentStatus.SUCCEEDED)
        .group_by(Payment.order_id)).all())
    refunded = dict(session.execute(
        select(Refund.order_id, func.sum(Refund.amount)).where(
            Refund.status == RefundStatus.SUCCEEDED, Refund.kind != "duplicate_payment")
        .group_by(Refund.order_id)).all())
    wrong_capture = [o.id for o in orders if int(captured.get(o.id) or 0) != o.amount_total]
    wrong_refund = [o.id for o in orders if int(refunded.get(o.id) or 0) != o.amount_refunded]
    wrong_status = [o.id for o in orders if (o.status == OrderStatus.REFUNDED) != (o.amount_refunded >= o.amount_total
                                                                                 and o.amount_total > 0)]
    if wrong_capture:
        report.violations.append(Violation("order_captured", wrong_capture,
                                           "paid orders whose captured payments do not equal their total"))
    if wrong_refund:
        report.violations.append(Violation("order_refunded", wrong_refund,
                                           "orders whose refunded amount differs from their succeeded refunds"))
    if wrong_status:
        report.violations.append(Violation("order_status", wrong_status,
                                           "orders whose status disagrees with what was refunded"))


def _access(session, report: InvariantReport) -> None:
    rows = session.execute(select(Entitlement.id, Entitlement.status, Order.status, Order.id)
                           .join(Order, Order.id == Entitlement.order_id)).all()
    report.checked["entitlements"] = len(rows)
    should_have = (OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED)
    wrong = [ent_id for ent_id, ent_status, order_status, _ in rows
             if (ent_status == "active") != (order_status in should_have) and ent_status != "expired"]
    if wrong:
        report.violations.append(Violation("access", wrong,
                                           "entitlements active for an unpaid or refunded order, or revoked for a "
                                           "paid one"))
    missing = list(session.scalars(select(Order.id).where(
        Order.status.in_(should_have),
        select(OrderItem.id).where(OrderItem.order_id == Order.id, OrderItem.kind != "coin_pack").exists(),
        ~select(Entitlement.id).where(Entitlement.order_id == Order.id).exists())))
    if missing:
        report.violations.append(Violation("access_missing", missing, "paid orders without access"))


def check_invariants(ctx: Context, *, alert: bool = True) -> InvariantReport:
    report = InvariantReport()
    with ctx.db.transaction(write=False) as session:
        ledger = verify_ledger(session)
        report.checked["ledger_accounts"] = ledger.accounts_checked
        report.checked["ledger_transactions"] = ledger.transactions_checked
        if ledger.unbalanced_transactions:
            report.violations.append(Violation("ledger_balanced", [u["transaction"] for u in
                                                                   ledger.unbalanced_transactions],
                                               "transactions whose postings do not sum to zero"))
        if ledger.balance_mismatches:
            report.violations.append(Violation("ledger_balances", [m["account"] for m in ledger.balance_mismatches],
                                               "cached balances that differ from their postings"))
        negative = [n["account"] for n in ledger.negative_balances]
        if negative:
            report.violations.append(Violation("no_negative_balance", negative,
                                               "accounts that forbid it are below zero (wallets, holds)"))
        _orders(session, report)
        _access(session, report)
    if alert and not report.ok:
        log.error("invariants violated: %s", report.as_dict())
        with ctx.db.transaction() as session:
            record_event(session, type="invariant.violated", object_type="invariant_check",
                         object_id=f"chk_{ctx.clock.now():%Y%m%d%H%M%S}", sequence=1, payload=report.as_dict(),
                         clock=ctx.clock)
    return report
