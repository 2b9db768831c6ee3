"""JSON shapes of payouts and earnings."""

from __future__ import annotations

from pydantic import Field

from knowpay.representations import Out, UtcDateTime


class PayoutOut(Out):
    id: str
    creator_id: str
    amount: int
    currency: str
    status: str
    destination: str = Field(validation_alias="destination_display")
    reason: str | None
    reference: str | None
    created_at: UtcDateTime
    approved_at: UtcDateTime | None
    paid_at: UtcDateTime | None
    rejected_at: UtcDateTime | None


class EarningsOut(Out):
    pending: int
    available: int
    in_payout: int
    paid_out: int
    currency: str


class PayoutAccountOut(Out):
    display: str
    updated_at: UtcDateTime
