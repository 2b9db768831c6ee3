"""The JSON shapes of risk objects: the admin API answers with them and the outbox events carry them."""

from __future__ import annotations

from pydantic import BaseModel

from knowpay.representations import Out, UtcDateTime


class ReviewOut(BaseModel):
    status: str | None
    reviewed_by: str | None
    reviewed_at: UtcDateTime | None
    note: str | None


class DecisionOut(Out):
    id: str
    subject: str
    user_id: str
    order_id: str | None
    payment_id: str | None
    refund_id: str | None
    payout_id: str | None
    amount: int
    currency: str
    outcome: str
    shadow_outcome: str
    fired: list[dict]
    score: float | None
    model_version: int | None
    shadow_scores: list[dict]
    faults: list[str]
    inputs: dict
    features: dict
    request: dict | None
    challenge_passed_at: UtcDateTime | None
    review: ReviewOut
    created_at: UtcDateTime

    @classmethod
    def of(cls, decision) -> DecisionOut:  # type: ignore[no-untyped-def]
        fields = {name: getattr(decision, name) for name in cls.model_fields if name != "review"}
        return cls.model_validate({**fields, "review": ReviewOut(
            status=decision.review_status, reviewed_by=decision.reviewed_by, reviewed_at=decision.reviewed_at,
            note=decision.review_note)})


class RuleOut(BaseModel):
    name: str
    description: str
    enabled: bool
    action: str
    shadow: bool
    params: dict
    fail: str
    actions: list[str]
    updated_at: UtcDateTime | None
    updated_by: str | None
    problem: str | None


class ListEntryOut(Out):
    id: str
    list: str
    kind: str
    value: str
    reason: str | None
    created_by: str | None
    created_at: UtcDateTime

    @classmethod
    def of(cls, entry) -> ListEntryOut:  # type: ignore[no-untyped-def]
        return cls(id=entry.id, list=entry.list_name, kind=entry.kind, value=entry.value, reason=entry.reason,
                   created_by=entry.created_by, created_at=entry.created_at)


class ModelOut(Out):
    version: int
    status: str
    algorithm: str
    feature_names: list[str]
    params: dict
    metrics: dict
    trained_at: UtcDateTime


class FraudMarkOut(BaseModel):
    payment_id: str
    label: str
    source: str
    note: str | None
    revoked_entitlements: list[str]
