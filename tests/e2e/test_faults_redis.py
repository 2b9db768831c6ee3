"""Fault: Redis stops while the platform runs (real processes on PostgreSQL and a private Redis).

As docs/operations.md says: payments go on (risk counters move to the database, rate limits to each
web process's memory, so a limit still holds), the queue takes no work but nothing is lost (events
wait in PostgreSQL and go out once Redis is back), and nothing can pay an order twice."""

from __future__ import annotations

import threading
import time
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
    notify,
    purchase,
    servers_missing,
    start_payment,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ORDERS_PER_MINUTE = 12
# A request may wait for one Redis connection attempt (2 s) but no more than a few.
REDIS_DOWN_BUDGET_SECONDS = 8



class Endpoint(BaseHTTPRequestHandler):
    seen: list[bytes] = []

    def do_POST(self):  # noqa: N802 - the stdlib's name
        self.seen.append(self.rfile.read(int(self.headers["Content-Length"])))
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
    database = new_postgres_database("knowpay_fault_redis")
    # One web process, so the in-memory fallback limit is exactly the configured one.
    running = Stack(
        tmp_path,
        database,
        redis_url=redis.url,
        buyers=3,
        web_workers=1,
        KNOWPAY_RATE_LIMIT_ORDERS=f"{ORDERS_PER_MINUTE}/minute",
    )
    try:
        yield running.start(), redis, database
    finally:
        running.close()
        redis.stop()
        drop_postgres_database(database)


def test_with_redis_down_payments_go_on_limits_hold_and_events_wait(stack):
    stack, redis, database = stack
    Endpoint.seen = []
    receiver = ThreadingHTTPServer(("127.0.0.1", free_port()), Endpoint)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    http, base = requests.Session(), stack.base
    first, second, third = stack.buyers
    made = http.post(
        f"{base}/api/v1/webhook-endpoints",
        headers=bearer(stack.data["admin"]),
        timeout=10,
        json={"url": f"http://127.0.0.1:{receiver.server_port}/hooks", "events": ["order.paid"]},
    )
    assert made.status_code == 201, made.text
    purchase(http, base, first, stack.product_id)

    redis.stop()
    started = time.monotonic()
    payment = purchase(http, base, first, stack.product_id)  # order, risk-checked payment, capture
    assert time.monotonic() - started < REDIS_DOWN_BUDGET_SECONDS

    # Nothing pays twice: a repeated notification, a second payment on the paid order, a replayed request.
    assert notify(http, base, payment).text == "success"
    again = http.post(
        f"{base}/api/v1/orders/{payment['order_id']}/payments",
        headers=bearer(first),
        timeout=30,
        json={"channel": "sandbox"},
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "order_not_pending"
    pending = start_payment(http, base, second, stack.product_id)
    key = bearer(second)
    replies = [
        http.post(
            f"{base}/api/v1/orders/{pending['order_id']}/payments",
            headers=key,
            timeout=30,
            json={"channel": "sandbox"},
        )
        for _ in range(2)
    ]
    assert replies[1].headers.get("Idempotent-Replayed") == "true"
    assert replies[0].json()["id"] == replies[1].json()["id"]

    # The order limit still holds, counted in the web process's memory.
    answers = [
        http.post(
            f"{base}/api/v1/orders",
            headers=bearer(third),
            timeout=30,
            json={"items": [{"product_id": stack.product_id}]},
        ).status_code
        for _ in range(ORDERS_PER_MINUTE + 1)
    ]
    assert answers == [201] * ORDERS_PER_MINUTE + [429]

    with psycopg.connect(database) as conn:
        waiting = conn.execute(
            "SELECT count(*) FROM outbox_events WHERE type = 'order.paid' AND dispatched_at IS NULL"
        ).fetchone()[0]
    assert waiting >= 1  # the paid order's event waits in PostgreSQL, not in the queue

    redis.start()  # an empty Redis on the same port, as after a restart without persistence
    purchase(http, base, first, stack.product_id)  # its commit asks the worker for a delivery
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with psycopg.connect(database) as conn:
            left = conn.execute("SELECT count(*) FROM outbox_events WHERE dispatched_at IS NULL").fetchone()[
                0
            ]
            paid = conn.execute("SELECT count(*) FROM orders WHERE status = 'paid'").fetchone()[0]
        if left == 0 and len(Endpoint.seen) >= paid:
            break
        time.sleep(0.2)
    receiver.shutdown()
    assert left == 0 and len(Endpoint.seen) == paid == 3
    with psycopg.connect(database) as conn:
        captures = conn.execute(
            "SELECT count(*) FROM journal_transactions WHERE kind = 'capture'"
        ).fetchone()[0]
    assert captures == 3
    verified = stack.verify()
    assert verified.returncode == 0, verified.stdout + verified.stderr
