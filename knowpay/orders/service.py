"""Use cases for orders: create with price snapshots and a coupon, cancel, look up the buyer's own."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from knowpay.accounts.models import User
from knowpay.catalog.models import Product
from knowpay.domain.clock import Clock
from knowpay.domain.errors import Conflict, InvalidRequest, NotFound
from knowpay.domain.money import apply_rate_bps, split
from knowpay.domain.states import OrderStatus, ProductStatus
from knowpay.orders.models import Coupon, Order, OrderItem

MAX_ITEMS = 50
MAX_QUANTITY = 100
SINGLE_QUANTITY_KINDS = frozenset({"course", "ebook", "audio", "video", "membership"})


@dataclass(frozen=True)
class ItemRequest:
    product_id: str
    quantity: int = 1


def _load_coupon(session: Session, code: str, *, currency: str, subtotal: int, now: datetime) -> tuple[Coupon, int]:
    coupon = session.scalar(select(Coupon).where(Coupon.code == code.strip()))
    if coupon is None or not coupon.active or (coupon.expires_at is not None and coupon.expires_at <= now):
        raise InvalidRequest("This coupon does not exist or is no longer valid.", code="coupon_invalid",
                             param="coupon")
    if coupon.amount_off is not None:
        if coupon.currency != currency:
            raise InvalidRequest("This coupon is for another currency.", code="coupon_invalid", param="coupon")
        discount = min(coupon.amount_off, subtotal)
    else:
        discount = min(apply_rate_bps(subtotal, coupon.percent_off_bps or 0), subtotal)
    return coupon, discount


def _redeem(session: Session, coupon: Coupon) -> None:
    taken = session.execute(update(Coupon).where(
        Coupon.id == coupon.id,
        or_(Coupon.max_redemptions.is_(None), Coupon.times_redeemed < Coupon.max_redemptions))
        .values(times_redeemed=Coupon.times_redeemed + 1))
    if taken.rowcount != 1:
        raise Conflict("This coupon has been used up.", code="coupon_exhausted", param="coupon")


def create_order(session: Session, *, buyer: User, items: list[ItemRequest], coupon: str | None,
                 ttl_seconds: int, clock: Clock) -> Order:
    """A pending order whose items copy today's titles and prices; payable until `expires_at`."""
    if not items:
        raise InvalidRequest("An order needs at least one item.", code="empty_order", param="items")
    if len(items) > MAX_ITEMS:
        raise InvalidRequest(f"An order has at most {MAX_ITEMS} items.", code="too_many_items", param="items")
    seen: set[str] = set()
    for i, item in enumerate(items):
        if not 1 <= item.quantity <= MAX_QUANTITY:
            raise InvalidRequest(f"quantity must be from 1 to {MAX_QUANTITY}.", code="invalid_quantity",
                                 param=f"items[{i}].quantity")
        if item.product_id in seen:
            raise InvalidRequest("Each product may appear once; use quantity.", code="duplicate_item",
                                 param=f"items[{i}].product_id")
        seen.add(item.product_id)
    products = {p.id: p for p in session.scalars(select(Product).where(Product.id.in_(seen)))}
    lines: list[tuple[Product, int]] = []
    for i, item in enumerate(items):
        product = products.get(item.product_id)
        if product is None or product.status != ProductStatus.PUBLISHED:
            raise InvalidRequest("No such product for sale.", code="product_unavailable",
                                 param=f"items[{i}].product_id")
        if product.kind in SINGLE_QUANTITY_KINDS and item.quantity != 1:
            raise InvalidRequest(f"A {product.kind} is bought one at a time.", code="invalid_quantity",
                                 param=f"items[{i}].quantity")
        lines.append((product, item.quantity))
    currencies = {p.currency for p, _ in lines}
    if len(currencies) != 1:
        raise InvalidRequest("All items of an order must share one currency.", code="mixed_currencies",
                             param="items")
    currency = currencies.pop()
    now = clock.now()
    subtotal = sum(p.amount * q for p, q in lines)
    discount = 0
    coupon_row = None
    if coupon:
        coupon_row, discount = _load_coupon(session, coupon, currency=currency, subtotal=subtotal, now=now)
        _redeem(session, coupon_row)
    shares = split(discount, [p.amount * q for p, q in lines]) if discount else [0] * len(lines)
    order = Order(buyer_id=buyer.id, status=OrderStatus.PENDING, currency=currency, amount_subtotal=subtotal,
                  amount_discount=discount, amount_total=subtotal - discount, amount_refunded=0,
                  coupon_code=coupon_row.code if coupon_row else None,
                  expires_at=now + timedelta(seconds=ttl_seconds), created_at=now, version=1)
    order.items = [
        OrderItem(position=i, product_id=p.id, creator_id=p.creator_id, title=p.title, kind=p.kind,
                  amount=p.amount, quantity=q, amount_discount=share)
        for i, ((p, q), share) in enumerate(zip(lines, shares, strict=True))
    ]
    session.add(order)
    session.flush()
    return order


def get_order_for(session: Session, order_id: str, user: User) -> Order:
    """The order if `user` bought it (or is staff); otherwise NotFound, never a hint that it exists."""
    order = session.get(Order, order_id)
    if order is None or (order.buyer_id != user.id and not user.has_any_role("admin", "support")):
        raise NotFound("No such order.", param="id")
    return order


def cancel_order(session: Session, order: Order, *, clock: Clock) -> Order:
    """Pending → cancelled by compare-and-set; anything else is 409 order_not_pending."""
    done = session.execute(update(Order).where(Order.id == order.id, Order.status == OrderStatus.PENDING)
                           .values(status=OrderStatus.CANCELLED, closed_at=clock.now(),
                                   version=Order.version + 1))
    if done.rowcount != 1:
        session.refresh(order)
        raise Conflict(f"The order is {order.status}, not pending.", code="order_not_pending")
    release_coupon(session, order)
    session.refresh(order)
    return order


def release_coupon(session: Session, order: Order) -> None:
    """Give a coupon redemption back when an unpaid order closes."""
    if order.coupon_code:
        session.execute(update(Coupon).where(Coupon.code == order.coupon_code, Coupon.times_redeemed > 0)
                        .values(times_redeemed=Coupon.times_redeemed - 1))


def orders_of_query(buyer_id: str, *, status: str | None = None):
    stmt = select(Order).where(Order.buyer_id == buyer_id)
    if status:
        if status not in {s.value for s in OrderStatus}:
            raise InvalidRequest("Unknown order status.", code="invalid_status", param="status")
        stmt = stmt.where(Order.status == status)
    return stmt
