"""The state machines of DESIGN §3. Transitions happen only through `check_transition`."""

from __future__ import annotations

from enum import StrEnum

from knowpay.domain.errors import Conflict


class OrderStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class PaymentStatus(StrEnum):
    REQUIRES_ACTION = "requires_action"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class RefundStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class PayoutStatus(StrEnum):
    REQUESTED = "requested"
    APPROVED = "approved"
    PAID = "paid"
    REJECTED = "rejected"


class ProductStatus(StrEnum):
    DRAFT = "draft"
    PUBLISHED = "published"
    ARCHIVED = "archived"


TRANSITIONS: dict[type[StrEnum], dict[StrEnum, frozenset[StrEnum]]] = {
    OrderStatus: {
        OrderStatus.PENDING: frozenset({OrderStatus.PAID, OrderStatus.CANCELLED, OrderStatus.EXPIRED}),
        OrderStatus.PAID: frozenset({OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED}),
        OrderStatus.PARTIALLY_REFUNDED: frozenset({OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED}),
    },
    PaymentStatus: {
        PaymentStatus.REQUIRES_ACTION: frozenset({
            PaymentStatus.PROCESSING, PaymentStatus.SUCCEEDED, PaymentStatus.FAILED,
            PaymentStatus.CANCELLED, PaymentStatus.EXPIRED}),
        PaymentStatus.PROCESSING: frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.FAILED}),
    },
    RefundStatus: {
        RefundStatus.PENDING: frozenset({RefundStatus.SUCCEEDED, RefundStatus.FAILED}),
    },
    PayoutStatus: {
        PayoutStatus.REQUESTED: frozenset({PayoutStatus.APPROVED, PayoutStatus.REJECTED}),
        PayoutStatus.APPROVED: frozenset({PayoutStatus.PAID, PayoutStatus.REJECTED}),
    },
    ProductStatus: {
        ProductStatus.DRAFT: frozenset({ProductStatus.PUBLISHED, ProductStatus.ARCHIVED}),
        ProductStatus.PUBLISHED: frozenset({ProductStatus.ARCHIVED}),
        ProductStatus.ARCHIVED: frozenset({ProductStatus.PUBLISHED}),
    },
}


def can_transition(current: StrEnum | str, target: StrEnum) -> bool:
    """Whether `current → target` is a move of the target's machine.

    `current` may be the plain text a status column reads back as. The machine is the target's:
    the statuses are str enums, so "paid" of a payout would otherwise equal "paid" of an order.
    """
    machine = type(target)
    if isinstance(current, StrEnum) and type(current) is not machine:
        return False
    try:
        current = machine(current)
    except ValueError:
        return False
    return target in TRANSITIONS[machine].get(current, frozenset())


def sources_of(target: StrEnum) -> frozenset[StrEnum]:
    """Every state from which `target` may be reached: the WHERE clause of a compare-and-set."""
    table = TRANSITIONS[type(target)]
    return frozenset(src for src, targets in table.items() if target in targets)


def check_transition(current: StrEnum | str, target: StrEnum, *, code: str = "invalid_state") -> None:
    """Raise Conflict unless `current → target` is allowed."""
    if not can_transition(current, target):
        raise Conflict(f"Cannot go from {current} to {target}.", code=code)


def is_final(status: StrEnum) -> bool:
    return not TRANSITIONS[type(status)].get(status)
