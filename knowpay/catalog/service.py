"""Use cases for products: create, edit, publish, archive, list."""

from __future__ import annotations

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from knowpay.accounts.models import User
from knowpay.catalog.models import KINDS, Product
from knowpay.domain.clock import Clock
from knowpay.domain.errors import Conflict, InvalidRequest, NotFound
from knowpay.domain.money import check_amount, exponent
from knowpay.domain.states import ProductStatus, sources_of

PLAN_INTERVALS = ("day", "week", "month", "year")
MAX_REFUND_WINDOW_DAYS = 365
# What a purchase is honoured by after it is paid (entitlements, coins credited): fixed once on sale.
TERMS = ("kind", "plan", "coins", "bonus_coins")


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


def _check_title(title: str) -> str:
    title = title.strip()
    if not title:
        raise InvalidRequest("title must not be empty.", code="invalid_title", param="title")
    return title


def _check_refund_window(days: int) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= MAX_REFUND_WINDOW_DAYS:
        raise InvalidRequest(f"refund_window_days must be a whole number from 0 to {MAX_REFUND_WINDOW_DAYS}.",
                             code="invalid_refund_window", param="refund_window_days")
    return days


def _check_terms(kind: str, *, plan: dict | None, coins: int | None, bonus_coins: int) -> dict:
    """The kind and what comes with it (a membership's plan, a coin pack's coins), checked together."""
    if kind not in KINDS:
        raise InvalidRequest(f"kind must be one of {', '.join(KINDS)}.", code="invalid_kind", param="kind")
    if kind == "coin_pack":
        if coins is None:
            raise InvalidRequest("A coin_pack needs `coins`.", code="invalid_coins", param="coins")
        check_amount(coins, param="coins")
        check_amount(bonus_coins, param="bonus_coins", allow_zero=True)
    elif coins is not None or bonus_coins:
        raise InvalidRequest("Only a coin_pack carries coins.", code="invalid_coins", param="coins")
    return {"kind": kind, "plan": _check_plan(kind, plan), "coins": coins, "bonus_coins": bonus_coins}


def create_product(session: Session, *, creator: User, title: str, kind: str, amount: int, currency: str,
                   description: str = "", refund_window_days: int = 7, plan: dict | None = None,
                   coins: int | None = None, bonus_coins: int = 0, clock: Clock) -> Product:
    """A new draft product owned by `creator`."""
    check_amount(amount)
    exponent(currency)
    if currency == "coin":
        raise InvalidRequest("Products are priced in money, not coins.", code="invalid_currency", param="currency")
    title = _check_title(title)
    _check_refund_window(refund_window_days)
    terms = _check_terms(kind, plan=plan, coins=coins, bonus_coins=bonus_coins)
    now = clock.now()
    product = Product(creator_id=creator.id, title=title, description=description, amount=amount,
                      currency=currency, status=ProductStatus.DRAFT, refund_window_days=refund_window_days,
                      created_at=now, updated_at=now, **terms)
    session.add(product)
    session.flush()
    return product


def update_product(session: Session, product: Product, *, clock: Clock, title: str | None = None,
                   description: str | None = None, amount: int | None = None,
                   refund_window_days: int | None = None, kind: str | None = None, plan: dict | None = None,
                   coins: int | None = None, bonus_coins: int | None = None) -> Product:
    """Change what is given (None leaves a field as it is). Orders keep the title and price they were made
    with, so those change freely. What a purchase is honoured by later — the kind, a membership's plan, a
    coin pack's coins — changes only while the product is a draft (never sold), and once it has been on
    sale its refund window may grow but not shrink. Both are compare-and-set on the row: a product
    published meanwhile makes such an edit a Conflict rather than changing what buyers paid for."""
    values: dict = {}
    if title is not None:
        values["title"] = _check_title(title)
    if description is not None:
        values["description"] = description
    if amount is not None:
        values["amount"] = check_amount(amount)
    if refund_window_days is not None:
        values["refund_window_days"] = _check_refund_window(refund_window_days)
    if any(given is not None for given in (kind, plan, coins, bonus_coins)):
        new_kind = kind or product.kind
        same_kind = new_kind == product.kind

        def kept(given, current):
            return given if given is not None else (current if same_kind else None)

        values.update(_check_terms(new_kind, plan=kept(plan, product.plan), coins=kept(coins, product.coins),
                                   bonus_coins=kept(bonus_coins, product.bonus_coins) or 0))
    values = {name: value for name, value in values.items() if getattr(product, name) != value}
    if not values:
        return product
    stmt = update(Product).where(Product.id == product.id)
    terms_change = any(name in values for name in TERMS)
    if terms_change:
        stmt = stmt.where(Product.status == ProductStatus.DRAFT)
    if "refund_window_days" in values:
        stmt = stmt.where(or_(Product.status == ProductStatus.DRAFT,
                              Product.refund_window_days <= values["refund_window_days"]))
    done = session.execute(stmt.values(updated_at=clock.now(), **values))
    session.refresh(product)
    if done.rowcount != 1:
        if terms_change and product.status != ProductStatus.DRAFT:
            raise Conflict(f"A {product.status} product keeps its kind, plan and coins, as buyers paid.",
                           code="product_terms_fixed", param=next(name for name in TERMS if name in values))
        raise Conflict(f"A {product.status} product's refund window may grow but not shrink below "
                       f"{product.refund_window_days} days: buyers were promised it.",
                       code="refund_window_shortened", param="refund_window_days")
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
