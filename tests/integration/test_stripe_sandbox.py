"""The Stripe adapter against the sandbox's imitation of Stripe, served for real on 127.0.0.1.

The sandbox speaks /v1 to the adapter (through Stripe's own library) and sends signed Stripe events to
an endpoint played by the test, which records them and, in the end-to-end tests, hands them to a
KnowPay app so they reach /notify/stripe exactly as from Stripe. Events the tests forge themselves are
signed with Stripe's library, never with the adapter.
"""

from __future__ import annotations

import io
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from urllib.parse import urljoin
from zoneinfo import ZoneInfo

import pytest
import requests
import stripe
from sqlalchemy import select
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from knowpay.channels import Registry
from knowpay.channels.base import PaymentRequest, RefundRequest
from knowpay.channels.stripe import StripeChannel, StripeConfig, from_settings
from knowpay.config import Settings
from knowpay.domain.clock import SystemClock
from knowpay.domain.errors import ChannelUnavailable, Conflict
from knowpay.ledger.service import balance_of, verify_ledger
from knowpay.payments.models import ChannelNotification
from knowpay.sandbox.app import create_sandbox_app
from knowpay.sandbox.gateways.stripe import demo_env
from tests.conftest import FAST_PASSWORDS

SECRET_KEY = "sk_test_integration_0123456789"
WEBHOOK_SECRET = "whsec_integration_0123456789"
KEYS = {"stripe_secret_key": SECRET_KEY, "stripe_webhook_secret": WEBHOOK_SECRET}
ZONE = ZoneInfo("Asia/Shanghai")


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
class Endpoint:
    """The webhook endpoint registered "in Stripe's dashboard": records each event, then hands it to
    `app` (KnowPay) when one is set, else answers 200 itself."""

    url: str = ""
    app: Callable | None = None
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def __call__(self, environ, start_response):
        body = Request(environ).get_data()
        self.received.append((dict(Request(environ).headers), body))
        if self.app is None:
            return Response('{"received": true}', content_type="application/json")(environ, start_response)
        environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(body), str(len(body))
        return self.app(environ, start_response)


@dataclass
class StripeSandbox:
    url: str
    app: object
    adapter: StripeChannel

    @property
    def gateway(self):
        return self.app.extensions["sandbox"]

    def deliver_due(self, *, later: float = 0.0) -> int:
        return self.gateway.notifier.deliver_due(now=time.time() + later)

    def client(self, key: str = SECRET_KEY) -> stripe.StripeClient:
        """Stripe's own library, as any Stripe integration would use it."""
        return stripe.StripeClient(key, base_addresses={"api": self.url}, max_network_retries=0)

    def adapter_with(self, **changes) -> StripeChannel:
        config = StripeConfig(**{"secret_key": SECRET_KEY, "webhook_secret": WEBHOOK_SECRET, "api_base": self.url,
                                 **changes.pop("config", {})})
        return StripeChannel(config, **changes)


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    recorder = Endpoint()
    recorder.url, stop = serve(recorder)
    yield recorder
    stop()


@pytest.fixture
def stripe_sandbox(tmp_path, endpoint) -> Iterator[StripeSandbox]:
    settings = Settings(instance_path=tmp_path / "gateway", base_url=endpoint.url, channel=dict(KEYS))
    app = create_sandbox_app(settings, notify_sync=True)
    url, stop = serve(app)
    adapter = from_settings(Settings(channel={**KEYS, "stripe_api_base": url}))
    yield StripeSandbox(url, app, adapter)
    stop()
    app.extensions["sandbox"].notifier.stop()
    app.extensions["sandbox"].store.close()


_numbers = iter(range(1, 1_000_000))


def payment(*, amount: int = 9900, payment_id: str | None = None) -> PaymentRequest:
    return PaymentRequest(
        payment_id=payment_id or f"pay_stripetest{next(_numbers):04d}", amount=amount, currency="cny",
        subject="Python 进阶课 · Advanced Python", method=None, notify_url="http://127.0.0.1:8000/notify/stripe",
        return_url="http://127.0.0.1:8000/checkout/done",
        expires_at=datetime.now(UTC).replace(tzinfo=None) + timedelta(minutes=15))


def refund(request: PaymentRequest, intent_id: str | None, refund_id: str, amount: int) -> RefundRequest:
    return RefundRequest(refund_id=refund_id, payment_id=request.payment_id, channel_trade_no=intent_id,
                         amount=amount, payment_amount=request.amount, currency=request.currency,
                         reason="changed my mind", notify_url="http://127.0.0.1:8000/notify/stripe")


def pay_page(sandbox: StripeSandbox, intent_id: str) -> str:
    """Where the intent sends a person to confirm it, read through Stripe's library."""
    intent = sandbox.client().v1.payment_intents.retrieve(intent_id)
    return intent.next_action.redirect_to_url.url


def press(sandbox: StripeSandbox, intent_id: str, button: str = "pay") -> requests.Response:
    """What a buyer's browser does on the pay page: post the form, follow the redirect."""
    return requests.post(f"{pay_page(sandbox, intent_id)}/{button}", timeout=5)


def stripe_event(event_type: str, obj: dict, *, event_id: str = "evt_forged") -> bytes:
    return json.dumps({"id": event_id, "object": "event", "type": event_type, "created": int(time.time()),
                       "livemode": False, "data": {"object": obj}}).encode()


def signed(body: bytes, *, secret: str = WEBHOOK_SECRET, at: float | None = None) -> dict[str, str]:
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret,
                                                               timestamp=int(at if at is not None else time.time()))
    return {"Content-Type": "application/json", "Stripe-Signature": header}


# -- the adapter and the sandbox --------------------------------------------------------------------

def test_create_opens_one_intent_per_payment_with_a_client_secret(stripe_sandbox):
    request = payment()
    first = stripe_sandbox.adapter.create(request)
    again = stripe_sandbox.adapter.create(request)
    assert first.action.type == "client_secret"
    assert first.channel_trade_no.startswith("pi_")
    assert first.action.data["client_secret"].startswith(first.channel_trade_no + "_secret_")
    assert (again.channel_trade_no, again.action) == (first.channel_trade_no, first.action)

    intent = stripe_sandbox.client().v1.payment_intents.retrieve(first.channel_trade_no)
    assert (intent.amount, intent.currency, intent.status) == (9900, "cny", "requires_action")
    assert intent.metadata["payment_id"] == request.payment_id
    assert first.extra["pay_url"] == intent.next_action.redirect_to_url.url
    page = requests.get(first.extra["pay_url"], timeout=5)
    assert page.status_code == 200 and "¥99.00" in page.text and "Advanced Python" in page.text
    assert stripe_sandbox.adapter.query(request.payment_id).status == "pending"


def test_the_same_payment_id_with_another_amount_is_a_conflict(stripe_sandbox):
    request = payment()
    stripe_sandbox.adapter.create(request)
    with pytest.raises(Conflict):
        stripe_sandbox.adapter.create(payment(payment_id=request.payment_id, amount=100))


def test_paying_on_the_pay_page_sends_a_signed_payment_intent_succeeded(stripe_sandbox, endpoint):
    request = payment()
    intent_id = stripe_sandbox.adapter.create(request).channel_trade_no
    assert "Paid" in press(stripe_sandbox, intent_id).text
    assert stripe_sandbox.deliver_due() == 1

    [(headers, body)] = endpoint.received
    # Stripe's own library accepts the sandbox's signature...
    event = stripe.Webhook.construct_event(body, headers["Stripe-Signature"], WEBHOOK_SECRET)
    assert (event.type, event.data.object.id) == ("payment_intent.succeeded", intent_id)
    # ...and so does the adapter, reading it as our payment's success.
    note = stripe_sandbox.adapter.parse_notification(headers, body)
    assert (note.kind, note.payment_id, note.status) == ("payment", request.payment_id, "succeeded")
    assert (note.amount, note.currency, note.channel_trade_no) == (9900, "cny", intent_id)
    assert note.event_id == event.id
    assert stripe_sandbox.deliver_due(later=3600) == 0  # acknowledged: never sent again


def test_an_event_is_resent_until_a_2xx_with_a_fresh_signature_and_the_same_id(stripe_sandbox, endpoint):
    endpoint.app = Response("busy", status=503)
    intent_id = stripe_sandbox.adapter.create(payment()).channel_trade_no
    press(stripe_sandbox, intent_id)
    assert stripe_sandbox.deliver_due() == 0
    endpoint.app = None
    assert stripe_sandbox.deliver_due(later=2) == 1
    (_, first), (second_headers, second) = endpoint.received
    assert json.loads(first)["id"] == json.loads(second)["id"]
    assert stripe_sandbox.adapter.parse_notification(second_headers, second).status == "succeeded"


def test_a_declined_payment_sends_payment_failed(stripe_sandbox, endpoint):
    request = payment()
    intent_id = stripe_sandbox.adapter.create(request).channel_trade_no
    press(stripe_sandbox, intent_id, "decline")
    stripe_sandbox.deliver_due()
    [(headers, body)] = endpoint.received
    note = stripe_sandbox.adapter.parse_notification(headers, body)
    assert (note.status, note.amount, note.details["code"]) == ("failed", 9900, "generic_decline")
    assert stripe_sandbox.adapter.query(request.payment_id).status == "failed"


def test_close_cancels_an_unpaid_intent_which_then_cannot_be_paid(stripe_sandbox):
    request = payment()
    intent_id = stripe_sandbox.adapter.create(request).channel_trade_no
    page = pay_page(stripe_sandbox, intent_id)
    assert stripe_sandbox.adapter.close(request.payment_id).status == "closed"
    assert stripe_sandbox.adapter.query(request.payment_id).status == "closed"
    assert stripe_sandbox.adapter.close(request.payment_id).status == "closed"
    assert "closed" in requests.post(f"{page}/pay", timeout=5).text
    assert stripe_sandbox.client().v1.payment_intents.retrieve(intent_id).status == "canceled"


def test_close_after_payment_reports_succeeded(stripe_sandbox):
    request = payment()
    intent_id = stripe_sandbox.adapter.create(request).channel_trade_no
    press(stripe_sandbox, intent_id)
    closed = stripe_sandbox.adapter.close(request.payment_id)
    assert (closed.status, closed.amount, closed.channel_trade_no) == ("succeeded", 9900, intent_id)
    with pytest.raises(stripe.InvalidRequestError) as refused:  # what Stripe says, through its library
        stripe_sandbox.client().v1.payment_intents.cancel(intent_id)
    assert refused.value.code == "payment_intent_unexpected_state"


def test_a_payment_stripe_never_saw_is_not_found(stripe_sandbox):
    assert stripe_sandbox.adapter.query("pay_neverseen").status == "not_found"
    assert stripe_sandbox.adapter.close("pay_neverseen").status == "not_found"
    unknown = refund(payment(payment_id="pay_neverseen"), None, "ref_neverseen", 100)
    assert stripe_sandbox.adapter.query_refund(unknown).failure_code == "refund_not_found"


def test_refunds_are_idempotent_on_our_refund_id_and_never_exceed_the_payment(stripe_sandbox, endpoint):
    request = payment()
    intent_id = stripe_sandbox.adapter.create(request).channel_trade_no
    press(stripe_sandbox, intent_id)
    adapter = stripe_sandbox.adapter

    first = adapter.refund(refund(request, intent_id, "ref_stripe_a", 3000))
    again = adapter.refund(refund(request, intent_id, "ref_stripe_a", 3000))
    assert first.status == "succeeded" and first.channel_refund_no.startswith("re_")
    assert again == first
    assert adapter.query_refund(refund(request, intent_id, "ref_stripe_a", 3000)) == first

    too_much = adapter.refund(refund(request, intent_id, "ref_stripe_b", 6901))
    assert (too_much.status, too_much.failure_code) == ("failed", "amount_too_large")
    assert adapter.refund(refund(request, intent_id, "ref_stripe_c", 6900)).status == "succeeded"
    emptied = adapter.refund(refund(request, intent_id, "ref_stripe_d", 1))
    assert (emptied.status, emptied.failure_code) == ("failed", "charge_already_refunded")

    stripe_sandbox.deliver_due()
    notes = [adapter.parse_notification(h, b) for h, b in endpoint.received]
    refunds = sorted((n.refund_id, n.amount) for n in notes if n.kind == "refund")
    assert refunds == [("ref_stripe_a", 3000), ("ref_stripe_c", 6900)]
    assert {n.payment_id for n in notes} == {request.payment_id}


def test_a_refund_without_the_intent_id_finds_the_intent_itself(stripe_sandbox):
    request = payment()
    intent_id = stripe_sandbox.adapter.create(request).channel_trade_no
    press(stripe_sandbox, intent_id)
    assert stripe_sandbox.adapter.refund(refund(request, None, "ref_stripe_x", 900)).status == "succeeded"


def test_the_days_balance_transactions_are_the_bill(stripe_sandbox):
    adapter = stripe_sandbox.adapter_with(page_size=2)  # three transactions: two pages
    paid = []
    for amount in (9900, 4900):
        request = payment(amount=amount)
        intent_id = adapter.create(request).channel_trade_no
        press(stripe_sandbox, intent_id)
        paid.append((request, intent_id))
    (first, first_intent), (second, _) = paid
    adapter.refund(refund(first, first_intent, "ref_stripe_bill", 1000))

    today = datetime.now(ZONE).date()
    lines = adapter.parse_bill(adapter.fetch_bill(today.isoformat()))
    assert sorted((line.kind, line.payment_id, line.amount, line.fee, line.refund_id) for line in lines) == sorted([
        ("payment", first.payment_id, 9900, 287, None),  # 2.9 % of 99.00
        ("payment", second.payment_id, 4900, 142, None),
        ("refund", first.payment_id, 1000, 0, "ref_stripe_bill"),
    ])
    assert all(line.status == "succeeded" and line.currency == "cny" for line in lines)
    assert adapter.parse_bill(adapter.fetch_bill((today - timedelta(days=1)).isoformat())) == []


def test_the_sandbox_answers_in_stripes_error_shapes(stripe_sandbox):
    with pytest.raises(stripe.AuthenticationError):
        stripe_sandbox.client("sk_test_wrong").v1.payment_intents.retrieve("pi_whatever")
    with pytest.raises(ChannelUnavailable, match="KNOWPAY_STRIPE_SECRET_KEY"):
        stripe_sandbox.adapter_with(config={"secret_key": "sk_test_wrong"}).create(payment())
    with pytest.raises(stripe.InvalidRequestError) as missing:
        stripe_sandbox.client().v1.payment_intents.retrieve("pi_nothing")
    assert (missing.value.http_status, missing.value.code) == (404, "resource_missing")
    client = stripe_sandbox.client()
    client.v1.payment_intents.create({"amount": 100, "currency": "usd"}, {"idempotency_key": "key-1"})
    with pytest.raises(stripe.IdempotencyError):
        client.v1.payment_intents.create({"amount": 200, "currency": "usd"}, {"idempotency_key": "key-1"})
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.payment_intents.create({"amount": 100, "currency": "usd", "colour": "red"})
    assert unknown.value.code == "parameter_unknown"
    answer = requests.get(f"{stripe_sandbox.url}/v1/nothing/here", timeout=5,
                          headers={"Authorization": f"Bearer {SECRET_KEY}"})
    assert answer.status_code == 404 and answer.json()["error"]["type"] == "invalid_request_error"


def test_a_stripe_that_cannot_be_reached_is_unavailable(stripe_sandbox):
    adapter = stripe_sandbox.adapter_with(config={"api_base": nobody_listening()})
    with pytest.raises(ChannelUnavailable):
        adapter.create(payment())
    with pytest.raises(ChannelUnavailable):
        adapter.query("pay_whatever")


def nobody_listening() -> str:
    """A 127.0.0.1 URL on which nothing listens."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return f"http://127.0.0.1:{port}"


def test_without_stripe_keys_the_sandbox_runs_without_v1(tmp_path):
    app = create_sandbox_app(Settings(instance_path=tmp_path), notify_sync=True)
    try:
        client = app.test_client()
        assert client.get("/healthz").status_code == 200
        assert client.post("/v1/payment_intents", data={"amount": "100"}).status_code == 404
        assert "stripe" in app.extensions["sandbox"].notifier.formats
    finally:
        app.extensions["sandbox"].store.close()


def test_demo_env_makes_test_keys_once_and_points_at_the_sandbox(tmp_path):
    first = demo_env(tmp_path, {"KNOWPAY_SANDBOX_URL": "http://192.168.1.5:8100/"})
    assert first["KNOWPAY_STRIPE_SECRET_KEY"].startswith("sk_test_")
    assert first["KNOWPAY_STRIPE_WEBHOOK_SECRET"].startswith("whsec_")
    assert first["KNOWPAY_STRIPE_API_BASE"] == "http://192.168.1.5:8100"
    again = demo_env(tmp_path, {})
    assert again["KNOWPAY_STRIPE_SECRET_KEY"] == first["KNOWPAY_STRIPE_SECRET_KEY"]
    assert again["KNOWPAY_STRIPE_API_BASE"] == "http://127.0.0.1:8100"
    assert (Path(tmp_path) / "sandbox-keys" / "stripe.json").stat().st_mode & 0o077 == 0


# -- end to end through KnowPay ---------------------------------------------------------------------

@pytest.fixture
def app(settings, db, stripe_sandbox, endpoint):
    """KnowPay with the Stripe adapter as its only channel; the sandbox's events reach its /notify/stripe."""
    from knowpay.web import create_app

    knowpay = create_app(settings, db=db, clock=SystemClock(), config={"TESTING": True, **FAST_PASSWORDS},
                         channels=Registry({"stripe": stripe_sandbox.adapter}))
    endpoint.app = knowpay
    return knowpay


def _order_and_payment(client, buyer, product) -> tuple[dict, dict]:
    order = client.post("/api/v1/orders", headers=buyer.headers, json={"items": [{"product_id": product["id"]}]})
    assert order.status_code == 201, order.get_json()
    paying = client.post(f"/api/v1/orders/{order.get_json()['id']}/payments", headers=buyer.headers,
                         json={"channel": "stripe"})
    assert paying.status_code == 201, paying.get_json()
    return order.get_json(), paying.get_json()


def _statuses(ctx) -> list[tuple[str, str | None]]:
    with ctx.db.transaction(write=False) as session:
        return [(n.status, n.reason) for n in session.scalars(
            select(ChannelNotification).order_by(ChannelNotification.received_at, ChannelNotification.id))]


def _state(client, buyer, order, payment) -> tuple[str, str]:
    return (client.get(f"/api/v1/payments/{payment['id']}", headers=buyer.headers).get_json()["status"],
            client.get(f"/api/v1/orders/{order['id']}", headers=buyer.headers).get_json()["status"])


def test_paying_by_stripe_end_to_end_captures_once(client, ctx, buyer, published_product, stripe_sandbox,
                                                   endpoint):
    order, payment_ = _order_and_payment(client, buyer, published_product)
    assert payment_["status"] == "requires_action"
    assert payment_["action"]["type"] == "client_secret"
    assert payment_["action"]["client_secret"].startswith(payment_["channel_trade_no"] + "_secret_")

    press(stripe_sandbox, payment_["channel_trade_no"])
    assert stripe_sandbox.deliver_due() == 1  # KnowPay answered 2xx
    assert _state(client, buyer, order, payment_) == ("succeeded", "paid")

    [(headers, body)] = endpoint.received
    repeat = client.post("/notify/stripe", data=body, headers=headers)
    assert (repeat.status_code, repeat.get_json()) == (200, {"received": True})
    assert [status for status, _ in _statuses(ctx)] == ["processed", "duplicate"]
    with ctx.db.transaction(write=False) as session:
        assert balance_of(session, "channel_fees:stripe:cny") == 287  # 2.9 % of 99.00, half up
        assert balance_of(session, "clearing:stripe:cny") == 9900 - 287
        assert verify_ledger(session).ok
        assert session.scalars(select(ChannelNotification.event_id)).all() == [json.loads(body)["id"]] * 2


def test_events_that_fail_verification_or_do_not_match_change_nothing(client, ctx, buyer, published_product,
                                                                      stripe_sandbox):
    order, payment_ = _order_and_payment(client, buyer, published_product)
    intent = stripe_sandbox.client().v1.payment_intents.retrieve(payment_["channel_trade_no"]).to_dict()
    succeeded = {**intent, "status": "succeeded", "amount_received": intent["amount"], "next_action": None}
    genuine = stripe_event("payment_intent.succeeded", succeeded)
    wrong_amount = stripe_event("payment_intent.succeeded", {**succeeded, "amount_received": 1})
    cases = [
        (genuine, signed(genuine, secret="whsec_not_ours"), "no v1 signature matches"),
        (wrong_amount, signed(wrong_amount), "amount 1 does not match"),
        (genuine, signed(genuine, at=time.time() - 400), "more than 300 s old"),
        (genuine, signed(genuine, at=time.time() + 400), "in the future"),
        (genuine, {"Content-Type": "application/json"}, "no Stripe-Signature header"),
    ]
    for body, headers, _ in cases:
        answer = client.post("/notify/stripe", data=body, headers=headers)
        assert answer.status_code == 400 and "error" in answer.get_json()
    stored = _statuses(ctx)
    assert [status for status, _ in stored] == ["rejected"] * len(cases)
    for (status, reason), (_, _, expected) in zip(stored, cases, strict=True):
        assert expected in reason
    assert _state(client, buyer, order, payment_) == ("requires_action", "pending")

    accepted = client.post("/notify/stripe", data=genuine, headers=signed(genuine))
    assert accepted.status_code == 200
    assert _state(client, buyer, order, payment_) == ("succeeded", "paid")


class PaidBeforeCreateReturns:
    """The Stripe adapter, except that the buyer pays and the event reaches KnowPay before create() returns."""

    def __init__(self, adapter: StripeChannel, sandbox: StripeSandbox) -> None:
        self._adapter, self._sandbox = adapter, sandbox
        self.name, self.fee_bps = adapter.name, adapter.fee_bps
        self.delivered = 0

    def create(self, request: PaymentRequest):
        created = self._adapter.create(request)
        press(self._sandbox, created.channel_trade_no)
        self.delivered = self._sandbox.deliver_due()
        return created

    def __getattr__(self, name: str):
        return getattr(self._adapter, name)


def test_an_event_that_arrives_before_create_returns_still_captures(settings, db, ctx, buyer, published_product,
                                                                    stripe_sandbox, endpoint):
    from knowpay.web import create_app

    racing = PaidBeforeCreateReturns(stripe_sandbox.adapter, stripe_sandbox)
    knowpay = create_app(settings, db=db, clock=SystemClock(), config={"TESTING": True, **FAST_PASSWORDS},
                         channels=Registry({"stripe": racing}))
    endpoint.app = knowpay
    client = knowpay.test_client()
    order, payment_ = _order_and_payment(client, buyer, published_product)
    assert racing.delivered == 1
    assert payment_["action"]["type"] == "client_secret"  # still recorded
    assert _state(client, buyer, order, payment_) == ("succeeded", "paid")
    assert [status for status, _ in _statuses(ctx)] == ["processed"]


def test_a_refund_through_knowpay_reaches_stripe_and_its_event_is_applied_once(client, ctx, buyer, published_product,
                                                                               stripe_sandbox):
    order, payment_ = _order_and_payment(client, buyer, published_product)
    press(stripe_sandbox, payment_["channel_trade_no"])
    stripe_sandbox.deliver_due()
    made = client.post("/api/v1/refunds", headers=buyer.headers,
                       json={"payment_id": payment_["id"], "amount": 1900, "reason": "wrong course"})
    assert made.status_code == 201, made.get_json()
    assert made.get_json()["status"] == "succeeded"
    assert stripe_sandbox.deliver_due() == 1  # refund.created, acknowledged
    assert [status for status, _ in _statuses(ctx)] == ["processed", "duplicate"]
    assert _state(client, buyer, order, payment_)[1] == "partially_refunded"


def test_an_event_that_needs_no_action_is_stored_as_ignored(client, ctx, buyer, published_product, stripe_sandbox):
    order, payment_ = _order_and_payment(client, buyer, published_product)
    intent = stripe_sandbox.client().v1.payment_intents.retrieve(payment_["channel_trade_no"]).to_dict()
    body = stripe_event("payment_intent.requires_action", intent, event_id="evt_needs_no_action")
    answer = client.post("/notify/stripe", data=body, headers=signed(body))
    assert (answer.status_code, answer.get_json()) == (200, {"received": True})
    assert [status for status, _ in _statuses(ctx)] == ["ignored"]
    assert _state(client, buyer, order, payment_) == ("requires_action", "pending")


# -- Checkout Sessions (method `checkout`): the card form on Stripe's hosted page -------------------

def checkout(*, expires_in: timedelta = timedelta(minutes=15), **changes) -> PaymentRequest:
    request = payment(**changes)
    return PaymentRequest(**{**request.__dict__, "method": "checkout",
                             "expires_at": datetime.now(UTC).replace(tzinfo=None) + expires_in})


def hosted_page(url: str) -> tuple[requests.Response, str]:
    """The session's hosted page, and where its Pay button posts."""
    page = requests.get(url, timeout=5)
    action = re.search(r'<form method="post" action="([^"]+/pay\?[^"]+)"', page.text).group(1)
    return page, urljoin(url, unescape(action))


def pay_hosted(url: str, button: str = "pay") -> requests.Response:
    """What a buyer's browser does on Stripe's hosted page: press the button (the answer is a redirect)."""
    _, action = hosted_page(url)
    return requests.post(action.replace("/pay?", f"/{button}?"), timeout=5, allow_redirects=False)


def test_checkout_opens_one_hosted_session_per_payment_expiring_when_stripe_allows(stripe_sandbox):
    now = time.time()
    adapter = stripe_sandbox.adapter_with(clock=lambda: now)
    request = checkout()
    first, again = adapter.create(request), adapter.create(request)
    assert first.action.type == "redirect" and first.channel_trade_no is None  # no PaymentIntent before paying
    assert again == first
    session = stripe_sandbox.client().v1.checkout.sessions.retrieve(first.extra["session_id"])
    assert (session.mode, session.amount_total, session.currency) == ("payment", 9900, "cny")
    assert (session.status, session.payment_status, session.payment_intent) == ("open", "unpaid", None)
    assert session.client_reference_id == request.payment_id and session.metadata["payment_id"] == request.payment_id
    assert session.success_url == session.cancel_url == request.return_url
    assert session.url == first.action.data["url"]
    # The order expires in 15 minutes, sooner than Stripe takes: the least it takes, in whole minutes.
    assert session.expires_at == -(-(int(now) + 31 * 60) // 60) * 60
    page, _ = hosted_page(session.url)
    assert page.status_code == 200 and "¥99.00" in page.text and "Advanced Python" in page.text
    assert adapter.query(request.payment_id).status == "pending"

    later = checkout(expires_in=timedelta(hours=2))
    session_id = adapter.create(later).extra["session_id"]
    assert stripe_sandbox.client().v1.checkout.sessions.retrieve(session_id).expires_at == \
        int(later.expires_at.replace(tzinfo=UTC).timestamp())


def test_paying_on_the_hosted_page_sends_checkout_session_completed_and_returns_to_success_url(stripe_sandbox,
                                                                                             endpoint):
    request = checkout()
    url = stripe_sandbox.adapter.create(request).action.data["url"]
    paid = pay_hosted(url)
    assert (paid.status_code, paid.headers["Location"]) == (303, request.return_url)
    assert stripe_sandbox.deliver_due() == 1

    [(headers, body)] = endpoint.received
    event = stripe.Webhook.construct_event(body, headers["Stripe-Signature"], WEBHOOK_SECRET)
    assert (event.type, event.data.object.status, event.data.object.payment_status) == (
        "checkout.session.completed", "complete", "paid")
    intent_id = event.data.object.payment_intent
    note = stripe_sandbox.adapter.parse_notification(headers, body)
    assert (note.payment_id, note.status, note.amount, note.currency) == (request.payment_id, "succeeded", 9900, "cny")
    assert note.channel_trade_no == intent_id and intent_id.startswith("pi_")
    intent = stripe_sandbox.client().v1.payment_intents.retrieve(intent_id)
    assert (intent.status, intent.metadata["payment_id"]) == ("succeeded", request.payment_id)
    assert stripe_sandbox.adapter.query(request.payment_id).channel_trade_no == intent_id
    closed = stripe_sandbox.adapter.close(request.payment_id)
    assert (closed.status, closed.channel_trade_no, closed.amount) == ("succeeded", intent_id, 9900)


def test_a_card_declined_on_the_hosted_page_fails_the_payment(stripe_sandbox, endpoint):
    request = checkout()
    pay_hosted(stripe_sandbox.adapter.create(request).action.data["url"], "decline")
    stripe_sandbox.deliver_due()
    [(headers, body)] = endpoint.received
    note = stripe_sandbox.adapter.parse_notification(headers, body)
    assert (note.payment_id, note.status, note.details["code"]) == (request.payment_id, "failed", "generic_decline")
    assert stripe_sandbox.adapter.query(request.payment_id).status == "failed"
    assert stripe_sandbox.adapter.close(request.payment_id).status == "closed"


def test_close_expires_an_open_session_which_then_cannot_be_paid(stripe_sandbox):
    request = checkout()
    created = stripe_sandbox.adapter.create(request)
    assert stripe_sandbox.adapter.close(request.payment_id).status == "closed"
    session = stripe_sandbox.client().v1.checkout.sessions.retrieve(created.extra["session_id"])
    assert (session.status, session.url) == ("expired", None)
    assert "closed" in requests.get(created.action.data["url"], timeout=5).text
    with pytest.raises(stripe.InvalidRequestError, match="can be expired"):  # what Stripe says, through its library
        stripe_sandbox.client().v1.checkout.sessions.expire(session.id)
    # An expired session nobody paid left no PaymentIntent behind: nothing is left to close.
    assert stripe_sandbox.adapter.close(request.payment_id).status == "not_found"
    assert stripe_sandbox.adapter.query(request.payment_id).status == "not_found"


def test_the_sandbox_refuses_sessions_stripe_would_refuse(stripe_sandbox):
    client = stripe_sandbox.client()
    base = {"mode": "payment", "success_url": "http://127.0.0.1:8000/done",
            "line_items": [{"quantity": 1, "price_data": {"currency": "cny", "unit_amount": 100,
                                                          "product_data": {"name": "A course"}}}]}
    assert client.v1.checkout.sessions.create(base).status == "open"
    for change, param in [({"expires_at": int(time.time()) + 600}, "expires_at"),
                          ({"mode": "subscription"}, "mode"), ({"line_items": []}, "line_items")]:
        with pytest.raises(stripe.InvalidRequestError) as refused:
            client.v1.checkout.sessions.create({**base, **change})
        assert refused.value.param == param
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.checkout.sessions.retrieve("cs_nothing")
    assert (missing.value.http_status, missing.value.code) == (404, "resource_missing")


def _checkout_payment(client, buyer, product) -> tuple[dict, dict]:
    order = client.post("/api/v1/orders", headers=buyer.headers, json={"items": [{"product_id": product["id"]}]})
    paying = client.post(f"/api/v1/orders/{order.get_json()['id']}/payments", headers=buyer.headers,
                         json={"channel": "stripe", "method": "checkout"})
    assert paying.status_code == 201, paying.get_json()
    return order.get_json(), paying.get_json()


def test_paying_on_stripe_checkout_end_to_end_captures_once_whichever_event_comes(client, ctx, buyer,
                                                                                   published_product, stripe_sandbox,
                                                                                   endpoint):
    order, payment_ = _checkout_payment(client, buyer, published_product)
    assert (payment_["method"], payment_["action"]["type"], payment_["channel_trade_no"]) == (
        "checkout", "redirect", None)

    pay_hosted(payment_["action"]["url"])
    assert stripe_sandbox.deliver_due() == 1  # checkout.session.completed, answered 2xx
    paid = client.get(f"/api/v1/payments/{payment_['id']}", headers=buyer.headers).get_json()
    assert paid["status"] == "succeeded" and paid["channel_trade_no"].startswith("pi_")
    assert _state(client, buyer, order, payment_) == ("succeeded", "paid")

    [(headers, completed)] = endpoint.received
    assert client.post("/notify/stripe", data=completed, headers=headers).status_code == 200  # resent
    # Stripe also sends payment_intent.succeeded for the session's intent, which carries our payment id too.
    intent = stripe_sandbox.client().v1.payment_intents.retrieve(paid["channel_trade_no"]).to_dict()
    succeeded = stripe_event("payment_intent.succeeded", intent, event_id="evt_intent_of_session")
    assert client.post("/notify/stripe", data=succeeded, headers=signed(succeeded)).status_code == 200
    assert [status for status, _ in _statuses(ctx)] == ["processed", "duplicate", "duplicate"]
    with ctx.db.transaction(write=False) as session:
        assert balance_of(session, "channel_fees:stripe:cny") == 287  # charged once
        assert balance_of(session, "clearing:stripe:cny") == 9900 - 287
        assert verify_ledger(session).ok

    # Refunds name the intent the capture recorded.
    made = client.post("/api/v1/refunds", headers=buyer.headers, json={"payment_id": payment_["id"], "amount": 1900})
    assert made.status_code == 201 and made.get_json()["status"] == "succeeded", made.get_json()


def test_an_intent_event_first_then_the_sessions_event_captures_once(client, ctx, buyer, published_product,
                                                                     stripe_sandbox):
    order, payment_ = _checkout_payment(client, buyer, published_product)
    pay_hosted(payment_["action"]["url"])  # paid at Stripe; its events are not delivered yet
    session = next(s for s in stripe_sandbox.client().v1.checkout.sessions.list({"status": "complete"})
                   if s.client_reference_id == payment_["id"]).to_dict()
    intent = stripe_sandbox.client().v1.payment_intents.retrieve(session["payment_intent"]).to_dict()
    first = stripe_event("payment_intent.succeeded", intent, event_id="evt_intent_first")
    then = stripe_event("checkout.session.completed", session, event_id="evt_session_then")
    for body in (first, then):
        assert client.post("/notify/stripe", data=body, headers=signed(body)).status_code == 200
    assert [status for status, _ in _statuses(ctx)] == ["processed", "duplicate"]
    assert _state(client, buyer, order, payment_) == ("succeeded", "paid")


def test_an_order_that_expires_expires_its_checkout_session(client, ctx, buyer, published_product, stripe_sandbox):
    from sqlalchemy import update

    from knowpay.orders.models import Order
    from knowpay.payments.maintenance import expire_order
    from knowpay.payments.models import Payment

    order, payment_ = _checkout_payment(client, buyer, published_product)
    with ctx.db.transaction() as session:
        session.execute(update(Order).where(Order.id == order["id"])
                        .values(expires_at=datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=1)))
        session_id = session.get(Payment, payment_["id"]).channel_extra["session_id"]
    assert expire_order(ctx, order["id"]) is True
    assert _state(client, buyer, order, payment_) == ("expired", "expired")
    assert stripe_sandbox.client().v1.checkout.sessions.retrieve(session_id).status == "expired"
    assert "closed" in requests.get(payment_["action"]["url"], timeout=5).text  # the buyer can no longer pay
