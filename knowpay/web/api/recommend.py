"""Recommendations: buyers of a product also bought, and for you. Best first, never what the caller owns."""

from __future__ import annotations

from flask_openapi3 import APIBlueprint
from pydantic import BaseModel, Field

from knowpay.catalog.service import get_visible_product
from knowpay.recommend import service as recommend
from knowpay.representations import ProductOut
from knowpay.web.api.schemas import BEARER, IdPath, Input, errors, tag
from knowpay.web.auth import current_user, optional_user
from knowpay.web.runtime import request_session
from knowpay.web.uow import api_call

bp = APIBlueprint("recommend", __name__, url_prefix="/api/v1", abp_tags=tag("recommendations"))


class RecommendQuery(Input):
    limit: int = Field(recommend.DEFAULT_LIMIT, ge=1, le=50)


class ProductList(BaseModel):
    data: list[ProductOut]


def _listed(products) -> dict:
    return {"data": [ProductOut.model_validate(p).model_dump(mode="json") for p in products]}


@bp.get("/products/<id>/recommendations", responses={200: ProductList, **errors(404)})
@api_call
def product_recommendations(path: IdPath, query: RecommendQuery):
    """Buyers of this product also bought (then popular products of its kind); with a token, nothing
    the caller owns. May lag purchases by up to a minute."""
    session = request_session()
    viewer = optional_user()
    product = get_visible_product(session, path.id, viewer)
    return _listed(recommend.similar_products(session, product, viewer_id=viewer.id if viewer else None,
                                              limit=query.limit)), 200


@bp.get("/me/recommendations", responses={200: ProductList, **errors(401)}, security=BEARER)
@api_call
def my_recommendations(query: RecommendQuery):
    """For you: products like those you hold, never one you own; popular ones of every kind to start."""
    return _listed(recommend.for_buyer(request_session(), current_user().id, limit=query.limit)), 200
