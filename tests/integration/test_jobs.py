"""The job queue: SQLite by default, Redis when configured; the web kicks the outbox, a worker delivers it."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import redis
from huey import RedisHuey, SqliteHuey
from sqlalchemy import select

from knowpay.config import load_settings
from knowpay.context import build_context
from knowpay.domain.clock import FixedClock
from knowpay.jobs import tasks as jobs
from knowpay.jobs.queue import make_huey
from knowpay.jobs.tasks import enqueue_outbox_kick, register_tasks
from tests.integration.test_outbox_webhooks import Receiver, add_endpoint, add_event, deliveries

REDIS_TEST_URL = os.environ.get("KNOWPAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
ROOT = Path(__file__).resolve().parents[2]


def _redis_reason() -> str | None:
    try:
        redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=1).ping()
        return None
    except redis.RedisError as exc:
        return (f"Redis at {REDIS_TEST_URL} does not answer ({exc.__class__.__name__}); "
                "set KNOWPAY_TEST_REDIS_URL")


REDIS_SKIP_REASON = _redis_reason()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.skipif(
    REDIS_SKIP_REASON is not None, reason=REDIS_SKIP_REASON or ""))])
def redis_url(request):
    """None for the embedded SQLite queue, or a Redis database emptied before and after the test."""
    if request.param == "sqlite":
        yield None
        return
    broker = redis.Redis.from_url(REDIS_TEST_URL)
    broker.flushdb()
    yield REDIS_TEST_URL
    broker.flushdb()
    broker.close()


@pytest.fixture
def queue_settings(settings, redis_url):
    """The test's settings with the job queue on the SQLite file (default) or on Redis."""
    return settings.with_overrides(redis_url=redis_url)


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def ctx(settings, db, clock):
    return build_context(settings, db=db, clock=clock)


def test_the_queue_is_a_sqlite_file_in_the_instance_folder_by_default(tmp_path):
    huey = make_huey(load_settings({"KNOWPAY_INSTANCE_PATH": str(tmp_path / "instance")}))
    assert isinstance(huey, SqliteHuey)
    assert huey.name == "knowpay"
    assert Path(huey.storage.filename) == tmp_path / "instance" / "jobs.sqlite3"


def test_the_queue_is_redis_when_a_redis_url_is_set(tmp_path):
    huey = make_huey(load_settings({"KNOWPAY_INSTANCE_PATH": str(tmp_path),
                                    "KNOWPAY_REDIS_URL": "redis://queue.internal:6380/3"}))
    assert isinstance(huey, RedisHuey)
    assert huey.name == "knowpay"
    assert {k: huey.storage.pool.connection_kwargs[k] for k in ("host", "port", "db")} == {
        "host": "queue.internal", "port": 6380, "db": 3}
    assert not (tmp_path / "jobs.sqlite3").exists()


def test_a_task_round_trips_through_the_queue(tmp_path, redis_url):
    settings = load_settings({"KNOWPAY_INSTANCE_PATH": str(tmp_path)}).with_overrides(redis_url=redis_url)
    huey = make_huey(settings)

    @huey.task()
    def add(a: int, b: int) -> int:
        return a + b

    result = add(2, 3)
    assert huey.pending_count() == 1
    task = huey.dequeue()
    huey.execute(task)
    assert result.get() == 5
    assert huey.pending_count() == 0


def test_a_kick_from_the_web_is_delivered_by_a_worker(queue_settings, ctx, receiver):
    endpoint = add_endpoint(ctx, receiver.url, ["order.paid"])
    add_event(ctx)
    assert enqueue_outbox_kick(queue_settings) is True

    worker = make_huey(queue_settings)  # another process's view of the same queue
    register_tasks(worker, lambda: ctx)
    worker.execute(worker.dequeue())

    (request,) = receiver.received
    assert request.event["type"] == "order.paid"
    assert [(d.endpoint_id, d.status) for d in deliveries(ctx)] == [(endpoint.id, "succeeded")]


def test_kicks_wait_in_the_queue_one_at_a_time(queue_settings, ctx):
    producer = make_huey(queue_settings)
    for _ in range(3):
        assert enqueue_outbox_kick(queue_settings) is True
    assert producer.pending_count() == 1

    worker = make_huey(queue_settings)
    register_tasks(worker, lambda: ctx)
    worker.execute(worker.dequeue())
    assert enqueue_outbox_kick(queue_settings) is True  # a new event after that kick started needs a new one
    assert producer.pending_count() == 1


def test_a_lost_kick_does_not_silence_later_ones(tmp_path, monkeypatch):
    settings = load_settings({"KNOWPAY_INSTANCE_PATH": str(tmp_path)})
    producer = make_huey(settings)
    assert enqueue_outbox_kick(settings) is True
    assert producer.storage.dequeue() is not None  # taken by a worker that died before running it
    assert enqueue_outbox_kick(settings) is True
    assert producer.pending_count() == 0  # the flag still stands for the lost kick...

    monkeypatch.setattr(jobs, "KICK_FLAG_STALE_SECONDS", -1)
    assert enqueue_outbox_kick(settings) is True
    assert producer.pending_count() == 1  # ...until it is old enough to be presumed lost


def test_an_unreachable_queue_is_tolerated(tmp_path, caplog):
    settings = load_settings({"KNOWPAY_INSTANCE_PATH": str(tmp_path),
                              "KNOWPAY_REDIS_URL": "redis://127.0.0.1:1/0"})
    with caplog.at_level(logging.WARNING, logger="knowpay.jobs.tasks"):
        assert enqueue_outbox_kick(settings) is False
    assert "periodic sweep" in caplog.text


def test_every_sweep_runs_every_minute(tmp_path):
    huey = make_huey(load_settings({"KNOWPAY_INSTANCE_PATH": str(tmp_path)}))
    register_tasks(huey, lambda: pytest.fail("no job runs while tasks are only registered"))
    for moment in (datetime(2026, 1, 1, 0, 0), datetime(2026, 6, 30, 13, 37)):
        assert sorted(t.name for t in huey.read_periodic(moment)) == [
            "expire_orders", "load_analytics", "process_refunds", "query_pending_payments", "sweep_outbox"]


def test_old_sign_in_failure_counts_are_pruned_daily(settings, ctx):
    from knowpay.security.lockout import record_failure, sign_in_keys
    from knowpay.security.models import SignInThrottle

    huey = make_huey(settings)
    registered = register_tasks(huey, lambda: ctx)
    assert "prune_sign_in_throttles" in {t.name for t in huey.read_periodic(datetime(2026, 1, 1, 4, 11))}
    policy = ctx.settings.lockout
    with ctx.db.transaction() as session:
        record_failure(session, sign_in_keys(policy, email="ann@example.com", address="203.0.113.9"), policy=policy,
                       clock=ctx.clock)
    assert huey.execute(registered.prune_sign_in_throttles.s()) == 0  # still within its window
    ctx.clock = FixedClock(ctx.clock.now() + timedelta(seconds=policy.window_seconds + policy.max_seconds + 1))
    assert huey.execute(registered.prune_sign_in_throttles.s()) == 2
    with ctx.db.transaction(write=False) as session:
        assert session.scalars(select(SignInThrottle)).all() == []


def test_a_worker_builds_its_context_once(settings, ctx, receiver):
    built = []

    def context_factory():
        built.append(ctx)
        return ctx

    huey = make_huey(settings)
    registered = register_tasks(huey, context_factory)
    add_endpoint(ctx, receiver.url, ["order.paid"])
    add_event(ctx)
    huey.execute(registered.sweep_outbox.s())
    huey.execute(registered.kick_outbox.s())
    huey.execute(registered.sweep_outbox.s())
    assert len(built) == 1
    assert len(receiver.received) == 1


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_run_worker_delivers_on_its_schedule_and_stops_on_a_signal(sqlite_url, tmp_path, receiver, clock,
                                                                    stop_signal):
    settings = load_settings({"KNOWPAY_DATABASE_URL": sqlite_url, "KNOWPAY_INSTANCE_PATH": str(tmp_path)})
    ctx = build_context(settings, clock=clock)
    add_endpoint(ctx, receiver.url, ["order.paid"])
    add_event(ctx)
    ctx.db.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KNOWPAY_")}
    env.update(KNOWPAY_DATABASE_URL=sqlite_url, KNOWPAY_INSTANCE_PATH=str(tmp_path))
    worker = subprocess.Popen(
        [sys.executable, "-c", "from knowpay.config import load_settings\n"
                               "from knowpay.jobs.worker import run_worker\n"
                               "run_worker(load_settings(), workers=2)"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # No kick was enqueued: the sweep the worker schedules at start finds the event by itself.
        assert len(receiver.wait_for(1)) == 1
        worker.send_signal(stop_signal)
        output, _ = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, output
    assert "whsec_" not in output
    assert receiver.received[0].event["type"] == "order.paid"
