"""Real KnowPay processes for the fault tests and the multi-process benches: a private Redis, a TCP
proxy in front of PostgreSQL that can be cut like a restarting server, the sandbox + web + worker
processes, and the API calls of one purchase."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from bench.checkout import MERCHANT, SECRET, signed_notification
from bench.harness import PG_ADMIN, free_port, fresh_database, wait_http

ROOT = Path(__file__).resolve().parent.parent


def redis_server_missing() -> str | None:
    """Why a private Redis cannot be started here, or None."""
    return None if shutil.which("redis-server") else "redis-server is not installed"


def postgres_missing() -> str | None:
    """Why PostgreSQL cannot be used here, or None."""
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=2):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL at {PG_ADMIN} does not answer ({exc.__class__.__name__})"


def servers_missing() -> str | None:
    """Why the fault tests cannot run here (PostgreSQL, and redis-server for a private Redis), or None."""
    return postgres_missing() or redis_server_missing()


class Process:
    """One `knowpay ...` process in its own session, which a test can stop gently or kill -9."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log = args, env, log
        self.proc: subprocess.Popen | None = None

    def start(self, ready_url: str | None = None) -> Process:
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "knowpay", *self.args],
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if ready_url:
            wait_http(ready_url, timeout=60)
        return self

    def kill(self) -> None:
        """SIGKILL to the whole process group: no handler runs, nothing is flushed or rolled back."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()


class RedisServer:
    """A redis-server of the test's own on a free port (no persistence), so it can be stopped at will
    without touching the machine's shared Redis."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class TcpProxy:
    """127.0.0.1:<port> → target. `cut()` drops every open connection and refuses new ones (what
    clients see while a database restarts); `restore()` accepts again."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def start(self) -> TcpProxy:
        self.restore()
        return self

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed by cut()
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while True:
                for key, _ in sel.select():
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> None:
        if self._listener is not None:
            # shutdown() first: on Linux a bare close() does not wake the thread blocked in accept(),
            # which would go on accepting.
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.cut()


def knowpay_env(
    folder: Path, database_url: str, *, redis_url: str = "", web_port: int, sandbox_port: int, **extra: str
) -> dict[str, str]:
    """The environment every process of one stack shares."""
    return {
        "KNOWPAY_DATABASE_URL": database_url,
        "KNOWPAY_INSTANCE_PATH": str(folder),
        "KNOWPAY_BASE_URL": f"http://127.0.0.1:{web_port}",
        "KNOWPAY_SANDBOX_URL": f"http://127.0.0.1:{sandbox_port}",
        "KNOWPAY_SANDBOX_SECRET": SECRET,
        "KNOWPAY_SANDBOX_MERCHANT_ID": MERCHANT,
        "KNOWPAY_REDIS_URL": redis_url,
        **extra,
    }


def run_cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "knowpay", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"knowpay {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


_SEED = """
import json, sys
from knowpay.accounts import service as accounts
from knowpay.bootstrap import init_database
from knowpay.catalog import service as catalog
from knowpay.domain.states import ProductStatus
from knowpay.web import create_app
buyers, tag = int(sys.argv[1]), sys.argv[2]
fast = {"argon2__rounds": 1, "argon2__memory_cost": 1024}
app = create_app(init_database(), config={"SECURITY_PASSWORD_HASH_PASSLIB_OPTIONS": fast})
ctx = app.extensions["knowpay"]
def user(name, roles):
    made = accounts.register_user(session, email=f"{name}{tag}@bench.example.com", password="bench-password",
                                  username=f"bench_{name}{tag}", roles=roles, clock=ctx.clock)
    return made, accounts.issue_token(session, made, clock=ctx.clock).token
with app.app_context(), ctx.db.transaction() as session:
    creator, _ = user("creator", ("creator",))
    product = catalog.create_product(session, creator=creator, title="Bench course", kind="course",
                                     amount=9900, currency="cny", clock=ctx.clock)
    catalog.change_status(session, product, ProductStatus.PUBLISHED, clock=ctx.clock)
    tokens = [user(f"buyer{i}-", ("buyer",))[1] for i in range(buyers)]
    admin_token = user("admin", ("admin",))[1]
    product_id = product.id
ctx.db.dispose()
print(json.dumps({"product_id": product_id, "buyers": tokens, "admin": admin_token}))
"""


def seed(env: dict[str, str], buyers: int, *, tag: str = "") -> dict:
    """Migrate the database, then a published 99.00 course, `buyers` buyers and an admin, each with a
    token ({"product_id", "buyers": [token], "admin": token}); `tag` keeps the e-mails of repeated
    seedings of one database apart. Run in a child so this process's environment stays untouched."""
    done = subprocess.run(
        [sys.executable, "-c", _SEED, str(buyers), tag],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )
    if done.returncode != 0:
        raise RuntimeError("seeding failed:\n" + done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex, **headers}


def start_payment(
    http: requests.Session, base: str, token: str, product_id: str, *, timeout: float = 30, method: str = "qr"
) -> dict:
    """An order and its sandbox payment (requires_action); raises on any other answer."""
    order = http.post(
        f"{base}/api/v1/orders",
        headers=bearer(token),
        timeout=timeout,
        json={"items": [{"product_id": product_id}]},
    )
    if order.status_code != 201:
        raise RuntimeError(f"order {order.status_code} {order.text[:300]}")
    payment = http.post(
        f"{base}/api/v1/orders/{order.json()['id']}/payments",
        headers=bearer(token),
        timeout=timeout,
        json={"channel": "sandbox", "method": method},
    )
    if payment.status_code != 201:
        raise RuntimeError(f"payment {payment.status_code} {payment.text[:300]}")
    return payment.json()


def notify(http: requests.Session, base: str, payment: dict, *, timeout: float = 30) -> requests.Response:
    """The sandbox gateway's signed 'paid' notification for `payment`, as the gateway would send it."""
    body, headers = signed_notification(payment)
    return http.post(f"{base}/notify/sandbox", data=body, headers=headers, timeout=timeout)


def purchase(http: requests.Session, base: str, token: str, product_id: str) -> dict:
    """Order → payment → notification; returns the payment once the notification was acknowledged."""
    payment = start_payment(http, base, token, product_id)
    ack = notify(http, base, payment)
    if ack.text != "success":
        raise RuntimeError(f"notify {ack.status_code} {ack.text[:300]}")
    return payment


def pay_on_gateway(
    http: requests.Session, base: str, token: str, product_id: str, *, timeout: float = 60
) -> dict:
    """Order → payment → the buyer pays on the sandbox's page → the gateway notifies KnowPay by itself;
    returns the payment once KnowPay reports it succeeded (so the gateway's trade is paid and refundable)."""
    payment = start_payment(http, base, token, product_id, method="page")
    paid = http.post(payment["action"]["url"].rstrip("/") + "/pay", timeout=timeout, allow_redirects=False)
    if paid.status_code != 303:
        raise RuntimeError(f"sandbox pay page {paid.status_code} {paid.text[:300]}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = http.get(
            f"{base}/api/v1/payments/{payment['id']}", headers=bearer(token), timeout=timeout
        ).json()
        if now["status"] == "succeeded":
            return now
        time.sleep(0.1)
    raise RuntimeError(f"payment {payment['id']} did not succeed after the buyer paid on the gateway")


def new_postgres_database(prefix: str) -> str:
    return fresh_database(f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}")


def drop_postgres_database(url: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


class Stack:
    """sandbox + `knowpay serve` + `knowpay worker` on one database (and Redis, if given), seeded with a
    course, buyers and an admin. `database_url` is what the processes use (a proxy, say);
    `seed_url` the direct one for migrating and seeding."""

    def __init__(
        self,
        folder: Path,
        database_url: str,
        *,
        redis_url: str = "",
        buyers: int = 4,
        web_workers: int = 2,
        worker_threads: int = 2,
        seed_url: str | None = None,
        **extra: str,
    ) -> None:
        self.folder = folder
        self.web_port, self.sandbox_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.web_port}"
        self.env = knowpay_env(
            folder,
            database_url,
            redis_url=redis_url,
            web_port=self.web_port,
            sandbox_port=self.sandbox_port,
            **extra,
        )
        self.data = seed({**self.env, "KNOWPAY_DATABASE_URL": seed_url or database_url}, buyers)
        self.sandbox = Process(
            ["sandbox", "--port", str(self.sandbox_port)], self.env, folder / "sandbox.log"
        )
        self.web = Process(
            ["serve", "--port", str(self.web_port), "--workers", str(web_workers), "--no-access-log"],
            self.env,
            folder / "web.log",
        )
        self.worker = Process(["worker", "--workers", str(worker_threads)], self.env, folder / "worker.log")

    @property
    def buyers(self) -> list[str]:
        return self.data["buyers"]

    @property
    def product_id(self) -> str:
        return self.data["product_id"]

    def start(self, *, worker: bool = True) -> Stack:
        self.sandbox.start(ready_url=f"http://127.0.0.1:{self.sandbox_port}/healthz")
        self.web.start(ready_url=f"{self.base}/healthz")
        if worker:
            self.worker.start()
        return self

    def close(self) -> None:
        # The worker stops gracefully (an embedded store must not be cut mid-write); web and gateway
        # keep nothing in memory, and gunicorn would wait out idle keep-alive connections.
        self.worker.stop(timeout=10)
        self.web.kill()
        self.sandbox.kill()

    def verify(self) -> subprocess.CompletedProcess:
        """`knowpay verify` against this stack's database (not raising: the caller asserts)."""
        return run_cli(self.env, "verify", check=False)


# Benches buy far faster than a person; per-caller limits would measure the limiter, not checkout.
UNLIMITED = {"KNOWPAY_RATE_LIMIT_ORDERS": "1000000/minute", "KNOWPAY_RATE_LIMIT_PAYMENTS": "1000000/minute"}


def shadow_risk_rules(http: requests.Session, base: str, admin_token: str) -> int:
    """Put every risk rule in shadow mode (scored and recorded, not acted on): a bench's few buyers
    buying hundreds of times a minute from one address would otherwise be blocked, as they should be."""
    rules = http.get(f"{base}/api/v1/risk/rules", headers=bearer(admin_token), timeout=30)
    rules.raise_for_status()
    for rule in rules.json()["data"]:
        changed = http.patch(
            f"{base}/api/v1/risk/rules/{rule['name']}",
            headers=bearer(admin_token),
            json={"shadow": True},
            timeout=30,
        )
        changed.raise_for_status()
    return len(rules.json()["data"])


@contextmanager
def web_stack(name: str, *, sqlite: bool, web_workers: int, buyers: int = 64) -> Iterator[Stack]:
    """A bench's web stack without a worker, on a fresh database (PostgreSQL, or SQLite with `sqlite`):
    rate limits lifted and risk rules in shadow mode; stopped, and its database dropped, afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=f"knowpay-bench-{name}-"))
    database = f"sqlite:///{folder / 'bench.sqlite3'}" if sqlite else new_postgres_database(f"knowpay_bench_{name}")
    stack = Stack(folder, database, buyers=buyers, web_workers=web_workers, **UNLIMITED)
    try:
        stack.start(worker=False)
        shadow_risk_rules(requests.Session(), stack.base, stack.data["admin"])
        yield stack
    finally:
        stack.close()
        if not sqlite:
            drop_postgres_database(database)
