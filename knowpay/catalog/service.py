"""Use cases for products: create, publish, archive, list."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from knowpay.accounts.models import User
from knowpay.catalog.models import KINDS, Product
from knowpay.domain.clock import Clock
from knowpay.domain.errors import Conflict, InvalidRequest, NotFound
from knowpay.domain.money import check_amount, exponent
from knowpay.domain.states import ProductStatus, sources_of

PLAN_INTERVALS = ("day", "week", "month", "year")


def _check_plan(kind: str, plan: dict | None) -> dict | None:
    if kind != "membership":
        if plan is not None:
            raise InvalidRequest("Only a membership has a plan.", code="invalid_plan", param="plan")
        return None
    plan = plan or {"interval": "month", "interval_count": 1}
    interval = plan.get("interval")
    count = plan.get("interval_count", 1)
    if interval not in PLAN_INTERVALS:
        raise InvalidRequest(f"plan.interval must be one of {', '.join(PLAN_INTERVALS)}.",
                             code="invalid_plan", param="plan.interval")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 36:
        raise InvalidRequest("plan.interval_count must be a whole number from 1 to 36.",
                             code="invalid_plan", param="plan.interval_count")
    return {"interval": interval, "interval_count": count}


def create_product(session: Session, *, creator: User, title: str, kind: str, amount: int, currency: str,
                   description: str = "", refund_window_days: int = 7, plan: dict | None = None,
                   coins: int | None = None, bonus_coins: int = 0, clock: Clock) -> Product:
    """A new draft product owned by `creator`."""
    if kind not in KINDS:
        raise InvalidRequest(f"kind must be one of {', '.join(KINDS)}.", code="invalid_kind", param="kind")
    check_amount(amount)
    exponent(currency)
    if currency == "coin":
        raise InvalidRequest("Products are priced in money, not coins.", code="invalid_currency", param="currency")
    title = title.strip()
    if not title:
        raise InvalidRequest("title must not be empty.", code="invalid_title", param="title")
    if kind == "coin_pack":
        if coins is None:
            raise InvalidRequest("A coin_pack needs `coins`.", code="invalid_coins", param="coins")
        check_amount(coins, param="coins")
        check_amount(bonus_coins, param="bonus_coins", allow_zero=True)
    elif coins is not None or bonus_coins:
        raise InvalidRequest("Only a coin_pack carries coins.", code="invalid_coins", param="coins")
    now = clock.now()
    product = Product(creator_id=creator.id, title=title, description=description, kind=kind, amount=amount,
                      currency=currency, status=ProductStatus.DRAFT, refund_window_days=refund_window_days,
                      plan=_check_plan(kind, plan), coins=coins, bonus_coins=bonus_coins,
                      created_at=now, updated_at=now)
    session.add(product)
    session.flush()
    return product


def get_product_for_editor(session: Session, product_id: str, user: User) -> Product:
    product = session.get(Product, product_id)
    if product is None or (product.creator_id != user.id and not user.has_any_role("admin")):
        raise NotFound("No such product.", param="id")
    return product


def change_status(session: Session, product: Product, target: ProductStatus, *, clock: Clock) -> Product:
    """Compare-and-set the product's status; a move the state machine forbids is a Conflict."""
    if product.status == target:
        return product
    done = session.execute(update(Product).where(
        Product.id == product.id, Product.status.in_([s.value for s in sources_of(target)]))
        .values(status=target, updated_at=clock.now()))
    if done.rowcount != 1:
        raise Conflict(f"A {product.status} product cannot become {target}.", code="invalid_product_status")
    session.refresh(product)
    return product


def get_visible_product(session: Session, product_id: str, viewer: User | None) -> Product:
    """Published products for everyone; drafts and archived ones only for their creator or an admin."""
    product = session.get(Product, product_id)
    if product is None:
        raise NotFound("No such product.", param="id")
    if product.status != ProductStatus.PUBLISHED and not (
            viewer is not None and (viewer.id == product.creator_id or viewer.has_any_role("admin"))):
        raise NotFound("No such product.", param="id")
    return product


def list_products_query(*, kind: str | None, creator_id: str | None = None, published_only: bool = True):
    stmt = select(Product)
    if published_only:
        stmt = stmt.where(Product.status == ProductStatus.PUBLISHED)
    if kind:
        if kind not in KINDS:
            raise InvalidRequest(f"kind must be one of {', '.join(KINDS)}.", code="invalid_kind", param="kind")
        stmt = stmt.where(Product.kind == kind)
    if creator_id:
        stmt = stmt.where(Product.creator_id == creator_id)
    return stmt
