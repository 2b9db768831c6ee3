"""Orders: create with price snapshots, list, get, cancel."""

from __future__ import annotations

from typing import Literal

from flask_openapi3 import APIBlueprint
from pydantic import Field

from knowpay.orders import service as orders
from knowpay.orders.models import Order
from knowpay.representations import OrderOut
from knowpay.web.api.schemas import BEARER, IdPath, ListQuery, Page, Strict, errors, tag
from knowpay.web.auth import current_user
from knowpay.web.pagination import paginate
from knowpay.web.runtime import request_session, runtime
from knowpay.web.uow import api_call

bp = APIBlueprint("orders", __name__, url_prefix="/api/v1", abp_tags=tag("orders"))


class ItemIn(Strict):
    product_id: str = Field(..., max_length=64)
    quantity: int = Field(1, ge=1, le=100)


class OrderIn(Strict):
    items: list[ItemIn] = Field(..., min_length=1, max_length=50)
    coupon: str | None = Field(None, max_length=64)


class OrderQuery(ListQuery):
    status: Literal["pending", "paid", "partially_refunded", "refunded", "cancelled", "expired"] | None = None


def order_out(order: Order) -> OrderOut:
    return OrderOut.model_validate(order)


@bp.post("/orders", responses={201: OrderOut, **errors(400, 401, 409, 422)}, security=BEARER)
@api_call
def create_order(body: OrderIn):
    """Snapshot the items' prices, apply a coupon, and hold the order open for payment."""
    rt = runtime()
    order = orders.create_order(
        request_session(), buyer=current_user(),
        items=[orders.ItemRequest(i.product_id, i.quantity) for i in body.items], coupon=body.coupon,
        ttl_seconds=rt.settings.order_ttl_seconds, clock=rt.clock)
    return order_out(order), 201


@bp.get("/orders", responses={200: Page[OrderOut], **errors(400, 401)}, security=BEARER)
@api_call
def list_orders(query: OrderQuery):
    """The caller's orders, newest first."""
    stmt = orders.orders_of_query(current_user().id, status=query.status)
    rows, more, cursor = paginate(request_session(), stmt, Order, limit=query.limit, cursor=query.cursor)
    return {"data": [order_out(o).model_dump(mode="json") for o in rows], "has_more": more,
            "next_cursor": cursor}, 200


@bp.get("/orders/<id>", responses={200: OrderOut, **errors(401, 404)}, security=BEARER)
@api_call
def get_order(path: IdPath):
    """One of the caller's orders."""
    return order_out(orders.get_order_for(request_session(), path.id, current_user())), 200


@bp.post("/orders/<id>/cancel", responses={200: OrderOut, **errors(401, 404, 409)}, security=BEARER)
@api_call
def cancel_order(path: IdPath):
    """Cancel a pending order; 409 order_not_pending otherwise."""
    session = request_session()
    order = orders.get_order_for(session, path.id, current_user())
    return order_out(orders.cancel_order(session, order, clock=runtime().clock)), 200
