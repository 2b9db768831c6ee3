"""Fault: `kill -9` of the worker while it delivers webhooks and pushes refunds to the channel, with
purchases still flowing (real processes on PostgreSQL and a private Redis). After a restart every
outbox event reaches the endpoint at least once, every refund happens once, and `knowpay verify` is clean."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest
import requests

from bench.harness import free_port
from bench.stack import (
    RedisServer,
    Stack,
    bearer,
    drop_postgres_database,
    new_postgres_database,
    pay_on_gateway,
    purchase,
    servers_missing,
)
from knowpay.config import load_settings
from knowpay.jobs.queue import make_huey
from knowpay.jobs.tasks import register_tasks
from knowpay.outbox.service import EVENT_TYPES

pytestmark = [pytest.mark.slow, pytest.mark.postgres]



class SlowEndpoint(BaseHTTPRequestHandler):
    """A webhook consumer that takes 0.2 s per event, so the worker is caught with deliveries in flight."""

    seen: list[str] = []
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 - the stdlib's name
        import json

        event = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(0.2)
        with self.lock:
            self.seen.append(event["id"])
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def stack(tmp_path):
    reason = servers_missing()
    if reason:
        pytest.skip(reason)
    redis = RedisServer(tmp_path).start()
    database = new_postgres_database("knowpay_fault_worker")
    running = Stack(tmp_path, database, redis_url=redis.url, buyers=6, web_workers=1, worker_threads=4)
    try:
        yield running.start()
    finally:
        running.close()
        redis.stop()
        drop_postgres_database(database)


def _wait(condition, timeout: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_worker_killed_mid_work_loses_and_doubles_nothing(stack):
    database = stack.env["KNOWPAY_DATABASE_URL"]
    endpoint_server = ThreadingHTTPServer(("127.0.0.1", free_port()), SlowEndpoint)
    SlowEndpoint.seen = []
    threading.Thread(target=endpoint_server.serve_forever, daemon=True).start()
    base, http = stack.base, requests.Session()
    made = http.post(
        f"{base}/api/v1/webhook-endpoints",
        headers=bearer(stack.data["admin"]),
        timeout=10,
        json={"url": f"http://127.0.0.1:{endpoint_server.server_port}/hooks", "events": sorted(EVENT_TYPES)},
    )
    assert made.status_code == 201, made.text

    # Purchases, then refunds asked for while the channel is down: they wait for the worker.
    paid = [
        (token, pay_on_gateway(http, base, token, stack.product_id))
        for token in stack.buyers
        for _ in range(3)
    ]
    stack.sandbox.stop()
    refunds = []
    for token, payment in paid[::2]:
        answer = http.post(
            f"{base}/api/v1/refunds",
            headers=bearer(token),
            timeout=30,
            json={"payment_id": payment["id"], "amount": 3300},
        )
        assert answer.status_code == 201 and answer.json()["status"] == "pending", answer.text
        refunds.append(answer.json()["id"])
    stack.sandbox.start(ready_url=f"http://127.0.0.1:{stack.sandbox_port}/healthz")

    # The worker's next sweeps, now rather than at the top of the minute.
    huey = make_huey(load_settings(stack.env))
    tasks = register_tasks(huey, lambda: (_ for _ in ()).throw(RuntimeError("this process only enqueues")))
    tasks.process_refunds()
    tasks.sweep_outbox()
    _wait(lambda: len(SlowEndpoint.seen) >= 8, 60, "the first deliveries")
    stack.worker.kill()
    delivered_before_kill = len(set(SlowEndpoint.seen))

    # Traffic goes on while no worker runs.
    paid += [(token, purchase(http, base, token, stack.product_id)) for token in stack.buyers[:2]]

    with psycopg.connect(database, autocommit=True) as conn:
        total = conn.execute(
            "SELECT count(*) FROM outbox_events WHERE type = ANY(%s)", (sorted(EVENT_TYPES),)
        ).fetchone()[0]
        assert delivered_before_kill < total, "the kill came after all the work: nothing was proved"
        # A lease taken by the dead worker lapses after five minutes; stand in for that wait.
        conn.execute(
            "UPDATE webhook_deliveries SET locked_until = %s WHERE status = 'pending' "
            "AND locked_until IS NOT NULL",
            (datetime(2000, 1, 1),),
        )

    stack.worker.start()
    tasks.process_refunds()
    tasks.sweep_outbox()

    def settled() -> bool:
        with psycopg.connect(database) as conn:
            pending = conn.execute(
                "SELECT (SELECT count(*) FROM refunds WHERE status = 'pending') + "
                "(SELECT count(*) FROM webhook_deliveries WHERE status <> 'succeeded') + "
                "(SELECT count(*) FROM outbox_events WHERE dispatched_at IS NULL)"
            ).fetchone()[0]
        if pending:
            # Events the worker itself writes (refund.succeeded) go out on its next sweep, at the top of
            # the minute; ask for that sweep now.
            tasks.sweep_outbox()
        return pending == 0

    _wait(settled, 90, "refunds and deliveries to finish after the restart", every=1.0)

    with psycopg.connect(database) as conn:
        events = {
            row[0]
            for row in conn.execute(
                "SELECT id FROM outbox_events WHERE type = ANY(%s)", (sorted(EVENT_TYPES),)
            )
        }
        per_event = conn.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM webhook_deliveries"
        ).fetchone()
        refund_rows = conn.execute(
            "SELECT r.status, (SELECT count(*) FROM journal_transactions t "
            "                  WHERE t.idempotency_key = 'refund:' || r.id || ':succeeded') FROM refunds r"
        ).fetchall()
        refunded = conn.execute("SELECT sum(amount_refunded) FROM payments").fetchone()[0]
        captures = conn.execute(
            "SELECT count(*) FROM journal_transactions WHERE kind = 'capture'"
        ).fetchone()[0]
    endpoint_server.shutdown()

    assert events <= set(SlowEndpoint.seen)  # every event delivered at least once
    assert per_event[0] == per_event[1] == len(events)  # one delivery record per event
    assert sorted(refund_rows) == [("succeeded", 1)] * len(refunds)  # each refund once in the ledger
    assert refunded == 3300 * len(refunds)  # ... and once on the payments
    assert captures == len(paid)
    verified = stack.verify()
    assert verified.returncode == 0, verified.stdout + verified.stderr
