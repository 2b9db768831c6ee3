"""Staff actions taken from a ticket, written to the platform's audit log.

The ticket's timeline records each action too; the audit log (`knowpay.security.audit`) is the
append-only, hash-chained record of who moved money or access. Call it as the last write of the
transaction: appends are serialised.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from knowpay.context import Context
from knowpay.security import audit

REFUND_REQUESTED = "support.refund_requested"
ACCESS_GRANTED = "support.access_granted"
PAYMENTS_CHECKED = "support.payments_checked"
TICKET_STATUS_CHANGED = "support.ticket_status_changed"


def record_staff_action(session: Session, ctx: Context, *, actor_id: str, action: str, target: str,
                        ticket_id: str, details: dict) -> None:
    """Audit one staff action on `target` (a refund, an order, a ticket) in the caller's transaction."""
    audit.record(session, actor_id, action, target, {"ticket_id": ticket_id, **details}, ctx.clock)
