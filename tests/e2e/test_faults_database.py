"""Fault: the database goes away while purchases are flowing, as in a PostgreSQL restart (open
connections dropped, new ones refused), then comes back. The web answers 503 with the error JSON
quickly (never a 500, never a hang), writes nothing by halves, and recovers by itself.

The processes reach PostgreSQL through a TCP proxy the test owns, so the machine's shared server is
never stopped."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
import requests

from bench.stack import (
    UNLIMITED,
    Stack,
    TcpProxy,
    bearer,
    drop_postgres_database,
    new_postgres_database,
    notify,
    postgres_missing,
    shadow_risk_rules,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

OUTAGE_SECONDS = 4
# Longest a request may take while the database is away: the pool's wait plus a connection attempt.
NO_HANG_SECONDS = 12



@pytest.fixture
def proxied_stack(tmp_path):
    reason = postgres_missing()
    if reason:
        pytest.skip(reason)
    direct = new_postgres_database("knowpay_fault_db")
    host_port = direct.split("@", 1)[1].split("/", 1)[0]
    proxy = TcpProxy(host_port.split(":")[0], int(host_port.split(":")[1])).start()
    through_proxy = direct.replace(host_port, f"127.0.0.1:{proxy.port}")
    running = Stack(tmp_path, through_proxy, seed_url=direct, buyers=4, web_workers=1, **UNLIMITED)
    try:
        running.start(worker=False)
        # Buyers here buy as fast as the server lets them; velocity rules would block them, rightly.
        shadow_risk_rules(requests.Session(), running.base, running.data["admin"])
        yield running, proxy, direct
    finally:
        running.close()
        proxy.close()
        drop_postgres_database(direct)


class Traffic:
    """Buyers purchasing in a loop; every answer is kept with how long it took."""

    def __init__(self, base: str, tokens: list[str], product_id: str) -> None:
        self.base, self.tokens, self.product_id = base, tokens, product_id
        self.answers: list[
            tuple[float, str, int, dict | str, float]
        ] = []  # (at, kind, status, body, seconds)
        self.unpaid: list[dict] = []  # payments whose notification was not acknowledged
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def _keep(self, kind: str, started: float, response: requests.Response) -> None:
        try:
            body: dict | str = response.json()
        except ValueError:
            body = response.text
        with self.lock:
            self.answers.append((started, kind, response.status_code, body, time.monotonic() - started))

    def buyer(self, token: str) -> None:
        http = requests.Session()
        while not self.stop.is_set():
            started = time.monotonic()
            order = http.post(
                f"{self.base}/api/v1/orders",
                headers=bearer(token),
                timeout=60,
                json={"items": [{"product_id": self.product_id}]},
            )
            self._keep("order", started, order)
            if order.status_code != 201:
                time.sleep(0.2)
                continue
            started = time.monotonic()
            payment = http.post(
                f"{self.base}/api/v1/orders/{order.json()['id']}/payments",
                headers=bearer(token),
                timeout=60,
                json={"channel": "sandbox"},
            )
            self._keep("payment", started, payment)
            if payment.status_code != 201:
                continue
            started = time.monotonic()
            ack = notify(http, self.base, payment.json(), timeout=60)
            self._keep("notify", started, ack)
            if ack.text != "success":
                with self.lock:
                    self.unpaid.append(payment.json())

    def run(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.buyer, args=(t,)) for t in self.tokens]
        for t in threads:
            t.start()
        return threads


def test_a_database_restart_answers_503_and_recovers_by_itself(proxied_stack):
    stack, proxy, direct = proxied_stack
    traffic = Traffic(stack.base, stack.buyers, stack.product_id)
    threads = traffic.run()
    try:
        time.sleep(2)
        down_at = time.monotonic()
        proxy.cut()
        time.sleep(0.5)
        ready = requests.get(f"{stack.base}/readyz", timeout=NO_HANG_SECONDS)
        time.sleep(OUTAGE_SECONDS - 0.5)
        proxy.restore()
        up_at = time.monotonic()
        time.sleep(4)
    finally:
        traffic.stop.set()
        for t in threads:
            t.join(timeout=90)
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "database_unavailable"

    during = [a for a in traffic.answers if down_at <= a[0] < up_at]
    after = [a for a in traffic.answers if a[0] >= up_at + 2]
    statuses = {a[2] for a in traffic.answers}
    assert statuses <= {200, 201, 503}, [a for a in traffic.answers if a[2] not in (200, 201, 503)][:3]
    refused = [a for a in traffic.answers if a[2] == 503]
    assert refused, "no request met the outage"
    for _at, kind, _status, body, _took in refused:
        if kind == "notify":  # the gateway hears a failure in its own protocol, and sends again later
            assert body == "failure", body
        else:
            assert body["error"]["type"] == "internal", body
            assert body["error"]["code"] == "database_unavailable", body
    assert max(a[4] for a in traffic.answers) < NO_HANG_SECONDS
    assert any(a[2] == 503 for a in during)
    assert [a for a in after if a[2] in (200, 201)], "traffic did not recover after the database came back"
    assert {a[2] for a in after} <= {200, 201}

    # The gateway retries what it was refused; each payment is then captured exactly once.
    http = requests.Session()
    for payment in traffic.unpaid:
        assert notify(http, stack.base, payment).text == "success"
    with psycopg.connect(direct) as conn:
        orders = dict(conn.execute("SELECT status, count(*) FROM orders GROUP BY status").fetchall())
        payments = dict(conn.execute("SELECT status, count(*) FROM payments GROUP BY status").fetchall())
        captures, captured_payments = conn.execute(
            "SELECT count(*), count(DISTINCT idempotency_key) FROM journal_transactions "
            "WHERE kind = 'capture'"
        ).fetchone()
    notified = sum(1 for a in traffic.answers if a[1] == "notify")
    assert payments.get("succeeded") == captures == captured_payments == orders.get("paid")
    assert captures >= notified - len(traffic.unpaid)
    assert set(payments) <= {"succeeded", "requires_action"}  # an order refused mid-checkout waits, unpaid
    verified = stack.verify()
    assert verified.returncode == 0, verified.stdout + verified.stderr
