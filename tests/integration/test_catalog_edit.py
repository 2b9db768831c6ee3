"""Editing a product in the service: only what changed is written, and a product published between
reading it and saving the edit keeps its terms (compare-and-set on the row, not check-then-write)."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from knowpay.accounts.models import User
from knowpay.catalog import service as catalog
from knowpay.catalog.models import Product
from knowpay.domain.errors import Conflict
from knowpay.domain.states import ProductStatus


@pytest.fixture
def draft_id(ctx, creator) -> str:
    with ctx.db.transaction() as session:
        owner = session.get(User, creator.id)
        return catalog.create_product(session, creator=owner, title="写作课", kind="course", amount=9900,
                                      currency="cny", refund_window_days=7, clock=ctx.clock).id


def _publish_behind_its_back(session, product_id: str) -> None:
    """Another writer publishes the row; the editor's loaded object still says draft."""
    session.execute(update(Product).where(Product.id == product_id).values(status=ProductStatus.PUBLISHED)
                    .execution_options(synchronize_session=False))


def test_a_product_published_meanwhile_refuses_a_new_kind(ctx, draft_id):
    with ctx.db.transaction() as session:
        product = session.get(Product, draft_id)
        assert product.status == ProductStatus.DRAFT  # what the editor saw
        _publish_behind_its_back(session, draft_id)
        with pytest.raises(Conflict) as refused:
            catalog.update_product(session, product, kind="ebook", clock=ctx.clock)
    assert (refused.value.code, refused.value.param) == ("product_terms_fixed", "kind")
    with ctx.db.transaction(write=False) as session:
        assert session.get(Product, draft_id).kind == "course"


def test_a_product_published_meanwhile_refuses_a_shorter_refund_window(ctx, draft_id):
    with ctx.db.transaction() as session:
        product = session.get(Product, draft_id)
        _publish_behind_its_back(session, draft_id)
        with pytest.raises(Conflict) as refused:
            catalog.update_product(session, product, refund_window_days=1, clock=ctx.clock)
    assert refused.value.code == "refund_window_shortened"


def test_an_edit_that_changes_nothing_writes_nothing(ctx, draft_id):
    with ctx.db.transaction() as session:
        product = session.get(Product, draft_id)
        before = product.updated_at
        same = catalog.update_product(session, product, title=" 写作课 ", amount=9900, kind="course",
                                      clock=ctx.clock)
        assert same.updated_at == before


def test_a_published_coin_pack_keeps_its_coins_but_may_change_its_price(ctx, creator):
    with ctx.db.transaction() as session:
        owner = session.get(User, creator.id)
        pack = catalog.create_product(session, creator=owner, title="100 币", kind="coin_pack", amount=1000,
                                      currency="cny", coins=100, clock=ctx.clock)
        catalog.change_status(session, pack, ProductStatus.PUBLISHED, clock=ctx.clock)
        with pytest.raises(Conflict):
            catalog.update_product(session, pack, coins=200, clock=ctx.clock)
        cheaper = catalog.update_product(session, pack, amount=800, clock=ctx.clock)
        assert (cheaper.amount, cheaper.coins) == (800, 100)
