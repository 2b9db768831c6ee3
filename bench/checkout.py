"""Checkout throughput against `knowpay serve`: order → sandbox payment → signed notification.

Prints purchases per second, p50/p99 latency per request kind and, measured in the same run on
the same PostgreSQL server, pgbench's TPC-B TPS (scale 10, 8 clients) and purchases/s ÷ TPS.
Then runs again with 200 payment status streams held open and prints both.

    .venv/bin/python bench/checkout.py [--seconds 20] [--buyers 16] [--workers 2] [--streams 200]
    .venv/bin/python bench/checkout.py --sqlite         # the embedded default instead of PostgreSQL
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import free_port, fresh_database, knowpay_process, pgbench_tps, summary  # noqa: E402

SECRET = "bench-sandbox-secret"
MERCHANT = "kp-bench-merchant"
# A bench buys far faster than a person; per-caller limits would measure the limiter, not checkout.
UNLIMITED = {"KNOWPAY_RATE_LIMIT_ORDERS": "1000000/minute", "KNOWPAY_RATE_LIMIT_PAYMENTS": "1000000/minute"}


def seed(env: dict[str, str], buyers: int) -> tuple[str, list[str]]:
    """A creator with a published course and `buyers` buyers with tokens, made through the services;
    every risk rule in shadow mode (a few buyers buying many times a second would be blocked, rightly)."""
    os.environ.update(env)
    from knowpay.accounts import service as accounts
    from knowpay.bootstrap import init_database
    from knowpay.catalog import service as catalog
    from knowpay.domain.states import ProductStatus
    from knowpay.risk.rules import registry
    from knowpay.risk.service import update_rule
    from knowpay.web import create_app

    settings = init_database()
    app = create_app(settings, config={"SECURITY_PASSWORD_HASH_PASSLIB_OPTIONS": {"argon2__rounds": 1,
                                                                                 "argon2__memory_cost": 1024}})
    ctx = app.extensions["knowpay"]
    tokens = []
    with app.app_context(), ctx.db.transaction() as session:
        creator = accounts.register_user(session, email="creator@bench.example.com", password="bench-password",
                                         username="bench_creator", roles=("creator",), clock=ctx.clock)
        product = catalog.create_product(session, creator=creator, title="Bench course", kind="course",
                                         amount=9900, currency="cny", clock=ctx.clock)
        catalog.change_status(session, product, ProductStatus.PUBLISHED, clock=ctx.clock)
        for i in range(buyers):
            user = accounts.register_user(session, email=f"buyer{i}@bench.example.com", password="bench-password",
                                          username=f"bench_buyer{i}", clock=ctx.clock)
            tokens.append(accounts.issue_token(session, user, clock=ctx.clock).token)
        product_id = product.id
    with app.app_context():
        for name in registry():
            update_rule(ctx, name, actor_id=None, shadow=True)
    ctx.db.dispose()
    return product_id, tokens


def signed_notification(payment: dict) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"notify_id": uuid.uuid4().hex, "type": "payment", "merchant_id": MERCHANT,
                       "out_trade_no": payment["id"], "trade_no": payment["channel_trade_no"], "status": "SUCCESS",
                       "amount": payment["amount"], "currency": payment["currency"],
                       "paid_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode()
    ts = str(int(time.time()))
    signature = hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "Sandbox-Merchant": MERCHANT, "Sandbox-Timestamp": ts,
                  "Sandbox-Signature": signature}


class Run:
    def __init__(self, base: str, product_id: str) -> None:
        self.base, self.product_id = base, product_id
        self.latency: dict[str, list[float]] = {"order": [], "payment": [], "notify": []}
        self.purchases = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def timed(self, kind: str, call):
        started = time.perf_counter()
        answer = call()
        with self.lock:
            self.latency[kind].append(time.perf_counter() - started)
        return answer

    def buy(self, http: requests.Session, token: str) -> None:
        auth = {"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex}
        order = self.timed("order", lambda: http.post(f"{self.base}/api/v1/orders", headers=auth, json={
            "items": [{"product_id": self.product_id}]}))
        if order.status_code != 201:
            raise RuntimeError(f"order {order.status_code} {order.text[:200]}")
        auth["Idempotency-Key"] = uuid.uuid4().hex
        payment = self.timed("payment", lambda: http.post(
            f"{self.base}/api/v1/orders/{order.json()['id']}/payments", headers=auth, json={"channel": "sandbox"}))
        if payment.status_code != 201:
            raise RuntimeError(f"payment {payment.status_code} {payment.text[:200]}")
        body, headers = signed_notification(payment.json())
        ack = self.timed("notify", lambda: http.post(f"{self.base}/notify/sandbox", data=body, headers=headers))
        if ack.text != "success":
            raise RuntimeError(f"notify {ack.status_code} {ack.text[:200]}")
        with self.lock:
            self.purchases += 1

    def run(self, tokens: list[str], seconds: float) -> float:
        deadline = time.monotonic() + seconds

        def buyer(token: str) -> None:
            http = requests.Session()
            while time.monotonic() < deadline:
                try:
                    self.buy(http, token)
                except Exception as exc:  # a bench reports failures, it does not stop on them
                    with self.lock:
                        self.errors.append(str(exc))

        started = time.monotonic()
        threads = [threading.Thread(target=buyer, args=(t,)) for t in tokens]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return self.purchases / (time.monotonic() - started)


def hold_streams(base: str, product_id: str, token: str, count: int, stop: threading.Event) -> list[threading.Thread]:
    """Open `count` status streams on pending payments and keep them open until `stop`."""
    http = requests.Session()
    auth = {"Authorization": f"Bearer {token}"}
    opened = threading.Semaphore(0)
    threads = []
    for _ in range(count):
        order = http.post(f"{base}/api/v1/orders", headers=auth, json={"items": [{"product_id": product_id}]}).json()
        payment = http.post(f"{base}/api/v1/orders/{order['id']}/payments", headers=auth,
                            json={"channel": "sandbox"}).json()

        def watch(pid: str = payment["id"]) -> None:
            with requests.get(f"{base}/api/v1/payments/{pid}/stream", headers=auth, stream=True, timeout=600) as r:
                opened.release()
                for _line in r.iter_lines():
                    if stop.is_set():
                        return

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        threads.append(thread)
    for _ in range(count):
        opened.acquire(timeout=30)
    return threads


def report(title: str, run: Run, rate: float, tps: float) -> None:
    print(f"\n== {title}")
    print(f"purchases/s        {rate:8.1f}   ({run.purchases} purchases, {len(run.errors)} errors)")
    for kind, values in run.latency.items():
        print(f"  {kind:8s} {summary(values)}")
    if tps:
        print(f"pgbench TPC-B TPS  {tps:8.1f}   ratio purchases/s ÷ TPS = {rate / tps:.3f}")
    if run.errors:
        print("  first error:", run.errors[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--buyers", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-class", default="gevent")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--sqlite", action="store_true", help="run on the embedded SQLite default")
    parser.add_argument("--no-pgbench", action="store_true")
    args = parser.parse_args()

    instance = Path(tempfile.mkdtemp(prefix="knowpay-bench-"))
    database = f"sqlite:///{instance / 'bench.sqlite3'}" if args.sqlite else fresh_database("knowpay_bench")
    web_port, sandbox_port = free_port(), free_port()
    env = {"KNOWPAY_DATABASE_URL": database, "KNOWPAY_INSTANCE_PATH": str(instance),
           "KNOWPAY_BASE_URL": f"http://127.0.0.1:{web_port}",
           "KNOWPAY_SANDBOX_URL": f"http://127.0.0.1:{sandbox_port}",
           "KNOWPAY_SANDBOX_SECRET": SECRET, "KNOWPAY_SANDBOX_MERCHANT_ID": MERCHANT, **UNLIMITED}
    product_id, tokens = seed(env, args.buyers + 1)
    base = f"http://127.0.0.1:{web_port}"
    print(f"database: {'SQLite' if args.sqlite else 'PostgreSQL'}; {args.workers} {args.worker_class} web workers; "
          f"{args.buyers} concurrent buyers; {args.seconds:.0f} s per run; instance {instance}")
    with knowpay_process(["sandbox", "--port", str(sandbox_port)], env,
                         ready_url=f"http://127.0.0.1:{sandbox_port}/healthz", log=instance / "sandbox.log"), \
            knowpay_process(["serve", "--port", str(web_port), "--workers", str(args.workers),
                             "--worker-class", args.worker_class, "--no-access-log"], env,
                            ready_url=f"{base}/healthz", log=instance / "serve.log"):
        Run(base, product_id).run(tokens[:2], 2)  # warm up connections and caches
        plain = Run(base, product_id)
        plain_rate = plain.run(tokens[: args.buyers], args.seconds)
        tps = 0.0 if (args.no_pgbench or args.sqlite) else pgbench_tps()
        report("checkout", plain, plain_rate, tps)
        if args.streams:
            stop = threading.Event()
            hold_streams(base, product_id, tokens[-1], args.streams, stop)
            streamed = Run(base, product_id)
            streamed_rate = streamed.run(tokens[: args.buyers], args.seconds)
            report(f"checkout with {args.streams} open status streams", streamed, streamed_rate, tps)
            stop.set()


if __name__ == "__main__":
    main()
