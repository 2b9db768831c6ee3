"""The "You may also like" block of the product page, the payment success page and the library:
a few products from the recommendation service, never one the viewer owns."""

from __future__ import annotations

from sqlalchemy.orm import Session

from knowpay.accounts.models import User
from knowpay.catalog.models import Product
from knowpay.orders.models import Order
from knowpay.recommend import service as recommend

SHOWN = 4  # one row on a laptop, two short rows on a phone


def also_bought(session: Session, product: Product, viewer: User | None) -> list[Product]:
    """Buyers of `product` also bought (popular ones of its kind until there is history)."""
    return recommend.similar_products(session, product, viewer_id=viewer.id if viewer else None, limit=SHOWN)


def for_buyer(session: Session, buyer: User) -> list[Product]:
    return recommend.for_buyer(session, buyer.id, limit=SHOWN)


def after_payment(session: Session, order: Order) -> list[Product]:
    """What buyers of the order's first product also bought; for a coin top-up, what suits the buyer."""
    bought = next((item.product_id for item in order.items if item.kind in recommend.RECOMMENDABLE), None)
    product = session.get(Product, bought) if bought else None
    if product is None:
        return recommend.for_buyer(session, order.buyer_id, limit=SHOWN)
    return recommend.similar_products(session, product, viewer_id=order.buyer_id, limit=SHOWN)
