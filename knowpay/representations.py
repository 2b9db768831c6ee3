"""The JSON shapes of API objects, declared once: the API answers with them, events carry them,
and the OpenAPI document is generated from them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from knowpay.domain.clock import isoformat

UtcDateTime = Annotated[datetime, PlainSerializer(isoformat, return_type=str)]


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ProductOut(Out):
    id: str
    title: str
    kind: str
    amount: int
    currency: str
    status: str
    creator_id: str
    description: str
    refund_window_days: int
    plan: dict | None
    coins: int | None
    bonus_coins: int
    created_at: UtcDateTime


class OrderItemOut(Out):
    product_id: str
    title: str
    kind: str
    amount: int
    quantity: int


class OrderOut(Out):
    id: str
    status: str
    buyer_id: str
    items: list[OrderItemOut]
    amount_subtotal: int
    amount_discount: int
    amount_total: int
    amount_refunded: int
    currency: str
    coupon: str | None = Field(validation_alias="coupon_code")
    expires_at: UtcDateTime
    paid_at: UtcDateTime | None
    created_at: UtcDateTime


class PaymentOut(Out):
    id: str
    order_id: str
    channel: str
    method: str | None
    status: str
    amount: int
    currency: str
    amount_refunded: int
    action: dict | None
    channel_trade_no: str | None
    failure_code: str | None
    failure_message: str | None
    installments: int | None
    created_at: UtcDateTime
    succeeded_at: UtcDateTime | None


class EntitlementOut(Out):
    id: str
    user_id: str
    product_id: str
    order_id: str
    status: str
    starts_at: UtcDateTime
    ends_at: UtcDateTime | None


class RefundOut(Out):
    id: str
    payment_id: str
    order_id: str
    amount: int
    currency: str
    status: str
    reason: str | None
    created_at: UtcDateTime
    succeeded_at: UtcDateTime | None


def as_json(model: type[Out], obj: object) -> dict:
    return model.model_validate(obj).model_dump(mode="json")
