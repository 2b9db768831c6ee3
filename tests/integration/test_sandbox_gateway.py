"""The sandbox gateway, served for real on 127.0.0.1, driven through KnowPay's sandbox adapter.

A tiny receiver stands in for KnowPay's /notify/sandbox: it records every notification and answers
what the test scripted. Notifications are sent by calling `deliver_due()` (or, once, by the
gateway's own background thread).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from knowpay.channels.base import PaymentRequest, RefundRequest
from knowpay.channels.sandbox import SandboxChannel, from_settings
from knowpay.config import Settings
from knowpay.domain.errors import ChannelUnavailable, Conflict
from knowpay.sandbox.app import create_sandbox_app

MERCHANT = "kp-integration-merchant"
SECRET = "integration-sandbox-secret"


def serve(app: Callable) -> tuple[str, Callable[[], None]]:
    """Serve a WSGI app on a free 127.0.0.1 port in a thread → (base URL, stop)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        thread.join(5)

    return f"http://127.0.0.1:{server.server_port}", stop


@dataclass
class Receiver:
    """KnowPay's notify endpoint, played by the test: records each POST, answers from a script."""

    url: str = ""
    answers: list[tuple[int, str]] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def __call__(self, environ, start_response):
        request = Request(environ)
        self.received.append((dict(request.headers), request.get_data()))
        status, body = self.answers.pop(0) if self.answers else (200, "success")
        return Response(body, status=status, content_type="text/plain")(environ, start_response)

    def wait_for(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.received) >= count, f"only {len(self.received)} notifications arrived"


@dataclass
class Sandbox:
    url: str
    app: object
    channel: SandboxChannel

    @property
    def gateway(self):
        return self.app.extensions["sandbox"]

    def deliver_due(self, *, later: float = 0.0) -> int:
        return self.gateway.notifier.deliver_due(now=time.time() + later)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    recorder = Receiver()
    recorder.url, stop = serve(recorder)
    yield recorder
    stop()


def _settings(instance: Path, url: str = "") -> Settings:
    channel = {"sandbox_merchant_id": MERCHANT, "sandbox_secret": SECRET}
    if url:
        channel["sandbox_url"] = url
    return Settings(instance_path=instance, channel=channel)


def _start(instance: Path, *, notify_sync: bool = True) -> tuple[Sandbox, Callable[[], None]]:
    # The gateway builds its pay URLs from the address it was called at, so its port need not be known first.
    app = create_sandbox_app(_settings(instance), notify_sync=notify_sync)
    url, stop_server = serve(app)
    channel = from_settings(_settings(instance, url))

    def stop() -> None:
        stop_server()
        app.extensions["sandbox"].notifier.stop()
        app.extensions["sandbox"].store.close()

    return Sandbox(url, app, channel), stop


@pytest.fixture
def sandbox(tmp_path) -> Iterator[Sandbox]:
    running, stop = _start(tmp_path)
    yield running
    stop()


_numbers = iter(range(1, 1_000_000))


def payment(receiver: Receiver, *, amount: int = 9900, method: str | None = None,
            payment_id: str | None = None, expires_in: timedelta = timedelta(minutes=15)) -> PaymentRequest:
    return PaymentRequest(
        payment_id=payment_id or f"pay_test{next(_numbers):04d}", amount=amount, currency="cny",
        subject="Python 进阶课 · Advanced Python", method=method, notify_url=f"{receiver.url}/notify/sandbox",
        return_url="http://127.0.0.1:8000/checkout/done",
        expires_at=datetime.now(UTC).replace(tzinfo=None) + expires_in)


def refund(request: PaymentRequest, refund_id: str, amount: int, receiver: Receiver) -> RefundRequest:
    return RefundRequest(refund_id=refund_id, payment_id=request.payment_id, channel_trade_no=None,
                         amount=amount, payment_amount=request.amount, currency=request.currency,
                         reason="changed my mind", notify_url=f"{receiver.url}/notify/sandbox")


def press(sandbox: Sandbox, trade_no: str, button: str) -> requests.Response:
    """What a buyer's browser does: post the form, follow the redirect to the result page."""
    return requests.post(f"{sandbox.url}/pay/{trade_no}/{button}", timeout=5)


def signed_post(sandbox: Sandbox, path: str, body: bytes) -> requests.Response:
    """A merchant API call signed by the test itself, from the protocol."""
    timestamp = str(int(time.time()))
    signature = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return requests.post(f"{sandbox.url}{path}", data=body, timeout=5, headers={
        "Content-Type": "application/json", "Sandbox-Merchant": MERCHANT, "Sandbox-Timestamp": timestamp,
        "Sandbox-Signature": signature})


def simulate(sandbox: Sandbox, trade_no: str, result: str) -> requests.Response:
    """The automation hook: what pressing the button does, without a browser."""
    return signed_post(sandbox, f"/api/trades/{trade_no}/simulate", json.dumps({"result": result}).encode())


def test_create_answers_a_qr_code_and_repeats_the_same_trade(sandbox, receiver):
    request = payment(receiver)
    first = sandbox.channel.create(request)
    again = sandbox.channel.create(request)
    assert first.action.type == "qr_code"
    assert first.action.data["code_url"] == f"{sandbox.url}/pay/{first.channel_trade_no}"
    assert again.channel_trade_no == first.channel_trade_no
    assert sandbox.channel.query(request.payment_id).status == "pending"


def test_page_and_wap_methods_redirect_to_the_pay_page(sandbox, receiver):
    created = sandbox.channel.create(payment(receiver, method="wap"))
    assert created.action.to_json() == {"type": "redirect",
                                        "url": f"{sandbox.url}/pay/{created.channel_trade_no}"}


def test_the_same_out_trade_no_with_another_amount_is_a_conflict(sandbox, receiver):
    request = payment(receiver)
    sandbox.channel.create(request)
    with pytest.raises(Conflict) as refused:
        sandbox.channel.create(payment(receiver, payment_id=request.payment_id, amount=100))
    assert refused.value.code == "out_trade_no_conflict"


def test_paying_on_the_page_notifies_knowpay_once_acknowledged(sandbox, receiver):
    request = payment(receiver)
    trade_no = sandbox.channel.create(request).channel_trade_no
    page = requests.get(f"{sandbox.url}/pay/{trade_no}", timeout=5)
    assert page.status_code == 200
    assert "¥99.00" in page.text and "Advanced Python" in page.text
    assert "<script" not in page.text and "http://" not in page.text.split("<main>")[0]
    assert "script-src" not in page.headers["Content-Security-Policy"]

    result = press(sandbox, trade_no, "pay")
    assert result.status_code == 200 and "Paid" in result.text
    assert 'href="http://127.0.0.1:8000/checkout/done"' in result.text
    assert sandbox.deliver_due() == 1

    [(headers, body)] = receiver.received
    note = sandbox.channel.parse_notification(headers, body)
    assert (note.kind, note.payment_id, note.status) == ("payment", request.payment_id, "succeeded")
    assert (note.amount, note.currency, note.channel_trade_no) == (9900, "cny", trade_no)
    assert sandbox.deliver_due(later=3600) == 0  # acknowledged: never sent again
    assert sandbox.channel.query(request.payment_id).status == "succeeded"


def test_an_unacknowledged_notification_is_retried_with_backoff(sandbox, receiver):
    receiver.answers = [(500, "boom"), (200, "failure"), (200, "success")]
    request = payment(receiver)
    trade_no = sandbox.channel.create(request).channel_trade_no
    assert simulate(sandbox, trade_no, "pay").json()["status"] == "SUCCESS"

    assert sandbox.deliver_due() == 0
    assert sandbox.deliver_due() == 0 and len(receiver.received) == 1  # waits 1 s before trying again
    assert sandbox.deliver_due(later=1.5) == 0  # 200 but not "success": still not acknowledged
    assert sandbox.deliver_due(later=1.5) == 0 and len(receiver.received) == 2  # next wait is 2 s
    assert sandbox.deliver_due(later=10) == 1

    bodies = {body for _, body in receiver.received}
    assert len(receiver.received) == 3 and len(bodies) == 1  # the same notification, freshly signed
    assert all(sandbox.channel.parse_notification(h, b).event_id for h, b in receiver.received)
    [delivery] = sandbox.gateway.store.deliveries(trade_no)
    assert (delivery.status, delivery.attempts) == ("delivered", 3)


def test_a_restarted_gateway_keeps_retrying(tmp_path, receiver):
    receiver.answers = [(503, "down")]
    first, stop = _start(tmp_path)
    trade_no = first.channel.create(payment(receiver)).channel_trade_no
    simulate(first, trade_no, "pay")
    assert first.deliver_due() == 0
    stop()

    second, stop = _start(tmp_path)
    try:
        assert second.deliver_due(later=2) == 1
        assert len(receiver.received) == 2
    finally:
        stop()


def test_the_background_thread_delivers_without_being_asked(tmp_path, receiver):
    running, stop = _start(tmp_path, notify_sync=False)
    try:
        trade_no = running.channel.create(payment(receiver)).channel_trade_no
        press(running, trade_no, "pay")
        receiver.wait_for(1)
        assert running.channel.parse_notification(*receiver.received[0]).status == "succeeded"
    finally:
        stop()


def test_declining_notifies_a_failure_and_the_trade_cannot_then_be_paid(sandbox, receiver):
    request = payment(receiver)
    trade_no = sandbox.channel.create(request).channel_trade_no
    assert "Payment declined" in press(sandbox, trade_no, "decline").text
    assert "Payment declined" in press(sandbox, trade_no, "pay").text
    assert simulate(sandbox, trade_no, "pay").status_code == 409

    sandbox.deliver_due()
    [(headers, body)] = receiver.received
    assert sandbox.channel.parse_notification(headers, body).status == "failed"
    assert sandbox.channel.query(request.payment_id).status == "failed"


def test_query_and_close_report_the_trade_as_it_is(sandbox, receiver):
    assert sandbox.channel.query("pay_never_created").status == "not_found"
    assert sandbox.channel.close("pay_never_created").status == "not_found"

    request = payment(receiver)
    trade_no = sandbox.channel.create(request).channel_trade_no
    closed = sandbox.channel.close(request.payment_id)
    assert (closed.status, closed.channel_trade_no, closed.amount) == ("closed", trade_no, 9900)
    assert "closed" in press(sandbox, trade_no, "pay").text
    assert sandbox.channel.query(request.payment_id).status == "closed"
    sandbox.deliver_due()
    assert receiver.received == []


def test_closing_a_paid_trade_says_it_was_paid(sandbox, receiver):
    request = payment(receiver)
    trade_no = sandbox.channel.create(request).channel_trade_no
    simulate(sandbox, trade_no, "pay")
    closed = sandbox.channel.close(request.payment_id)
    assert (closed.status, closed.amount, closed.currency) == ("succeeded", 9900, "cny")
    assert abs(closed.paid_at - datetime.now(UTC).replace(tzinfo=None)) < timedelta(minutes=1)


def test_an_expired_trade_cannot_be_paid(sandbox, receiver):
    request = payment(receiver, expires_in=timedelta(seconds=-1))
    trade_no = sandbox.channel.create(request).channel_trade_no
    assert "closed" in requests.get(f"{sandbox.url}/pay/{trade_no}", timeout=5).text
    assert simulate(sandbox, trade_no, "pay").json()["code"] == "trade_not_payable"
    assert sandbox.channel.query(request.payment_id).status == "closed"


def test_refunds_are_idempotent_and_never_exceed_the_payment(sandbox, receiver):
    request = payment(receiver)
    trade_no = sandbox.channel.create(request).channel_trade_no
    early = sandbox.channel.refund(refund(request, "ref_early", 100, receiver))
    assert (early.status, early.failure_code) == ("failed", "trade_not_paid")
    simulate(sandbox, trade_no, "pay")

    first = sandbox.channel.refund(refund(request, "ref_1", 3000, receiver))
    assert first.status == "succeeded" and first.channel_refund_no
    assert sandbox.channel.refund(refund(request, "ref_1", 3000, receiver)) == first
    too_much = sandbox.channel.refund(refund(request, "ref_2", 7000, receiver))
    assert (too_much.status, too_much.failure_code) == ("failed", "refund_exceeds_trade")
    rest = sandbox.channel.refund(refund(request, "ref_3", 6900, receiver))
    assert rest.status == "succeeded"
    one_more_fen = sandbox.channel.refund(refund(request, "ref_4", 1, receiver))
    assert one_more_fen.failure_code == "refund_exceeds_trade"

    assert sandbox.channel.query_refund(refund(request, "ref_1", 3000, receiver)) == first
    assert sandbox.channel.query_refund(refund(request, "ref_unknown", 1, receiver)).status == "pending"

    sandbox.deliver_due()
    notes = [sandbox.channel.parse_notification(h, b) for h, b in receiver.received]
    refunds = sorted((n.refund_id, n.amount, n.status) for n in notes if n.kind == "refund")
    assert refunds == [("ref_1", 3000, "succeeded"), ("ref_3", 6900, "succeeded")]


def test_the_bill_lists_the_days_payments_and_refunds_with_fees(sandbox, receiver):
    paid_a, paid_b, unpaid = payment(receiver), payment(receiver, amount=12345), payment(receiver, amount=500)
    for request in (paid_a, paid_b, unpaid):
        trade_no = sandbox.channel.create(request).channel_trade_no
        if request is not unpaid:
            simulate(sandbox, trade_no, "pay")
    sandbox.channel.refund(refund(paid_a, "ref_bill", 3000, receiver))

    today = datetime.now(ZoneInfo("Asia/Shanghai")).date()
    data = sandbox.channel.fetch_bill(today.isoformat())
    assert data.decode("utf-8").startswith("kind,out_trade_no,trade_no,out_refund_no,amount,currency,status,")
    lines = {(line.kind, line.payment_id): line for line in sandbox.channel.parse_bill(data)}
    assert set(lines) == {("payment", paid_a.payment_id), ("payment", paid_b.payment_id),
                          ("refund", paid_a.payment_id)}
    a, b = lines["payment", paid_a.payment_id], lines["payment", paid_b.payment_id]
    assert (a.amount, a.fee, a.currency, a.status) == (9900, 59, "cny", "succeeded")  # 59.4 fen → 59
    assert (b.amount, b.fee) == (12345, 74)  # 74.07 fen → 74
    back = lines["refund", paid_a.payment_id]
    assert (back.amount, back.fee, back.refund_id, back.status) == (3000, 18, "ref_bill", "succeeded")

    three_days_ago = (today - timedelta(days=3)).isoformat()
    assert sandbox.channel.parse_bill(sandbox.channel.fetch_bill(three_days_ago)) == []


def test_a_float_amount_is_refused_by_the_gateway(sandbox, receiver):
    body = json.dumps({"out_trade_no": "pay_float", "amount": 99.0, "currency": "CNY", "subject": "x",
                       "notify_url": receiver.url, "return_url": receiver.url,
                       "expires_at": "2099-01-01T00:00:00Z"}).encode()
    answer = signed_post(sandbox, "/api/trades", body)
    assert (answer.status_code, answer.json()["code"]) == (400, "invalid_amount")


def test_deeply_nested_json_is_refused_not_a_crash(sandbox):
    answer = signed_post(sandbox, "/api/trades", b"[" * 30_000 + b"]" * 30_000)
    assert (answer.status_code, answer.json()["code"]) == (400, "invalid_json")


def test_the_gateway_refuses_a_wrong_secret_and_unsigned_calls(sandbox, receiver, tmp_path):
    impostor = from_settings(Settings(instance_path=tmp_path, channel={
        "sandbox_url": sandbox.url, "sandbox_merchant_id": MERCHANT, "sandbox_secret": "not-the-secret"}))
    with pytest.raises(ChannelUnavailable, match="KNOWPAY_SANDBOX_SECRET"):
        impostor.create(payment(receiver))
    unsigned = requests.post(f"{sandbox.url}/api/trades/query", json={"out_trade_no": "x"}, timeout=5)
    assert (unsigned.status_code, unsigned.json()["code"]) == (401, "missing_signature")


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A 127.0.0.1 port bound but not listening: connections to it are refused."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def test_a_gateway_that_is_down_or_failing_is_unavailable(receiver, tmp_path, closed_port):
    receiver.answers = [(502, "bad gateway")]
    failing = from_settings(_settings(tmp_path, receiver.url))
    with pytest.raises(ChannelUnavailable, match="502"):
        failing.query("pay_x")
    down = from_settings(_settings(tmp_path, f"http://127.0.0.1:{closed_port}"))
    with pytest.raises(ChannelUnavailable, match="could not be reached"):
        down.query("pay_x")
