"""The worker keeps recommendations within a minute of purchases (a chain of refreshes every half
minute), and `knowpay recommend evaluate` reports on the stored history."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from knowpay.cli import main
from knowpay.jobs import tasks as jobs
from knowpay.jobs.queue import make_huey
from knowpay.jobs.tasks import RECOMMEND_LINK, RECOMMEND_LINK_OVERDUE_SECONDS, register_tasks
from knowpay.recommend.models import RecommendItem
from tests.integration.test_recommend_api import make_product, sell
from tests.unit.test_recommend_evaluate import planted_history


@pytest.fixture
def huey(settings, ctx):
    """A queue with every task registered, its jobs running on the test's context."""
    queue = make_huey(settings)
    queue.flush()
    register_tasks(queue, lambda: ctx)
    return queue


def start_worker(huey) -> None:
    for hook in huey._startup.values():
        hook()


def queued(huey) -> list:
    """The tasks waiting in the queue, taken out (a delayed link waits there with its eta)."""
    tasks = []
    while (task := huey.dequeue()) is not None:
        tasks.append(task)
    return tasks


def test_a_starting_worker_starts_one_chain_that_refreshes_and_schedules_its_next_link(
        huey, ctx, creator, buyer):
    product = make_product(ctx, creator.id, "Course")
    sell(ctx, buyer.id, product)
    start_worker(huey)
    start_worker(huey)  # a second worker thread finds the chain running
    [link] = queued(huey)
    assert link.name == "refresh_recommendations" and link.eta is not None
    assert huey.execute(link, link.eta) == 1  # one buyer recounted
    with ctx.db.transaction(write=False) as session:
        assert session.scalars(select(RecommendItem.buyers)).all() == [1]
    [following] = queued(huey)
    assert following.eta >= huey._get_timestamp() + timedelta(seconds=jobs.RECOMMEND_EVERY_SECONDS - 1)


def test_a_link_of_an_older_chain_ends_it_and_an_overdue_chain_is_restarted(huey, ctx):
    start_worker(huey)
    [old] = queued(huey)
    huey.put(RECOMMEND_LINK, ("some-newer-link", time.time() + 30))
    assert huey.execute(old, old.eta) == 0 and queued(huey) == []
    start_worker(huey)
    assert queued(huey) == []  # the newer chain is not overdue
    huey.put(RECOMMEND_LINK, ("lost-link", time.time() - RECOMMEND_LINK_OVERDUE_SECONDS - 1))
    [check] = [t for t in huey.read_periodic(datetime(2026, 1, 1, 0, 29)) if t.name == "check_recommendations_chain"]
    huey.execute(check)
    assert [t.name for t in queued(huey)] == ["refresh_recommendations"]


def test_recommend_evaluate_prints_hit_rate_and_coverage_beside_popularity(settings, ctx, make_user, creator):
    history = planted_history(buyers=60, clusters=4, size=5, seed=3)
    products = {pid: make_product(ctx, creator.id, pid, kind) for pid, kind in
                sorted({(p.product_id, p.kind) for p in history})}
    buyers = {bid: make_user("buyer").id for bid in sorted({p.buyer_id for p in history})}
    for purchase in sorted(history, key=lambda p: p.at):
        ctx.clock = FrozenAt(purchase.at)
        sell(ctx, buyers[purchase.buyer_id], products[purchase.product_id])
    env = {"KNOWPAY_DATABASE_URL": settings.database_url, "KNOWPAY_INSTANCE_PATH": str(settings.instance_path)}
    result = CliRunner().invoke(main, ["recommend", "evaluate", "--k", "5"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = {m.group(1): (float(m.group(2)), float(m.group(3)))
            for m in re.finditer(r"^(co-purchase|popularity)\s+([\d.]+)\s+([\d.]+)$", result.output, re.MULTILINE)}
    assert set(rows) == {"co-purchase", "popularity"}, result.output
    assert rows["co-purchase"][0] > rows["popularity"][0]
    assert "hit rate@5" in result.output


class FrozenAt:
    def __init__(self, at) -> None:
        self.at = at

    def now(self):
        return self.at
