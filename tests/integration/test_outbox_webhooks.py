"""Outbox events reach webhook endpoints: fanned out once, signed, retried for three days, redeliverable."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from knowpay.context import build_context
from knowpay.domain.errors import InvalidRequest, NotFound
from knowpay.outbox import webhooks
from knowpay.outbox.dispatch import dispatch_pending
from knowpay.outbox.models import OutboxEvent, WebhookDelivery
from knowpay.outbox.service import record_event
from knowpay.outbox.webhooks import claim_due, create_endpoint, deliver_due, redeliver

ORDER = {"id": "ord_1", "object": "order", "status": "paid", "amount": 9900, "currency": "cny"}


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict:
        return json.loads(self.body)


class Receiver:
    """A real HTTP endpoint on 127.0.0.1 that records what it is sent and fails when told to."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.fail_next = 0
        self.delay = 0.0
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @Request.application
    def _app(self, request: Request) -> Response:
        time.sleep(self.delay)
        with self._lock:
            self.received.append(Received(request.path, dict(request.headers), request.get_data()))
            failing = self.fail_next > 0
            self.fail_next -= 1 if failing else 0
        return Response("down for maintenance", status=503) if failing else Response("ok")

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.received


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def ctx(settings, db, clock):
    return build_context(settings, db=db, clock=clock)


@pytest.fixture
def api(app, client):
    """The test client, with the webhooks blueprint registered if the app factory does not yet."""
    from knowpay.web.api import webhooks as webhooks_api

    if webhooks_api.bp.name not in app.blueprints:
        app.register_api(webhooks_api.bp)
    return client


def add_endpoint(ctx, url: str, events: list[str], *, enabled: bool = True):
    with ctx.db.transaction() as session:
        endpoint = create_endpoint(session, url, events, actor_id="usr_test", clock=ctx.clock)
        endpoint.enabled = enabled
        return endpoint


def add_event(ctx, type_: str = "order.paid", *, object_id: str = "ord_1", sequence: int = 1,
              payload: dict | None = None) -> OutboxEvent:
    with ctx.db.transaction() as session:
        return record_event(session, type=type_, object_type=type_.split(".")[0], object_id=object_id,
                            sequence=sequence, payload=payload or ORDER, clock=ctx.clock)


def deliveries(ctx) -> list[WebhookDelivery]:
    with ctx.db.transaction(write=False) as session:
        return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.created_at)))


def delivery(ctx, delivery_id: str) -> WebhookDelivery:
    with ctx.db.transaction(write=False) as session:
        return session.get(WebhookDelivery, delivery_id)


def verify(header: str, body: bytes, secret: str) -> int:
    """What a consumer does, from API.md: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the secret>."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(secret.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, fields["v1"]), "signature does not verify"
    return int(fields["t"])


def unix(moment: datetime) -> int:
    return int(moment.replace(tzinfo=UTC).timestamp())


# Fan-out -----------------------------------------------------------------------------------------------

def test_events_fan_out_only_to_enabled_endpoints_subscribed_to_them(ctx, receiver):
    paid = add_endpoint(ctx, receiver.url + "/paid", ["order.paid"])
    refunds = add_endpoint(ctx, receiver.url + "/refunds", ["refund.succeeded", "order.paid"])
    add_endpoint(ctx, receiver.url + "/payments", ["payment.succeeded"])
    add_endpoint(ctx, receiver.url + "/off", ["order.paid"], enabled=False)
    order_paid = add_event(ctx, "order.paid")
    add_event(ctx, "entitlement.granted", object_id="ent_1")

    assert dispatch_pending(ctx) == 2

    assert sorted((d.endpoint_id, d.event_id) for d in deliveries(ctx)) == sorted(
        [(paid.id, order_paid.id), (refunds.id, order_paid.id)])
    with ctx.db.transaction(write=False) as session:
        assert session.scalar(select(func.count()).where(OutboxEvent.dispatched_at.is_(None))) == 0
    assert deliver_due(ctx) == 2
    assert sorted(r.path for r in receiver.received) == ["/paid", "/refunds"]
    assert {d.status for d in deliveries(ctx)} == {"succeeded"}


def test_dispatching_again_creates_no_duplicate_deliveries(ctx, receiver):
    add_endpoint(ctx, receiver.url, ["order.paid"])
    event = add_event(ctx)
    assert dispatch_pending(ctx) == 1
    assert dispatch_pending(ctx) == 0
    # As if a second dispatcher had read the event before the first marked it.
    with ctx.db.transaction() as session:
        session.execute(update(OutboxEvent).where(OutboxEvent.id == event.id).values(dispatched_at=None))
    assert dispatch_pending(ctx) == 1

    assert len(deliveries(ctx)) == 1
    assert deliver_due(ctx) == 1
    assert deliver_due(ctx) == 0
    assert len(receiver.received) == 1


def test_events_are_dispatched_in_batches_oldest_first(ctx, receiver):
    add_endpoint(ctx, receiver.url, ["payment.succeeded"])
    for n in range(7):
        add_event(ctx, "payment.succeeded", object_id=f"pay_{n}")
        ctx.clock.advance(seconds=1)
    assert dispatch_pending(ctx, limit=5, batch_size=2) == 5
    assert dispatch_pending(ctx, limit=5, batch_size=2) == 2
    assert deliver_due(ctx) == 7
    assert len({r.event["id"] for r in receiver.received}) == 7


# Signing and shape ------------------------------------------------------------------------------------

def test_a_delivery_is_signed_as_api_md_describes(ctx, receiver):
    endpoint = add_endpoint(ctx, receiver.url + "/hooks", ["order.paid"])
    assert endpoint.secret.startswith("whsec_") and len(endpoint.secret) > 30
    event = add_event(ctx, sequence=3)
    dispatch_pending(ctx)
    deliver_due(ctx)

    (request,) = receiver.received
    assert request.headers["Content-Type"] == "application/json"
    signed_at = verify(request.headers["Knowpay-Signature"], request.body, endpoint.secret)
    assert signed_at == unix(ctx.clock.now())
    assert request.event == {"id": event.id, "type": "order.paid", "created_at": "2026-11-25T04:00:00.000Z",
                             "sequence": 3, "data": {"object": ORDER}}
    with pytest.raises(AssertionError):
        verify(request.headers["Knowpay-Signature"], request.body, "whsec_someone-else")


# Retries ----------------------------------------------------------------------------------------------

def test_a_failing_endpoint_is_retried_with_growing_backoff_then_failed_after_three_days(ctx, receiver):
    add_endpoint(ctx, receiver.url, ["order.paid"])
    add_event(ctx)
    dispatch_pending(ctx)
    (pending,) = deliveries(ctx)
    receiver.fail_next = 10_000
    start = pending.created_at

    at, gaps = start, []
    while True:
        assert deliver_due(ctx, now=at) == 1
        current = delivery(ctx, pending.id)
        if current.status == "failed":
            break
        assert current.status == "pending" and current.locked_until is None
        assert deliver_due(ctx, now=current.next_attempt_at - timedelta(seconds=1)) == 0  # not due yet
        gaps.append(current.next_attempt_at - at)
        at = current.next_attempt_at

    assert timedelta(seconds=22) <= gaps[0] <= timedelta(seconds=38)
    assert all(later > earlier for earlier, later in zip(gaps[:8], gaps[1:8]))
    assert max(gaps) <= timedelta(hours=6)
    assert at == start + timedelta(days=3)  # the last attempt is made at the end of the window
    assert current.attempts == len(receiver.received) == len(gaps) + 1
    assert (current.last_status, current.last_error) == (503, "HTTP 503: down for maintenance")
    assert deliver_due(ctx, now=at + timedelta(days=30)) == 0


def test_an_unreachable_endpoint_is_a_failed_attempt_with_its_reason(ctx):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    add_endpoint(ctx, f"http://127.0.0.1:{closed_port}/hooks", ["order.paid"])
    add_event(ctx)
    dispatch_pending(ctx)
    assert deliver_due(ctx) == 1
    (current,) = deliveries(ctx)
    assert (current.status, current.attempts, current.last_status) == ("pending", 1, None)
    assert current.last_error.startswith("ConnectionError")
    assert current.next_attempt_at > ctx.clock.now()


def test_a_failed_delivery_can_be_redelivered(ctx, receiver):
    add_endpoint(ctx, receiver.url, ["order.paid"])
    event = add_event(ctx)
    dispatch_pending(ctx)
    (pending,) = deliveries(ctx)
    receiver.fail_next = 1
    late = pending.created_at + timedelta(days=3, minutes=1)
    assert deliver_due(ctx, now=late) == 1
    assert delivery(ctx, pending.id).status == "failed"

    ctx.clock.advance(days=4)
    with ctx.db.transaction() as session:
        (again,) = redeliver(session, event.id, clock=ctx.clock)
        assert (again.id, again.status, again.next_attempt_at) == (pending.id, "pending", ctx.clock.now())
    assert deliver_due(ctx) == 1
    done = delivery(ctx, pending.id)
    assert (done.status, done.attempts, done.delivered_at) == ("succeeded", 2, ctx.clock.now())
    assert len(receiver.received) == 2

    with ctx.db.transaction() as session:
        assert redeliver(session, event.id, clock=ctx.clock) == []  # nothing of that event has failed
        (resent,) = redeliver(session, pending.id, clock=ctx.clock)  # but one delivery may be sent again
        assert resent.status == "pending"
        with pytest.raises(NotFound):
            redeliver(session, "whd_missing", clock=ctx.clock)
        with pytest.raises(NotFound):
            redeliver(session, "evt_missing", clock=ctx.clock)


# Leases: never two senders at once, nothing lost when one dies ----------------------------------------------

def test_two_workers_never_send_the_same_delivery_at_once(ctx, receiver):
    add_endpoint(ctx, receiver.url, ["payment.succeeded"])
    for n in range(24):
        add_event(ctx, "payment.succeeded", object_id=f"pay_{n}")
    dispatch_pending(ctx)
    receiver.delay = 0.02
    start = threading.Barrier(2)
    counts: list[int] = []

    def worker() -> None:
        start.wait()
        while sent := deliver_due(ctx, limit=4):  # small batches, so that the two interleave
            counts.append(sent)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    sent = [r.event["id"] for r in receiver.received]
    assert len(sent) == len(set(sent)) == 24
    assert sum(counts) == 24
    assert {(d.status, d.attempts) for d in deliveries(ctx)} == {("succeeded", 1)}


def test_a_worker_that_dies_holding_a_lease_loses_nothing(ctx, receiver):
    add_endpoint(ctx, receiver.url, ["order.paid"])
    add_event(ctx)
    dispatch_pending(ctx)
    (abandoned,) = claim_due(ctx)  # taken by a worker that is then killed
    assert deliver_due(ctx) == 0
    assert receiver.received == []

    ctx.clock.advance(seconds=webhooks.LEASE.total_seconds() + 1)
    assert deliver_due(ctx) == 1
    assert delivery(ctx, abandoned.delivery_id).status == "succeeded"
    # The dead worker's outcome, had it come back, is refused: its lease is gone.
    assert webhooks.record(ctx, abandoned, webhooks.Outcome(False, 500, "late"), at=ctx.clock.now()) is False
    assert delivery(ctx, abandoned.delivery_id).status == "succeeded"


def test_retry_delays_grow_with_jitter_up_to_six_hours():
    delays = [webhooks.retry_delay(n) for n in range(1, 30)]
    assert timedelta(seconds=22.5) <= delays[0] <= timedelta(seconds=37.5)
    assert timedelta(seconds=45) <= delays[1] <= timedelta(seconds=75)
    assert all(d <= timedelta(hours=6) for d in delays)
    assert delays[-1] >= timedelta(hours=6) * 0.75


# Endpoint rules ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["ftp://example.com/hooks", "example.com/hooks", "http://", "https://x:port/",
                                 "http://exa mple.com/", "https://example.com/" + "x" * 500])
def test_an_endpoint_needs_an_http_or_https_url(ctx, url):
    with ctx.db.transaction() as session, pytest.raises(InvalidRequest) as refused:
        create_endpoint(session, url, ["order.paid"], actor_id="usr_test", clock=ctx.clock)
    assert refused.value.param == "url"


@pytest.mark.parametrize(("events", "param"), [
    ([], "events"),
    (["order.paid", "order.shipped"], "events[1]"),
])
def test_an_endpoint_needs_known_event_types(ctx, events, param):
    with ctx.db.transaction() as session, pytest.raises(InvalidRequest) as refused:
        create_endpoint(session, "https://example.com/hooks", events, actor_id="usr_test", clock=ctx.clock)
    assert refused.value.param == param


# The admin API ----------------------------------------------------------------------------------------

def test_only_admins_manage_webhook_endpoints(api, buyer):
    client = api
    body = {"url": "https://example.com/hooks", "events": ["order.paid"]}
    assert client.post("/api/v1/webhook-endpoints", json=body, headers=buyer.headers).status_code == 403
    assert client.get("/api/v1/webhook-endpoints", headers=buyer.headers).status_code == 403
    assert client.post("/api/v1/webhook-deliveries/whd_x/redeliver", headers=buyer.headers).status_code == 403
    assert client.get("/api/v1/webhook-endpoints").status_code == 401


def test_an_admin_registers_an_endpoint_and_sees_its_secret_only_once(api, admin):
    client = api
    made = client.post("/api/v1/webhook-endpoints", headers=admin.headers,
                       json={"url": "https://example.com/hooks",
                             "events": ["order.paid", "refund.succeeded"]})
    assert made.status_code == 201, made.get_json()
    endpoint = made.get_json()
    assert endpoint["id"].startswith("whe_") and endpoint["secret"].startswith("whsec_")
    assert endpoint["events"] == ["order.paid", "refund.succeeded"]
    assert endpoint["created_at"].endswith("Z")

    listed = client.get("/api/v1/webhook-endpoints", headers=admin.headers).get_json()
    assert [e["id"] for e in listed["data"]] == [endpoint["id"]]
    assert "secret" not in listed["data"][0]


@pytest.mark.parametrize(("body", "param"), [
    ({"url": "ftp://example.com/x", "events": ["order.paid"]}, "url"),
    ({"url": "https://example.com/x", "events": ["order.paid", "nope"]}, "events[1]"),
    ({"url": "https://example.com/x", "events": []}, "events"),
    ({"url": "https://example.com/x"}, "events"),
])
def test_a_bad_endpoint_is_refused_naming_the_param(api, admin, body, param):
    refused = api.post("/api/v1/webhook-endpoints", headers=admin.headers, json=body)
    assert refused.status_code == 400, refused.get_json()
    assert refused.get_json()["error"]["param"] == param


def test_an_admin_sees_deliveries_and_redelivers_a_failed_one(app, api, admin, receiver):
    client = api
    rt = app.extensions["knowpay"]
    made = client.post("/api/v1/webhook-endpoints", headers=admin.headers,
                       json={"url": receiver.url, "events": ["order.paid"]}).get_json()
    add_event(rt)
    dispatch_pending(rt)
    receiver.fail_next = 1
    assert deliver_due(rt) == 1
    with rt.db.transaction() as session:  # as if three days of retries had passed
        session.execute(update(WebhookDelivery).values(status="failed"))

    failed = client.get(f"/api/v1/webhook-endpoints/{made['id']}/deliveries?status=failed",
                        headers=admin.headers)
    assert failed.status_code == 200, failed.get_json()
    (shown,) = failed.get_json()["data"]
    assert (shown["status"], shown["attempts"], shown["last_status"], shown["event_type"]) == (
        "failed", 1, 503, "order.paid")
    assert shown["next_attempt_at"] is None

    again = client.post(f"/api/v1/webhook-deliveries/{shown['id']}/redeliver", headers=admin.headers)
    assert again.status_code == 200, again.get_json()
    assert again.get_json()["status"] == "pending"
    assert deliver_due(rt) == 1
    assert len(receiver.received) == 2
    done = client.get(f"/api/v1/webhook-endpoints/{made['id']}/deliveries", headers=admin.headers).get_json()
    assert [d["status"] for d in done["data"]] == ["succeeded"]

    assert client.post("/api/v1/webhook-deliveries/whd_missing/redeliver",
                       headers=admin.headers).status_code == 404
    assert client.get("/api/v1/webhook-endpoints/whe_missing/deliveries",
                      headers=admin.headers).status_code == 404
