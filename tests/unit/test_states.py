"""The state machines of DESIGN §3: every allowed move, and every other move refused."""

from __future__ import annotations

from itertools import product

import pytest

from knowpay.domain.errors import Conflict
from knowpay.domain.states import (
    TRANSITIONS,
    OrderStatus,
    PaymentStatus,
    PayoutStatus,
    ProductStatus,
    RefundStatus,
    can_transition,
    check_transition,
    is_final,
    sources_of,
)

O, P, R, Y, D = OrderStatus, PaymentStatus, RefundStatus, PayoutStatus, ProductStatus

# Written out from DESIGN §3 by hand, independently of TRANSITIONS, so a changed table fails here.
ALLOWED = {
    # order: pending → paid → (partially_refunded →) refunded; pending → cancelled | expired
    (O.PENDING, O.PAID), (O.PENDING, O.CANCELLED), (O.PENDING, O.EXPIRED),
    (O.PAID, O.PARTIALLY_REFUNDED), (O.PAID, O.REFUNDED),
    (O.PARTIALLY_REFUNDED, O.PARTIALLY_REFUNDED),  # a second partial refund
    (O.PARTIALLY_REFUNDED, O.REFUNDED),
    # payment: requires_action → processing → succeeded | failed; requires_action → cancelled | expired.
    # A wallet pays at once, so requires_action may also end in succeeded or failed directly.
    (P.REQUIRES_ACTION, P.PROCESSING), (P.REQUIRES_ACTION, P.SUCCEEDED), (P.REQUIRES_ACTION, P.FAILED),
    (P.REQUIRES_ACTION, P.CANCELLED), (P.REQUIRES_ACTION, P.EXPIRED),
    (P.PROCESSING, P.SUCCEEDED), (P.PROCESSING, P.FAILED),
    # refund: pending → succeeded | failed
    (R.PENDING, R.SUCCEEDED), (R.PENDING, R.FAILED),
    # payout: requested → approved → paid; requested | approved → rejected
    (Y.REQUESTED, Y.APPROVED), (Y.APPROVED, Y.PAID), (Y.REQUESTED, Y.REJECTED), (Y.APPROVED, Y.REJECTED),
    # product: draft → published ⇄ archived; a draft may be archived unpublished
    (D.DRAFT, D.PUBLISHED), (D.DRAFT, D.ARCHIVED), (D.PUBLISHED, D.ARCHIVED), (D.ARCHIVED, D.PUBLISHED),
}
MACHINES = [OrderStatus, PaymentStatus, RefundStatus, PayoutStatus, ProductStatus]
EVERY_PAIR = [(a, b) for machine in MACHINES for a, b in product(machine, machine)]


def _id(pair) -> str:
    a, b = pair
    return f"{type(a).__name__}:{a}->{b}"


@pytest.mark.parametrize("pair", sorted(ALLOWED, key=_id), ids=_id)
def test_an_allowed_transition_passes(pair):
    current, target = pair
    assert can_transition(current, target)
    check_transition(current, target)  # raises on refusal


@pytest.mark.parametrize("pair", [p for p in EVERY_PAIR if p not in ALLOWED], ids=_id)
def test_every_other_transition_is_refused_as_a_conflict(pair):
    current, target = pair
    assert not can_transition(current, target)
    with pytest.raises(Conflict) as caught:
        check_transition(current, target)
    assert caught.value.code == "invalid_state"
    assert str(current) in caught.value.message and str(target) in caught.value.message


def test_the_table_covers_exactly_the_machines_of_the_design():
    assert set(TRANSITIONS) == set(MACHINES)


@pytest.mark.parametrize(("current", "target"), [
    (O.PAID, O.PENDING),
    (O.REFUNDED, O.PARTIALLY_REFUNDED),
    (O.CANCELLED, O.PAID),
    (O.EXPIRED, O.PAID),
    (P.SUCCEEDED, P.FAILED),
    (P.FAILED, P.SUCCEEDED),
    (P.PROCESSING, P.CANCELLED),
    (P.PROCESSING, P.EXPIRED),
    (R.SUCCEEDED, R.FAILED),
    (Y.PAID, Y.REJECTED),
    (Y.REQUESTED, Y.PAID),
])
def test_worked_examples_of_refused_moves(current, target):
    with pytest.raises(Conflict):
        check_transition(current, target)


def test_a_refusal_carries_the_code_the_caller_asked_for():
    with pytest.raises(Conflict) as caught:
        check_transition(O.PAID, O.CANCELLED, code="order_not_cancellable")
    assert caught.value.code == "order_not_cancellable"


@pytest.mark.parametrize(("current", "target"), [
    (Y.APPROVED, O.PAID),          # "paid" is a payout state too, but not this machine's
    (O.PENDING, R.SUCCEEDED),      # "pending" is a refund state too
    (R.PENDING, P.SUCCEEDED),
    (P.REQUIRES_ACTION, O.CANCELLED),
])
def test_a_state_of_another_machine_is_never_a_valid_target(current, target):
    assert not can_transition(current, target)
    with pytest.raises(Conflict):
        check_transition(current, target)


@pytest.mark.parametrize(("stored", "target", "allowed"), [
    ("pending", O.PAID, True),
    ("paid", O.PENDING, False),
    ("requires_action", P.SUCCEEDED, True),
    ("succeeded", P.FAILED, False),
    ("no_such_state", O.PAID, False),
])
def test_a_status_read_back_as_text_is_checked_against_the_target_machine(stored, target, allowed):
    assert can_transition(stored, target) is allowed
    if not allowed:
        with pytest.raises(Conflict):
            check_transition(stored, target)


def test_sources_of_a_state_are_what_a_compare_and_set_may_start_from():
    assert sources_of(P.SUCCEEDED) == {P.REQUIRES_ACTION, P.PROCESSING}
    assert sources_of(O.REFUNDED) == {O.PAID, O.PARTIALLY_REFUNDED}
    assert sources_of(O.PAID) == {O.PENDING}
    assert sources_of(Y.REJECTED) == {Y.REQUESTED, Y.APPROVED}
    assert sources_of(O.PENDING) == frozenset()


@pytest.mark.parametrize("target", [s for machine in MACHINES for s in machine], ids=str)
def test_sources_of_agrees_with_the_allowed_transitions(target):
    assert sources_of(target) == {a for a, b in ALLOWED if b is target}


@pytest.mark.parametrize(("status", "final"), [
    (O.PENDING, False), (O.PAID, False), (O.PARTIALLY_REFUNDED, False),
    (O.REFUNDED, True), (O.CANCELLED, True), (O.EXPIRED, True),
    (P.REQUIRES_ACTION, False), (P.PROCESSING, False),
    (P.SUCCEEDED, True), (P.FAILED, True), (P.CANCELLED, True), (P.EXPIRED, True),
    (R.PENDING, False), (R.SUCCEEDED, True), (R.FAILED, True),
    (Y.REQUESTED, False), (Y.APPROVED, False), (Y.PAID, True), (Y.REJECTED, True),
    (D.DRAFT, False), (D.PUBLISHED, False), (D.ARCHIVED, False),
])
def test_a_final_state_has_no_way_out(status, final):
    assert is_final(status) is final


def test_state_values_are_the_names_fixed_by_the_design():
    assert [s.value for s in OrderStatus] == [
        "pending", "paid", "partially_refunded", "refunded", "cancelled", "expired"]
    assert [s.value for s in PaymentStatus] == [
        "requires_action", "processing", "succeeded", "failed", "cancelled", "expired"]
    assert [s.value for s in RefundStatus] == ["pending", "succeeded", "failed"]
    assert [s.value for s in PayoutStatus] == ["requested", "approved", "paid", "rejected"]
