"""End to end over HTTP with real processes, as `knowpay demo` runs them: web (gunicorn), worker and
the sandbox gateway on SQLite. A buyer pays on the sandbox pay page; the gateway notifies KnowPay;
the status stream closes on success; the worker delivers a signed webhook to another service."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from bench.harness import free_port, knowpay_process, wait_http

pytestmark = pytest.mark.slow


class _Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - the stdlib's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((dict(self.headers), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def stack(tmp_path):
    web, gateway, hook = free_port(), free_port(), free_port()
    env = {"KNOWPAY_DATABASE_URL": f"sqlite:///{tmp_path / 'knowpay.sqlite3'}",
           "KNOWPAY_INSTANCE_PATH": str(tmp_path), "KNOWPAY_BASE_URL": f"http://127.0.0.1:{web}",
           "KNOWPAY_SANDBOX_URL": f"http://127.0.0.1:{gateway}", "KNOWPAY_REDIS_URL": ""}
    receiver = ThreadingHTTPServer(("127.0.0.1", hook), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "knowpay", *args], env={**os.environ, **env},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    cli("init")
    cli("users", "create", "--email", "li@example.com", "--password", "teach-well-2026", "--role", "creator")
    cli("users", "create", "--email", "ann@example.com", "--password", "learn-well-2026")
    cli("users", "create", "--email", "boss@example.com", "--password", "run-well-2026", "--role", "admin")
    with knowpay_process(["sandbox", "--port", str(gateway)], env, ready_url=f"http://127.0.0.1:{gateway}/healthz",
                         log=tmp_path / "sandbox.log"), \
            knowpay_process(["serve", "--port", str(web), "--workers", "1"], env,
                            ready_url=f"http://127.0.0.1:{web}/healthz", log=tmp_path / "web.log"), \
            knowpay_process(["worker"], env, log=tmp_path / "worker.log"):
        yield {"web": f"http://127.0.0.1:{web}", "hook": f"http://127.0.0.1:{hook}/hooks"}
    receiver.shutdown()


def _login(base: str, email: str, password: str) -> dict:
    token = requests.post(f"{base}/api/v1/auth/token", json={"email": email, "password": password}, timeout=10)
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


def test_a_buyer_pays_on_the_sandbox_page_and_a_service_hears_about_it(stack):
    base = stack["web"]
    teacher, buyer, admin = (_login(base, "li@example.com", "teach-well-2026"),
                             _login(base, "ann@example.com", "learn-well-2026"),
                             _login(base, "boss@example.com", "run-well-2026"))
    endpoint = requests.post(f"{base}/api/v1/webhook-endpoints", headers=admin, timeout=10,
                             json={"url": stack["hook"], "events": ["order.paid"]}).json()
    product = requests.post(f"{base}/api/v1/products", headers=teacher, timeout=10,
                            json={"title": "摄影入门", "kind": "course", "amount": 4900, "currency": "cny"}).json()
    requests.post(f"{base}/api/v1/products/{product['id']}/publish", headers=teacher, timeout=10)
    order = requests.post(f"{base}/api/v1/orders", headers=buyer, timeout=10,
                          json={"items": [{"product_id": product["id"]}]}).json()
    payment = requests.post(f"{base}/api/v1/orders/{order['id']}/payments", headers=buyer, timeout=10,
                            json={"channel": "sandbox", "method": "page"}).json()
    assert payment["status"] == "requires_action" and payment["action"]["type"] == "redirect"

    statuses: list[str] = []

    def follow() -> None:
        with requests.get(f"{base}/api/v1/payments/{payment['id']}/stream", headers=buyer, stream=True,
                          timeout=60) as stream:
            for line in stream.iter_lines(decode_unicode=True):
                if line.startswith("data: "):
                    statuses.append(json.loads(line[6:])["status"])

    watcher = threading.Thread(target=follow)
    watcher.start()
    page = requests.get(payment["action"]["url"], timeout=10)
    assert page.status_code == 200 and "49.00" in page.text
    pay_url = payment["action"]["url"].rstrip("/") + "/pay"
    assert requests.post(pay_url, timeout=10, allow_redirects=False).status_code == 303
    watcher.join(timeout=60)
    assert statuses == ["requires_action", "succeeded"]  # the stream closed by itself on success

    paid = requests.get(f"{base}/api/v1/orders/{order['id']}", headers=buyer, timeout=10).json()
    assert paid["status"] == "paid"
    access = requests.get(f"{base}/api/v1/entitlements", headers=buyer, timeout=10).json()["data"]
    assert [e["product_id"] for e in access] == [product["id"]]

    deadline = time.monotonic() + 90  # the worker's sweep runs every minute at the latest
    while not _Receiver.received and time.monotonic() < deadline:
        time.sleep(0.5)
    headers, body = _Receiver.received[0]
    event = json.loads(body)
    assert event["type"] == "order.paid" and event["data"]["object"]["id"] == order["id"]
    stamp = dict(part.split("=", 1) for part in headers["KnowPay-Signature"].split(","))
    expected = hmac.new(endpoint["secret"].encode(), f"{stamp['t']}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(stamp["v1"], expected)
    wait_http(f"{base}/readyz")
