"""Fault: a notification flood against `knowpay serve` on PostgreSQL. The same signed notification
1,000 times over 20 connections captures once; 50 payments notified 20 times each, interleaved, are
each captured once. (bench/notifications.py runs the bigger version and prints rates.)"""

from __future__ import annotations

import random
import threading

import psycopg
import pytest
import requests

from bench.checkout import signed_notification
from bench.stack import (
    Stack,
    drop_postgres_database,
    new_postgres_database,
    postgres_missing,
    start_payment,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

CONNECTIONS = 20



@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    reason = postgres_missing()
    if reason:
        pytest.skip(reason)
    database = new_postgres_database("knowpay_fault_flood")
    # Two web processes, so repeats of one notification race each other across processes too.
    running = Stack(tmp_path_factory.mktemp("flood"), database, buyers=CONNECTIONS)
    try:
        yield running.start(worker=False), database
    finally:
        running.close()
        drop_postgres_database(database)


def _send_over_connections(base: str, notifications: list[tuple[bytes, dict]]) -> list[str]:
    """POST each notification once, spread over CONNECTIONS keep-alive connections; the answers."""
    answers: list[str] = []
    lock = threading.Lock()

    def connection(share: list[tuple[bytes, dict]]) -> None:
        http = requests.Session()
        mine = [
            http.post(f"{base}/notify/sandbox", data=body, headers=headers, timeout=60).text
            for body, headers in share
        ]
        with lock:
            answers.extend(mine)

    threads = [
        threading.Thread(target=connection, args=(notifications[i::CONNECTIONS],)) for i in range(CONNECTIONS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def _counts(database: str, payment_ids: list[str]) -> dict[str, int]:
    """What the notifications did to these payments, counted in PostgreSQL."""
    with psycopg.connect(database) as conn:

        def count(sql: str) -> int:
            return conn.execute(sql, {"ids": payment_ids}).fetchone()[0]

        return {
            "captures": count(
                "SELECT count(*) FROM journal_transactions t JOIN payments p "
                "ON t.idempotency_key = 'payment:' || p.id || ':captured' WHERE p.id = ANY(%(ids)s)"
            ),
            "succeeded": count(
                "SELECT count(*) FROM payments WHERE status = 'succeeded' AND id = ANY(%(ids)s)"
            ),
            "events": count(
                "SELECT count(*) FROM outbox_events WHERE type = 'payment.succeeded' "
                "AND object_id = ANY(%(ids)s)"
            ),
            "paid": count(
                "SELECT count(*) FROM orders o JOIN payments p ON p.order_id = o.id "
                "WHERE o.status = 'paid' AND p.id = ANY(%(ids)s)"
            ),
            "access": count(
                "SELECT count(*) FROM entitlements e JOIN payments p ON p.order_id = e.order_id "
                "WHERE p.id = ANY(%(ids)s)"
            ),
            "stored": count("SELECT count(*) FROM channel_notifications WHERE payment_id = ANY(%(ids)s)"),
        }


def test_the_same_notification_a_thousand_times_captures_once(stack):
    stack, database = stack
    payment = start_payment(requests.Session(), stack.base, stack.buyers[0], stack.product_id)
    one = signed_notification(payment)
    answers = _send_over_connections(stack.base, [one] * 1000)
    assert answers == ["success"] * 1000
    counts = _counts(database, [payment["id"]])
    assert counts["stored"] >= 1
    del counts["stored"]
    assert counts == {"captures": 1, "succeeded": 1, "events": 1, "paid": 1, "access": 1}


def test_fifty_payments_notified_twenty_times_each_capture_once_each(stack):
    stack, database = stack
    http = requests.Session()
    payments = [
        start_payment(http, stack.base, stack.buyers[i % CONNECTIONS], stack.product_id) for i in range(50)
    ]
    flood = [
        signed_notification(p) for p in payments for _ in range(20)
    ]  # each repeat with its own notify_id
    random.Random(11).shuffle(flood)
    answers = _send_over_connections(stack.base, flood)
    assert answers == ["success"] * len(flood)
    counts = _counts(database, [p["id"] for p in payments])
    assert counts["stored"] == len(flood)  # every notification stored raw before it is processed
    del counts["stored"]
    assert counts == {"captures": 50, "succeeded": 50, "events": 50, "paid": 50, "access": 50}
    verified = stack.verify()
    assert verified.returncode == 0, verified.stdout + verified.stderr
