"""The Alipay adapter against the sandbox's imitation of Alipay's gateway, served for real on 127.0.0.1,
and then a whole payment through KnowPay itself.

Keys come from the sandbox's `demo_env`. python-alipay-sdk, Alipay's client library, checks the sandbox
independently of our adapter (its notifications and answers), and test code written from Alipay's
documentation signs the forged notifications; the adapter under test never signs its own inputs.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import requests
from alipay import AliPay
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from sqlalchemy import func, select
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from knowpay.channels import Registry
from knowpay.channels.alipay import AlipayChannel, from_settings
from knowpay.channels.base import Created, PaymentRequest, RefundRequest
from knowpay.config import load_settings
from knowpay.domain.clock import SystemClock
from knowpay.domain.errors import ChannelUnavailable
from knowpay.outbox.models import OutboxEvent
from knowpay.payments.models import ChannelNotification
from knowpay.sandbox.app import create_sandbox_app
from knowpay.sandbox.gateways.alipay import DEMO_APP_ID, DEMO_SELLER_ID, demo_env
from knowpay.web import create_app
from tests.conftest import FAST_PASSWORDS

BEIJING_DAY = timedelta(hours=8)


def serve(app: Callable) -> tuple[str, Callable[[], None]]:
    """Serve a WSGI app on a free 127.0.0.1 port in a thread → (base URL, stop)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        thread.join(5)

    return f"http://127.0.0.1:{server.server_port}", stop


class Later:
    """A WSGI app known only after its server's port is: the URL goes into its own settings."""

    app: Callable | None = None

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


@dataclass
class Receiver:
    """KnowPay's /notify/alipay, played by the test: records each POST, answers `success`."""

    url: str = ""
    received: list[bytes] = field(default_factory=list)

    def __call__(self, environ, start_response):
        self.received.append(Request(environ).get_data())
        return Response("success", content_type="text/plain")(environ, start_response)


@dataclass
class AlipaySandbox:
    url: str
    app: object
    env: dict[str, str]
    channel: AlipayChannel

    @property
    def gateway(self):
        return self.app.extensions["sandbox"]

    def deliver_due(self) -> int:
        return self.gateway.notifier.deliver_due()

    def trade(self, out_trade_no: str):
        return self.gateway.store.find_trade(f"alipay-{DEMO_APP_ID}", out_trade_no, now=time.time())

    def pay(self, code_url: str) -> str:
        """What the buyer does: open the cashier the QR code points to and press Pay → the trade number."""
        trade_no = urlsplit(code_url).path.rsplit("/", 1)[-1]
        page = requests.get(code_url, timeout=5)
        assert page.status_code == 200 and "¥" in page.text
        assert requests.post(f"{self.url}/pay/{trade_no}/pay", timeout=5).status_code == 200
        return trade_no

    def key(self, name: str):
        return serialization.load_pem_private_key(Path(self.env[name]).read_bytes(), password=None)

    def sdk(self) -> AliPay:
        """Alipay's Python client library, configured with the demo keys and pointed at the sandbox."""
        client = AliPay(appid=DEMO_APP_ID, app_private_key_string=Path(self.env["KNOWPAY_ALIPAY_PRIVATE_KEY"]).read_text(),
                        alipay_public_key_string=Path(self.env["KNOWPAY_ALIPAY_PUBLIC_KEY"]).read_text(),
                        sign_type="RSA2")
        client._gateway = self.env["KNOWPAY_ALIPAY_GATEWAY"]  # the library has no setting for a custom gateway
        return client


@pytest.fixture
def alipay_sandbox(tmp_path) -> Iterator[AlipaySandbox]:
    later = Later()
    url, stop_server = serve(later)
    folder = tmp_path / "sandbox"
    env = demo_env(folder, sandbox_url=url)
    settings = load_settings({**env, "KNOWPAY_INSTANCE_PATH": str(folder)})
    later.app = create_sandbox_app(settings, notify_sync=True)
    yield AlipaySandbox(url, later.app, env, from_settings(settings))
    stop_server()
    later.app.extensions["sandbox"].notifier.stop()
    later.app.extensions["sandbox"].store.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    recorder = Receiver()
    recorder.url, stop = serve(recorder)
    yield recorder
    stop()


_numbers = iter(range(1, 1_000_000))


def payment(receiver: Receiver, *, amount: int = 9900, method: str | None = None,
            installments: int | None = None) -> PaymentRequest:
    return PaymentRequest(
        payment_id=f"pay_alipay{next(_numbers):04d}", amount=amount, currency="cny",
        subject="Python 进阶课 · Advanced Python", method=method, notify_url=f"{receiver.url}/notify/alipay",
        return_url="http://127.0.0.1:8000/checkout/done",
        expires_at=datetime.now(UTC).replace(tzinfo=None) + timedelta(minutes=15), installments=installments)


def refund(request: PaymentRequest, refund_id: str, amount: int) -> RefundRequest:
    return RefundRequest(refund_id=refund_id, payment_id=request.payment_id, channel_trade_no=None, amount=amount,
                         payment_amount=request.amount, currency="cny", reason="changed my mind",
                         notify_url=request.notify_url)


def paid(sandbox: AlipaySandbox, receiver: Receiver, **options) -> tuple[PaymentRequest, str]:
    request = payment(receiver, **options)
    trade_no = sandbox.pay(sandbox.channel.create(request).action.data["code_url"])
    return request, trade_no


def fields_of(body: bytes) -> dict[str, str]:
    return dict(parse_qsl(body.decode("ascii"), keep_blank_values=True))


# -- the adapter and the sandbox -------------------------------------------------------------------------

def test_precreate_answers_a_qr_code_on_the_pay_page_and_keeps_the_installments(alipay_sandbox, receiver):
    request = payment(receiver, installments=6)
    created = alipay_sandbox.channel.create(request)
    assert created.action.type == "qr_code"
    assert created.action.data["code_url"].startswith(f"{alipay_sandbox.url}/pay/")
    trade = alipay_sandbox.trade(request.payment_id)
    assert (trade.channel, trade.amount, trade.currency) == ("alipay", 9900, "CNY")
    assert json.loads(trade.extra)["extend_params"] == {"hb_fq_num": "6", "hb_fq_seller_percent": "0"}
    assert alipay_sandbox.channel.query(request.payment_id).status == "pending"
    # The same request again is the same trade and the same QR code, as Alipay does it.
    assert alipay_sandbox.channel.create(request).action == created.action


def test_paying_sends_alipays_signed_notification_and_the_trade_reads_paid(alipay_sandbox, receiver):
    request, trade_no = paid(alipay_sandbox, receiver)
    assert alipay_sandbox.deliver_due() == 1
    [body] = receiver.received
    fields = fields_of(body)
    assert (fields["notify_type"], fields["trade_status"], fields["total_amount"]) == (
        "trade_status_sync", "TRADE_SUCCESS", "99.00")
    assert (fields["app_id"], fields["seller_id"], fields["sign_type"]) == (DEMO_APP_ID, DEMO_SELLER_ID, "RSA2")
    # Alipay's client library, not our code, agrees that Alipay signed it.
    signature = fields.pop("sign")
    assert alipay_sandbox.sdk().verify(dict(fields), signature)

    note = alipay_sandbox.channel.parse_notification({}, body)
    assert (note.kind, note.payment_id, note.status, note.amount, note.currency) == (
        "payment", request.payment_id, "succeeded", 9900, "cny")
    assert note.channel_trade_no == trade_no and note.event_id == fields["notify_id"]
    status = alipay_sandbox.channel.query(request.payment_id)
    assert (status.status, status.amount, status.channel_trade_no) == ("succeeded", 9900, trade_no)
    assert status.paid_at is not None and abs(status.paid_at - datetime.now(UTC).replace(tzinfo=None)) < timedelta(minutes=1)
    # Closing a paid trade does not close it: KnowPay hears it succeeded and captures it.
    assert alipay_sandbox.channel.close(request.payment_id).status == "succeeded"


def test_closing_an_unpaid_trade_closes_it_and_the_pay_page_refuses(alipay_sandbox, receiver):
    request = payment(receiver)
    code_url = alipay_sandbox.channel.create(request).action.data["code_url"]
    assert alipay_sandbox.channel.close(request.payment_id).status == "closed"
    assert alipay_sandbox.channel.query(request.payment_id).status == "closed"
    trade_no = code_url.rsplit("/", 1)[-1]
    requests.post(f"{alipay_sandbox.url}/pay/{trade_no}/pay", timeout=5)
    assert alipay_sandbox.deliver_due() == 0
    assert alipay_sandbox.channel.query("pay_nobodyknows").status == "not_found"


@pytest.mark.parametrize("method", ["page", "wap"])
def test_page_and_wap_go_through_the_gateway_to_the_pay_page(alipay_sandbox, receiver, method):
    request = payment(receiver, method=method)
    url = alipay_sandbox.channel.create(request).action.data["url"]
    assert url.startswith(alipay_sandbox.env["KNOWPAY_ALIPAY_GATEWAY"] + "?")
    visit = requests.get(url, timeout=5, allow_redirects=False)
    assert visit.status_code == 302
    trade = alipay_sandbox.trade(request.payment_id)
    assert visit.headers["Location"].endswith(f"/pay/{trade.trade_no}")
    assert json.loads(trade.extra)["product_code"] == {"page": "FAST_INSTANT_TRADE_PAY", "wap": "QUICK_WAP_WAY"}[method]
    tampered = url.replace("99.00", "0.01")
    assert tampered != url
    refused = requests.get(tampered, timeout=5, allow_redirects=False)
    assert refused.status_code == 400 and "isv.invalid-signature" in refused.text


def test_a_refund_is_idempotent_on_its_request_number_and_an_over_refund_is_refused(alipay_sandbox, receiver):
    request, trade_no = paid(alipay_sandbox, receiver)
    first = alipay_sandbox.channel.refund(refund(request, "ref_alipay_a", 3000))
    again = alipay_sandbox.channel.refund(refund(request, "ref_alipay_a", 3000))
    assert (first.status, again.status) == ("succeeded", "succeeded")
    assert alipay_sandbox.trade(request.payment_id).amount_refunded == 3000  # refunded once
    assert alipay_sandbox.channel.query_refund(refund(request, "ref_alipay_a", 3000)).status == "succeeded"
    assert alipay_sandbox.channel.query_refund(refund(request, "ref_alipay_z", 100)).status == "pending"

    over = alipay_sandbox.channel.refund(refund(request, "ref_alipay_b", 7000))
    assert (over.status, over.failure_code) == ("failed", "refund_exceeds_payment")
    assert alipay_sandbox.trade(request.payment_id).amount_refunded == 3000

    second = alipay_sandbox.channel.refund(refund(request, "ref_alipay_c", 2000))
    assert second.status == "succeeded"
    assert alipay_sandbox.deliver_due() == 3  # the payment and each refund, sent side by side
    notes = [alipay_sandbox.channel.parse_notification({}, body) for body in receiver.received]
    # refund_fee on the wire is the trade's refunded total; each refund still reads as its own amount.
    assert sorted((n.kind, n.refund_id or "", n.amount, n.channel_trade_no) for n in notes) == [
        ("payment", "", 9900, trade_no), ("refund", "ref_alipay_a", 3000, trade_no),
        ("refund", "ref_alipay_c", 2000, trade_no)]


def test_the_bill_round_trips_through_alipays_zip(alipay_sandbox, receiver):
    request, trade_no = paid(alipay_sandbox, receiver)
    alipay_sandbox.channel.refund(refund(request, "ref_alipay_bill", 2500))
    day = (datetime.now(UTC) + BEIJING_DAY).date().isoformat()
    data = alipay_sandbox.channel.fetch_bill(day)
    lines = alipay_sandbox.channel.parse_bill(data)
    assert [(l.kind, l.payment_id, l.channel_trade_no, l.amount, l.fee, l.refund_id) for l in lines] == [
        ("payment", request.payment_id, trade_no, 9900, 59, None),
        ("refund", request.payment_id, trade_no, 2500, 15, "ref_alipay_bill")]


def test_a_bill_link_works_once_handed_out_and_cannot_be_forged(alipay_sandbox):
    day = (datetime.now(UTC) + BEIJING_DAY).date().isoformat()
    answer = alipay_sandbox.sdk().server_api("alipay.data.dataservice.bill.downloadurl.query",
                                             {"bill_type": "trade", "bill_date": day})
    url = answer["bill_download_url"]
    assert requests.get(url, timeout=5).status_code == 200
    assert requests.get(url.replace("token=", "token=0"), timeout=5).status_code == 403


def test_alipays_own_client_library_is_answered_and_verified(alipay_sandbox, receiver):
    """python-alipay-sdk signs its GET request itself and checks the sandbox's signed answer itself."""
    request, trade_no = paid(alipay_sandbox, receiver)
    answer = alipay_sandbox.sdk().api_alipay_trade_query(out_trade_no=request.payment_id)
    assert (answer["code"], answer["trade_status"], answer["trade_no"], answer["total_amount"]) == (
        "10000", "TRADE_SUCCESS", trade_no, "99.00")


def test_a_request_signed_with_the_wrong_key_is_refused_at_the_door(alipay_sandbox, receiver, tmp_path):
    env = demo_env(tmp_path / "elsewhere", sandbox_url=alipay_sandbox.url)  # another app key pair
    settings = load_settings({**alipay_sandbox.env, "KNOWPAY_ALIPAY_PRIVATE_KEY": env["KNOWPAY_ALIPAY_PRIVATE_KEY"],
                              "KNOWPAY_INSTANCE_PATH": str(tmp_path)})
    with pytest.raises(ChannelUnavailable, match="isv.invalid-signature"):
        from_settings(settings).create(payment(receiver))


def test_answers_not_signed_by_alipays_key_are_not_believed(alipay_sandbox, receiver, tmp_path):
    env = demo_env(tmp_path / "elsewhere", sandbox_url=alipay_sandbox.url)
    settings = load_settings({**alipay_sandbox.env, "KNOWPAY_ALIPAY_PUBLIC_KEY": env["KNOWPAY_SANDBOX_ALIPAY_APP_PUBLIC_KEY"],
                              "KNOWPAY_INSTANCE_PATH": str(tmp_path)})
    with pytest.raises(ChannelUnavailable, match="KNOWPAY_ALIPAY_PUBLIC_KEY"):
        from_settings(settings).create(payment(receiver))


def test_an_unreachable_gateway_is_unavailable(alipay_sandbox, receiver, tmp_path):
    settings = load_settings({**alipay_sandbox.env, "KNOWPAY_ALIPAY_GATEWAY": "http://127.0.0.1:9/gateway.do",
                              "KNOWPAY_INSTANCE_PATH": str(tmp_path)})
    with pytest.raises(ChannelUnavailable, match="could not be reached"):
        from_settings(settings).query("pay_alipay_x")


def test_a_sandbox_without_alipay_keys_starts_without_alipay(tmp_path):
    app = create_sandbox_app(load_settings({"KNOWPAY_INSTANCE_PATH": str(tmp_path)}), notify_sync=True)
    try:
        assert "alipay" in app.extensions["sandbox"].notifier.formats
        assert app.test_client().post("/alipay/gateway.do").status_code == 404
    finally:
        app.extensions["sandbox"].store.close()


# -- end to end, through KnowPay ----------------------------------------------------------------------

class AlipayWithHook:
    """The real adapter; `before_create_returns`, when set, runs after Alipay answered create() and before
    KnowPay hears that answer (to have the buyer pay and Alipay notify in between)."""

    def __init__(self, adapter: AlipayChannel) -> None:
        self.adapter = adapter
        self.before_create_returns: Callable[[Created], None] | None = None

    def __getattr__(self, name: str):
        return getattr(self.adapter, name)

    def create(self, request: PaymentRequest) -> Created:
        created = self.adapter.create(request)
        if self.before_create_returns is not None:
            self.before_create_returns(created)
        return created


@pytest.fixture
def alipay_channel(alipay_sandbox) -> AlipayWithHook:
    return AlipayWithHook(alipay_sandbox.channel)


@pytest.fixture
def app(settings, db, alipay_channel):
    """KnowPay with only Alipay, served on 127.0.0.1 so the sandbox's notifications reach /notify/alipay."""
    later = Later()
    url, stop = serve(later)
    later.app = create_app(settings.with_overrides(base_url=url), db=db, clock=SystemClock(),
                           config={"TESTING": True, **FAST_PASSWORDS},
                           channels=Registry({"alipay": alipay_channel}))
    yield later.app
    stop()


def _order(client, buyer, product_id) -> dict:
    made = client.post("/api/v1/orders", headers=buyer.headers, json={"items": [{"product_id": product_id}]})
    assert made.status_code == 201, made.get_json()
    return made.get_json()


def _pay_with_alipay(client, buyer, order_id, **extra) -> dict:
    made = client.post(f"/api/v1/orders/{order_id}/payments", headers=buyer.headers,
                       json={"channel": "alipay", **extra})
    assert made.status_code == 201, made.get_json()
    return made.get_json()


def _get(client, buyer, path: str) -> dict:
    return client.get(f"/api/v1/{path}", headers=buyer.headers).get_json()


def _notes(ctx) -> list[ChannelNotification]:
    with ctx.db.transaction(write=False) as session:
        return list(session.scalars(select(ChannelNotification).order_by(ChannelNotification.received_at)))


def _events(ctx, type_: str) -> int:
    with ctx.db.transaction(write=False) as session:
        return session.scalar(select(func.count()).select_from(OutboxEvent).where(OutboxEvent.type == type_))


def test_an_order_paid_with_alipay_end_to_end(client, ctx, buyer, published_product, alipay_sandbox):
    order = _order(client, buyer, published_product["id"])
    pay = _pay_with_alipay(client, buyer, order["id"], installments=3)
    assert (pay["status"], pay["channel"], pay["method"]) == ("requires_action", "alipay", "qr")
    assert pay["action"]["type"] == "qr_code"
    assert json.loads(alipay_sandbox.trade(pay["id"]).extra)["extend_params"]["hb_fq_num"] == "3"

    trade_no = alipay_sandbox.pay(pay["action"]["code_url"])
    assert alipay_sandbox.deliver_due() == 1  # KnowPay answered exactly `success`

    got = _get(client, buyer, f"payments/{pay['id']}")
    assert (got["status"], got["channel_trade_no"]) == ("succeeded", trade_no)
    assert _get(client, buyer, f"orders/{order['id']}")["status"] == "paid"
    assert [(n.status, n.event_id) for n in _notes(ctx)] == [
        ("processed", alipay_sandbox.gateway.store.deliveries(trade_no)[0].notify_id)]


def _signed_by_alipay(sandbox: AlipaySandbox, fields: dict[str, str]) -> dict[str, str]:
    """Signed as Alipay's documentation says, with the sandbox's "Alipay" key, by test code."""
    content = "&".join(f"{k}={v}" for k, v in sorted(fields.items()) if k not in ("sign", "sign_type"))
    raw = sandbox.key("KNOWPAY_SANDBOX_ALIPAY_PRIVATE_KEY").sign(content.encode(), padding.PKCS1v15(), hashes.SHA256())
    return {**fields, "sign_type": "RSA2", "sign": base64.b64encode(raw).decode()}


def test_forged_or_mismatched_notifications_change_nothing(client, ctx, buyer, published_product, alipay_sandbox):
    order = _order(client, buyer, published_product["id"])
    pay = _pay_with_alipay(client, buyer, order["id"])
    fields = {"notify_time": "2026-11-25 12:00:01", "notify_type": "trade_status_sync", "notify_id": "n1",
              "app_id": DEMO_APP_ID, "seller_id": DEMO_SELLER_ID, "out_trade_no": pay["id"],
              "trade_no": "2026112522001400001000000001", "trade_status": "TRADE_SUCCESS",
              "total_amount": "99.00", "gmt_payment": "2026-11-25 12:00:00", "charset": "utf-8", "version": "1.0"}
    tampered = _signed_by_alipay(alipay_sandbox, fields) | {"total_amount": "0.01"}
    cases = [
        (_signed_by_alipay(alipay_sandbox, fields | {"total_amount": "1.00"}), "amount 100 does not match"),
        (_signed_by_alipay(alipay_sandbox, fields | {"app_id": "9021000100000002"}), "app_id"),
        (_signed_by_alipay(alipay_sandbox, fields | {"seller_id": "2088721000000002"}), "seller_id"),
        (tampered, "signature"),
    ]
    for forged, _ in cases:
        answer = client.post("/notify/alipay", data=urlencode(forged),
                             content_type="application/x-www-form-urlencoded; charset=utf-8")
        assert (answer.status_code, answer.get_data(as_text=True)) == (200, "failure")
    notes = _notes(ctx)
    assert [n.status for n in notes] == ["rejected"] * len(cases)
    for note, (_, reason) in zip(notes, cases, strict=True):
        assert reason in note.reason
    assert _get(client, buyer, f"payments/{pay['id']}")["status"] == "requires_action"
    assert _get(client, buyer, f"orders/{order['id']}")["status"] == "pending"
    assert _events(ctx, "payment.succeeded") == 0


def test_a_duplicate_notification_captures_once(client, ctx, buyer, published_product, alipay_sandbox):
    order = _order(client, buyer, published_product["id"])
    pay = _pay_with_alipay(client, buyer, order["id"])
    trade_no = alipay_sandbox.pay(pay["action"]["code_url"])
    assert alipay_sandbox.deliver_due() == 1
    [delivery] = alipay_sandbox.gateway.store.deliveries(trade_no)
    body, headers = alipay_sandbox.gateway.notifier.formats["alipay"].render(delivery, time.time())
    again = client.post("/notify/alipay", data=body, headers=headers)
    assert (again.status_code, again.get_data(as_text=True)) == (200, "success")
    assert sorted(n.status for n in _notes(ctx)) == ["duplicate", "processed"]
    assert _events(ctx, "payment.succeeded") == 1
    assert _get(client, buyer, f"orders/{order['id']}")["status"] == "paid"


def test_a_notification_that_arrives_before_create_returns_still_captures(
        client, ctx, buyer, published_product, alipay_sandbox, alipay_channel):
    def buyer_pays_at_once(created: Created) -> None:
        alipay_sandbox.pay(created.action.data["code_url"])
        assert alipay_sandbox.deliver_due() == 1

    alipay_channel.before_create_returns = buyer_pays_at_once
    order = _order(client, buyer, published_product["id"])
    pay = _pay_with_alipay(client, buyer, order["id"])
    assert pay["status"] == "succeeded"
    assert pay["action"]["type"] == "qr_code"  # the answer is still recorded
    assert _get(client, buyer, f"orders/{order['id']}")["status"] == "paid"
    assert [n.status for n in _notes(ctx)] == ["processed"]
