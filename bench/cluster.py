"""Checkout through the local cluster's nginx, killing one web node and one worker (kill -9) half-way.

Buyers behave as real clients do: a request that fails in transit is sent again with the same
Idempotency-Key, the gateway resends a notification until it is acknowledged, and a payment status
stream that drops reconnects (as EventSource does) until it sees the final status and closes.
Prints purchases/s before and after the kill, retries, and whether every purchase was captured
exactly once, every stream closed on `succeeded` and `knowpay verify` holds. It puts the cluster's
risk rules in shadow mode (a few bench buyers buying many times a minute would be blocked, rightly).

    deploy/local-cluster/run start
    .venv/bin/python bench/cluster.py [--seconds 30] [--buyers 16] [--stream-every 4]
    deploy/local-cluster/run start      # brings the killed node and worker back
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.checkout import signed_notification  # noqa: E402
from bench.stack import run_cli, seed, shadow_risk_rules  # noqa: E402

RETRYABLE = (502, 503, 504)
# A request cut off by the kill keeps its Idempotency-Key claimed (409 idempotency_key_in_use) until
# the claim goes stale after two minutes; a client that retries waits that long at worst.
GIVE_UP_SECONDS = 150


class Buyers:
    def __init__(self, base: str, product_id: str) -> None:
        self.base, self.product_id = base, product_id
        self.done: list[tuple[float, str, str]] = []  # (finished at, order id, payment id)
        self.retries: Counter[str] = Counter()  # why a request was sent again
        self.failures: list[str] = []
        self.streams: list[dict] = []
        self.lock = threading.Lock()

    def send(self, http: requests.Session, method: str, path: str, **kwargs) -> requests.Response:
        """One request, sent again (same headers, so the same Idempotency-Key) until a node answers it."""
        deadline = time.monotonic() + GIVE_UP_SECONDS
        while True:
            try:
                answer = http.request(method, self.base + path, timeout=30, **kwargs)
                busy = answer.status_code == 409 and "idempotency_key_in_use" in answer.text
                if answer.status_code not in RETRYABLE and not busy:
                    return answer
                reason = "409 idempotency_key_in_use" if busy else str(answer.status_code)
            except requests.RequestException as exc:
                reason = exc.__class__.__name__
            if time.monotonic() > deadline:
                raise RuntimeError(f"{method} {path}: no answer for {GIVE_UP_SECONDS} s (last: {reason})")
            with self.lock:
                self.retries[reason] += 1
            time.sleep(0.2)

    def follow(self, token: str, payment_id: str, record: dict) -> None:
        """Read the payment's status stream, reconnecting after a drop, until it closes on a final status."""
        deadline = time.monotonic() + GIVE_UP_SECONDS
        while time.monotonic() < deadline:
            try:
                with requests.get(
                    f"{self.base}/api/v1/payments/{payment_id}/stream",
                    stream=True,
                    timeout=30,
                    headers={"Authorization": f"Bearer {token}"},
                ) as stream:
                    for line in stream.iter_lines(decode_unicode=True):
                        if line and line.startswith("data: "):
                            record["statuses"].append(json.loads(line[6:])["status"])
                if record["statuses"] and record["statuses"][-1] in (
                    "succeeded",
                    "failed",
                    "cancelled",
                    "expired",
                ):
                    record["closed"] = True
                    return
            except requests.RequestException:
                pass
            record["reconnects"] += 1
            time.sleep(0.2)

    def buy(self, http: requests.Session, token: str, watch: bool) -> None:
        auth = {"Authorization": f"Bearer {token}"}
        order = self.send(
            http,
            "POST",
            "/api/v1/orders",
            json={"items": [{"product_id": self.product_id}]},
            headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
        )
        if order.status_code != 201:
            raise RuntimeError(f"order {order.status_code} {order.text[:200]}")
        payment = self.send(
            http,
            "POST",
            f"/api/v1/orders/{order.json()['id']}/payments",
            json={"channel": "sandbox"},
            headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
        )
        if payment.status_code != 201:
            raise RuntimeError(f"payment {payment.status_code} {payment.text[:200]}")
        watcher = None
        if watch:
            record = {"payment_id": payment.json()["id"], "statuses": [], "closed": False, "reconnects": 0}
            watcher = threading.Thread(target=self.follow, args=(token, record["payment_id"], record))
            watcher.start()
            with self.lock:
                self.streams.append(record)
        body, headers = signed_notification(payment.json())
        ack = self.send(http, "POST", "/notify/sandbox", data=body, headers=headers)
        while ack.text != "success":  # the gateway resends until acknowledged
            time.sleep(0.2)
            ack = self.send(http, "POST", "/notify/sandbox", data=body, headers=headers)
        if watcher:
            watcher.join()
        with self.lock:
            self.done.append((time.monotonic(), order.json()["id"], payment.json()["id"]))

    def run(self, tokens: list[str], seconds: float, stream_every: int) -> None:
        deadline = time.monotonic() + seconds

        def buyer(index: int, token: str) -> None:
            http, n = requests.Session(), 0
            while time.monotonic() < deadline:
                n += 1
                try:
                    self.buy(http, token, watch=stream_every > 0 and (index + n) % stream_every == 0)
                except Exception as exc:  # a bench reports failures, it does not stop on them
                    with self.lock:
                        self.failures.append(str(exc))

        threads = [threading.Thread(target=buyer, args=(i, t)) for i, t in enumerate(tokens)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def kill_group(folder: Path, name: str) -> int:
    pid = int((folder / f"{name}.pid").read_text())
    os.killpg(pid, signal.SIGKILL)  # the cluster starts each process in its own session
    return pid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--buyers", type=int, default=16)
    parser.add_argument(
        "--stream-every", type=int, default=4, help="watch the status stream of every n-th purchase"
    )
    parser.add_argument("--no-kill", action="store_true", help="only measure checkout through nginx")
    args = parser.parse_args()

    folder = Path(os.environ.get("KNOWPAY_CLUSTER_DIR", "/tmp/knowpay-cluster"))
    env = dict(line.split("=", 1) for line in (folder / "env").read_text().splitlines() if "=" in line)
    data = seed(env, args.buyers, tag=uuid.uuid4().hex[:8])
    base = env["KNOWPAY_BASE_URL"]
    shadow_risk_rules(requests.Session(), base, data["admin"])
    buyers = Buyers(base, data["product_id"])
    print(
        f"cluster {base} (folder {folder}); {args.buyers} buyers for {args.seconds:.0f} s; "
        f"a status stream on every {args.stream_every}th purchase"
    )

    started = time.monotonic()
    killed_at = started + args.seconds / 2

    def killer() -> None:
        time.sleep(args.seconds / 2)
        print(
            f"kill -9 web1 (pid {kill_group(folder, 'web1')}) "
            f"and worker1 (pid {kill_group(folder, 'worker1')})"
        )

    if not args.no_kill:
        threading.Thread(target=killer, daemon=True).start()
    buyers.run(data["buyers"], args.seconds, args.stream_every)

    before = [d for d in buyers.done if d[0] < killed_at]
    after = [d for d in buyers.done if d[0] >= killed_at]
    half = args.seconds / 2
    print(
        f"purchases/s through nginx   before the kill {len(before) / half:7.1f}   "
        f"after {len(after) / half:7.1f}"
        if not args.no_kill
        else f"purchases/s through nginx   {len(buyers.done) / args.seconds:7.1f}"
    )
    print(
        f"requests sent again: {sum(buyers.retries.values())} {dict(buyers.retries)}; "
        f"purchases failed: {len(buyers.failures)}"
    )
    if buyers.failures:
        print("  first failure:", buyers.failures[0][:300])

    database = env["KNOWPAY_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    order_ids = [d[1] for d in buyers.done]
    with psycopg.connect(database) as conn:
        unpaid = conn.execute(
            "SELECT count(*) FROM orders WHERE id = ANY(%s) AND status <> 'paid'", (order_ids,)
        ).fetchone()[0]
        doubled = conn.execute(
            "SELECT count(*) FROM (SELECT order_id FROM payments "
            "WHERE order_id = ANY(%s) AND status = 'succeeded' "
            "GROUP BY order_id HAVING count(*) > 1) AS twice",
            (order_ids,),
        ).fetchone()[0]
        captures = conn.execute(
            "SELECT count(*) FROM journal_transactions t JOIN payments p ON t.idempotency_key = "
            "'payment:' || p.id || ':captured' WHERE p.order_id = ANY(%s)",
            (order_ids,),
        ).fetchone()[0]
    print(
        f"purchases completed {len(order_ids)}: not paid {unpaid}, paid twice {doubled}, captures {captures}"
    )
    closed = sum(1 for s in buyers.streams if s["closed"] and s["statuses"][-1] == "succeeded")
    reconnects = sum(s["reconnects"] for s in buyers.streams)
    print(
        f"status streams closed on 'succeeded': {closed} of {len(buyers.streams)} ({reconnects} reconnects)"
    )
    verified = run_cli(env, "verify", check=False)
    print(
        "knowpay verify:",
        verified.stdout.strip().splitlines()[-1]
        if verified.returncode == 0
        else "FAILED\n" + verified.stderr,
    )


if __name__ == "__main__":
    main()
