"""Catalog: list, get, create, edit, publish, archive products."""

from __future__ import annotations

from typing import Literal

from flask_openapi3 import APIBlueprint
from pydantic import Field

from knowpay.catalog import service as catalog
from knowpay.catalog.models import Product
from knowpay.domain.states import ProductStatus
from knowpay.representations import ProductOut
from knowpay.web.api.schemas import BEARER, IdPath, ListQuery, Page, Strict, errors, tag
from knowpay.web.auth import current_user, optional_user
from knowpay.web.pagination import paginate
from knowpay.web.runtime import request_session, runtime
from knowpay.web.uow import api_call

bp = APIBlueprint("products", __name__, url_prefix="/api/v1", abp_tags=tag("catalog"))

Kind = Literal["course", "ebook", "audio", "video", "membership", "consulting", "coin_pack"]


class PlanIn(Strict):
    interval: Literal["day", "week", "month", "year"]
    interval_count: int = Field(1, ge=1, le=36)


class ProductIn(Strict):
    title: str = Field(..., min_length=1, max_length=200)
    kind: Kind
    amount: int = Field(..., gt=0, le=10**13, description="price in minor units (fen): 9900 is 99.00")
    currency: str = Field(..., pattern=r"^[a-z]{3}$")
    description: str = Field("", max_length=20000)
    refund_window_days: int = Field(7, ge=0, le=365)
    plan: PlanIn | None = None
    coins: int | None = Field(None, gt=0, le=10**13, description="coin_pack only: coins credited")
    bonus_coins: int = Field(0, ge=0, le=10**13, description="coin_pack only: extra coins, funded by promotion")


class ProductPatch(Strict):
    """Only the fields sent change. The currency never does; kind, plan and coins only while a draft."""

    title: str | None = Field(None, min_length=1, max_length=200)
    amount: int | None = Field(None, gt=0, le=10**13,
                               description="new price in minor units; existing orders keep theirs")
    description: str | None = Field(None, max_length=20000)
    refund_window_days: int | None = Field(None, ge=0, le=365, description="once on sale, may only grow")
    kind: Kind | None = None
    plan: PlanIn | None = None
    coins: int | None = Field(None, gt=0, le=10**13)
    bonus_coins: int | None = Field(None, ge=0, le=10**13)


class ProductQuery(ListQuery):
    kind: Kind | None = None
    creator_id: str | None = None


def product_out(product: Product) -> ProductOut:
    return ProductOut.model_validate(product)


@bp.get("/products", responses={200: Page[ProductOut], **errors(400)})
@api_call
def list_products(query: ProductQuery):
    """Published products, newest first; `?kind=` filters."""
    stmt = catalog.list_products_query(kind=query.kind, creator_id=query.creator_id)
    rows, more, cursor = paginate(request_session(), stmt, Product, limit=query.limit, cursor=query.cursor)
    return {"data": [product_out(p).model_dump(mode="json") for p in rows], "has_more": more,
            "next_cursor": cursor}, 200


@bp.get("/products/<id>", responses={200: ProductOut, **errors(404)})
@api_call
def get_product(path: IdPath):
    """One product: published ones for anyone, drafts for their creator."""
    return product_out(catalog.get_visible_product(request_session(), path.id, optional_user())), 200


@bp.post("/products", responses={201: ProductOut, **errors(400, 401, 403)}, security=BEARER)
@api_call
def create_product(body: ProductIn):
    """A creator (or admin) adds a draft product."""
    user = current_user("creator", "admin")
    product = catalog.create_product(
        request_session(), creator=user, title=body.title, kind=body.kind, amount=body.amount,
        currency=body.currency, description=body.description, refund_window_days=body.refund_window_days,
        plan=body.plan.model_dump() if body.plan else None, coins=body.coins, bonus_coins=body.bonus_coins,
        clock=runtime().clock)
    return product_out(product), 201


@bp.patch("/products/<id>", responses={200: ProductOut, **errors(400, 401, 403, 404, 409)}, security=BEARER)
@api_call
def update_product(path: IdPath, body: ProductPatch):
    """Edit a product (its creator or an admin). A new price applies to new orders only; 409 when a product
    that has been on sale would change its kind, plan or coins, or shorten its refund window."""
    user = current_user("creator", "admin")
    session = request_session()
    product = catalog.get_product_for_editor(session, path.id, user)
    changed = catalog.update_product(
        session, product, clock=runtime().clock, title=body.title, description=body.description,
        amount=body.amount, refund_window_days=body.refund_window_days, kind=body.kind,
        plan=body.plan.model_dump() if body.plan else None, coins=body.coins, bonus_coins=body.bonus_coins)
    return product_out(changed), 200


def _change(product_id: str, target: ProductStatus):
    user = current_user("creator", "admin")
    session = request_session()
    product = catalog.get_product_for_editor(session, product_id, user)
    return product_out(catalog.change_status(session, product, target, clock=runtime().clock)), 200


@bp.post("/products/<id>/publish", responses={200: ProductOut, **errors(401, 404, 409)}, security=BEARER)
@api_call
def publish_product(path: IdPath):
    """Put a draft (or archived) product on sale."""
    return _change(path.id, ProductStatus.PUBLISHED)


@bp.post("/products/<id>/archive", responses={200: ProductOut, **errors(401, 404, 409)}, security=BEARER)
@api_call
def archive_product(path: IdPath):
    """Take a product off sale; buyers keep what they bought."""
    return _change(path.id, ProductStatus.ARCHIVED)
