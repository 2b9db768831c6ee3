"""WeChat Pay v3 end to end: the sandbox's imitation served on 127.0.0.1 and driven through the production
adapter, then KnowPay itself, whose /notify/wechat is fed the callbacks the sandbox renders.

Keys come from `demo_env`, as `knowpay demo` makes them. Where a test needs a callback the sandbox would never
send (a wrong amount, a stale timestamp), WeChat Pay's side is played by the test code of the unit tests,
written from WeChat Pay's documentation, never by the adapter.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy import func, select
from wechatpayv3 import WeChatPay, WeChatPayType
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from knowpay.channels import Registry
from knowpay.channels.base import PaymentRequest, RefundRequest
from knowpay.channels.wechat import BEIJING, WeChatPayChannel, from_settings
from knowpay.config import Settings
from knowpay.domain.clock import SystemClock
from knowpay.domain.errors import ChannelUnavailable, InvalidRequest
from knowpay.domain.money import apply_rate_bps
from knowpay.ledger.models import JournalTransaction
from knowpay.outbox.models import OutboxEvent
from knowpay.payments.models import ChannelNotification
from knowpay.sandbox.app import create_sandbox_app
from knowpay.sandbox.gateways.wechat import demo_env
from knowpay.sandbox.store import Trade
from tests.conftest import FAST_PASSWORDS
from tests.unit.test_wechat_channel import transaction, wechat_callback


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
    """KnowPay's /notify/wechat, played by the test: records each POST, answers from a script (else 204)."""

    url: str = ""
    answers: list[tuple[int, str]] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def __call__(self, environ, start_response):
        request = Request(environ)
        self.received.append((dict(request.headers), request.get_data()))
        status, body = self.answers.pop(0) if self.answers else (204, "")
        return Response(body, status=status, content_type="application/json")(environ, start_response)


@dataclass
class WeChatSandbox:
    url: str
    app: object
    env: dict[str, str]
    channel: WeChatPayChannel

    @property
    def gateway(self):
        return self.app.extensions["sandbox"]

    def trade(self, out_trade_no: str) -> Trade:
        found = self.gateway.store.find_trade("wechat:" + self.env["KNOWPAY_WECHAT_MCH_ID"], out_trade_no,
                                              now=time.time())
        assert found is not None
        return found

    def pay(self, out_trade_no: str, result: str = "pay") -> None:
        """The buyer presses Pay (or Decline) on the shared pay page."""
        answer = requests.post(f"{self.url}/pay/{self.trade(out_trade_no).trade_no}/{result}",
                               allow_redirects=False, timeout=5)
        assert answer.status_code == 303, answer.text

    def confirm_jsapi(self, params: dict, **extra) -> requests.Response:
        """The WeChat app, once the buyer confirms in the cashier getBrandWCPayRequest opened."""
        return requests.post(f"{self.url}/wechat/jsapi/confirm", json={**params, **extra}, timeout=5)

    def callbacks(self, out_trade_no: str) -> list[tuple[dict[str, str], bytes]]:
        """Every callback the sandbox owes for this trade, rendered now as it would send them."""
        wire = self.gateway.notifier.formats["wechat"]
        deliveries = self.gateway.store.deliveries(self.trade(out_trade_no).trade_no)
        rendered = [wire.render(delivery, time.time()) for delivery in deliveries]
        return [(headers, body) for body, headers in rendered]

    def deliver_due(self, *, later: float = 0.0) -> int:
        return self.gateway.notifier.deliver_due(now=time.time() + later)

    def platform_key(self) -> rsa.RSAPrivateKey:
        return serialization.load_pem_private_key(
            Path(self.env["KNOWPAY_SANDBOX_WECHAT_PRIVATE_KEY"]).read_bytes(), password=None)

    def wechatpayv3(self) -> WeChatPay:
        """WeChat Pay's maintained Python client, configured as a merchant would configure it."""
        env = self.env
        return WeChatPay(wechatpay_type=WeChatPayType.NATIVE, mchid=env["KNOWPAY_WECHAT_MCH_ID"],
                         private_key=Path(env["KNOWPAY_WECHAT_PRIVATE_KEY"]).read_text(),
                         cert_serial_no=env["KNOWPAY_WECHAT_CERT_SERIAL"], appid=env["KNOWPAY_WECHAT_APP_ID"],
                         apiv3_key=env["KNOWPAY_WECHAT_APIV3_KEY"],
                         public_key=Path(env["KNOWPAY_WECHAT_PUBLIC_KEY"]).read_text(),
                         public_key_id=env["KNOWPAY_WECHAT_PUBLIC_KEY_ID"])


def _channel_settings(env: dict[str, str]) -> dict[str, str]:
    return {name[len("KNOWPAY_"):].lower(): value for name, value in env.items()}


@pytest.fixture(scope="module")
def wechat_env(tmp_path_factory) -> dict[str, str]:
    # One set of keys for the module: RSA key generation is the slow part.
    return demo_env(tmp_path_factory.mktemp("wechat-instance"))


@pytest.fixture
def wechat(tmp_path, wechat_env) -> Iterator[WeChatSandbox]:
    # The gateway builds its pay URLs from the address it was called at, so its port need not be known first.
    settings = Settings(instance_path=tmp_path / "sandbox", channel=_channel_settings(wechat_env))
    app = create_sandbox_app(settings, notify_sync=True)
    url, stop = serve(app)
    channel = from_settings(Settings(channel={**_channel_settings(wechat_env), "wechat_gateway": url}))
    assert channel is not None
    yield WeChatSandbox(url, app, wechat_env, channel)
    stop()
    app.extensions["sandbox"].notifier.stop()
    app.extensions["sandbox"].store.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    recorder = Receiver()
    recorder.url, stop = serve(recorder)
    yield recorder
    stop()


_serial = iter(range(1, 1_000_000))


def _order(receiver: Receiver | None = None, *, method: str | None = None, amount: int = 9900,
           openid: str | None = None) -> PaymentRequest:
    notify_url = (receiver.url if receiver else "http://127.0.0.1:9") + "/notify/wechat"
    return PaymentRequest(payment_id=f"pay_{int(time.time() * 1000)}{next(_serial):06d}", amount=amount,
                          currency="cny", subject="Python 数据分析, 第一期", method=method, notify_url=notify_url,
                          return_url="http://127.0.0.1:8000/checkout", openid=openid,
                          expires_at=datetime.now(UTC).replace(tzinfo=None) + timedelta(minutes=15))


def _refund(order: PaymentRequest, amount: int, refund_id: str, receiver: Receiver) -> RefundRequest:
    return RefundRequest(refund_id=refund_id, payment_id=order.payment_id, channel_trade_no=None,
                         amount=amount, payment_amount=order.amount, currency="cny", reason="七天无理由",
                         notify_url=receiver.url + "/notify/wechat")


# -- the adapter against the sandbox --------------------------------------------------------------------

def test_a_native_order_is_paid_on_the_pay_page_and_called_back(wechat, receiver):
    order = _order(receiver)
    created = wechat.channel.create(order)
    code_url = created.action.data["code_url"]
    assert created.action.type == "qr_code" and code_url.startswith(f"{wechat.url}/pay/")
    assert requests.get(code_url, timeout=5).status_code == 200  # the page a phone opens from the QR code

    wechat.pay(order.payment_id)
    assert wechat.deliver_due() == 1
    [(headers, body)] = receiver.received
    note = wechat.channel.parse_notification(headers, body)
    assert (note.kind, note.payment_id, note.status, note.amount, note.currency) == (
        "payment", order.payment_id, "succeeded", 9900, "cny")
    assert note.channel_trade_no == wechat.trade(order.payment_id).trade_no
    # WeChat Pay's own Python client reads the sandbox's callback too.
    resource = wechat.wechatpayv3().callback(headers, body)["resource"]
    assert (resource["out_trade_no"], resource["trade_state"], resource["amount"]["total"]) == (
        order.payment_id, "SUCCESS", 9900)


def test_an_h5_order_opens_the_cashier_which_returns_the_buyer_and_calls_back(wechat, receiver):
    from urllib.parse import parse_qs, urlsplit

    with pytest.raises(InvalidRequest):  # WeChat Pay opens H5 payments only for the buyer's address
        wechat.channel.create(_order(receiver, method="h5"))
    order = dataclasses.replace(_order(receiver, method="h5"), client_ip="203.0.113.7")
    created = wechat.channel.create(order)
    assert created.action.type == "redirect" and created.extra["h5_url"].startswith(f"{wechat.url}/pay/")
    cashier = urlsplit(created.action.data["url"])
    assert parse_qs(cashier.query)["redirect_url"] == [order.return_url]
    page = requests.get(created.action.data["url"], timeout=5)
    assert page.status_code == 200 and "redirect_url=" in page.text  # the Pay button keeps the way back
    paid = requests.post(f"{wechat.url}{cashier.path}/pay", params={"redirect_url": order.return_url},
                         allow_redirects=False, timeout=5)
    assert paid.status_code == 303 and paid.headers["Location"] == order.return_url

    assert wechat.deliver_due() == 1
    [(headers, body)] = receiver.received
    note = wechat.channel.parse_notification(headers, body)
    assert (note.status, note.details["trade_type"]) == ("succeeded", "MWEB")


def test_an_h5_order_without_the_scene_is_refused_by_the_sandbox(wechat):
    with pytest.raises(InvalidRequest, match="payer_client_ip"):
        wechat.channel._expect(wechat.channel._call("POST", "/v3/pay/transactions/h5", payload={
            "appid": wechat.env["KNOWPAY_WECHAT_APP_ID"], "mchid": wechat.env["KNOWPAY_WECHAT_MCH_ID"],
            "description": "课程", "out_trade_no": "pay_noscene01", "notify_url": "http://127.0.0.1:9/notify",
            "amount": {"total": 100, "currency": "CNY"}}))


def test_a_callback_not_acknowledged_is_sent_again_freshly_signed(wechat, receiver):
    receiver.answers.append((500, json.dumps({"code": "FAIL", "message": "busy"})))
    order = _order(receiver)
    wechat.channel.create(order)
    wechat.pay(order.payment_id)
    assert wechat.deliver_due() == 0
    assert wechat.deliver_due(later=2) == 1
    (first_headers, first_body), (second_headers, second_body) = receiver.received
    assert json.loads(first_body)["id"] == json.loads(second_body)["id"]
    assert first_headers["Wechatpay-Nonce"] != second_headers["Wechatpay-Nonce"]
    assert json.loads(first_body)["resource"]["nonce"] != json.loads(second_body)["resource"]["nonce"]
    for headers, body in receiver.received:
        assert wechat.channel.parse_notification(headers, body).status == "succeeded"


def test_a_declined_payment_is_called_back_as_failed(wechat, receiver):
    order = _order(receiver)
    wechat.channel.create(order)
    wechat.pay(order.payment_id, "decline")
    wechat.deliver_due()
    note = wechat.channel.parse_notification(*receiver.received[0])
    assert (note.status, note.details["code"]) == ("failed", "wechat_payerror")
    assert wechat.channel.query(order.payment_id).status == "failed"


def test_a_jsapi_order_gets_one_prepay_id_and_front_end_parameters_signed_by_us(wechat):
    order = _order(method="jsapi", openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o")
    params = wechat.channel.create(order).action.to_json()["params"]
    again = wechat.channel.create(order).action.to_json()["params"]
    assert params["package"] == again["package"] and params["package"].startswith("prepay_id=wx")
    merchant_public = serialization.load_pem_public_key(
        Path(wechat.env["KNOWPAY_SANDBOX_WECHAT_MERCHANT_PUBLIC_KEY"]).read_bytes())
    message = f"{params['appId']}\n{params['timeStamp']}\n{params['nonceStr']}\n{params['package']}\n"
    merchant_public.verify(base64.b64decode(params["paySign"]), message.encode(), padding.PKCS1v15(),
                           hashes.SHA256())
    assert json.loads(wechat.trade(order.payment_id).extra)["openid"] == "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"


OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"


def test_the_wechat_app_pays_a_jsapi_order_with_the_parameters_we_signed_and_it_is_called_back(wechat,
                                                                                                receiver):
    order = _order(receiver, method="jsapi", openid=OPENID)
    params = wechat.channel.create(order).action.to_json()["params"]
    answer = wechat.confirm_jsapi(params, openid=OPENID)
    assert (answer.status_code, answer.json()) == (200, {"err_msg": "get_brand_wcpay_request:ok"})
    assert wechat.deliver_due() == 1
    [(headers, body)] = receiver.received
    note = wechat.channel.parse_notification(headers, body)
    assert (note.payment_id, note.status, note.details["trade_type"]) == (order.payment_id, "succeeded", "JSAPI")
    assert wechat.wechatpayv3().callback(headers, body)["resource"]["payer"]["openid"] == OPENID
    assert wechat.confirm_jsapi(params).json()["err_msg"] == "get_brand_wcpay_request:ok"  # again: no change
    assert wechat.deliver_due() == 0


def test_the_wechat_app_refuses_parameters_not_signed_for_this_trade_and_payer(wechat):
    order = _order(method="jsapi", openid=OPENID)
    params = wechat.channel.create(order).action.to_json()["params"]
    refused = [
        wechat.confirm_jsapi({**params, "nonceStr": params["nonceStr"] + "0"}),  # paySign no longer covers it
        wechat.confirm_jsapi({**params, "appId": "wx0000000000000000"}),
        wechat.confirm_jsapi({**params, "signType": "MD5"}),
        wechat.confirm_jsapi({k: v for k, v in params.items() if k != "paySign"}),
        wechat.confirm_jsapi(wechat.channel.jsapi_params("wx_not_a_prepay_id")),  # signed, but no such trade
        wechat.confirm_jsapi(params, openid="oSomeoneElse00000000000000000"),  # another WeChat user
    ]
    for answer in refused:
        assert answer.status_code == 400 and answer.json()["err_msg"] == "get_brand_wcpay_request:fail"
        assert answer.json()["err_desc"]
    assert wechat.channel.query(order.payment_id).status == "pending"


def test_the_buyer_leaving_the_cashier_changes_nothing_and_a_decline_fails_the_trade(wechat, receiver):
    order = _order(receiver, method="jsapi", openid=OPENID)
    params = wechat.channel.create(order).action.to_json()["params"]
    left = wechat.confirm_jsapi(params, result="cancel")
    assert (left.status_code, left.json()["err_msg"]) == (200, "get_brand_wcpay_request:cancel")
    assert wechat.channel.query(order.payment_id).status == "pending" and wechat.deliver_due() == 0
    declined = wechat.confirm_jsapi(params, result="decline")
    assert declined.json()["err_msg"] == "get_brand_wcpay_request:fail"
    assert wechat.channel.query(order.payment_id).status == "failed"
    assert wechat.deliver_due() == 1
    assert wechat.channel.parse_notification(*receiver.received[0]).status == "failed"


def test_query_and_close_follow_the_trade_and_a_paid_trade_stays_paid(wechat):
    paid, unpaid = _order(), _order()
    for order in (paid, unpaid):
        wechat.channel.create(order)
    assert wechat.channel.query(paid.payment_id).status == "pending"
    wechat.pay(paid.payment_id)
    status = wechat.channel.query(paid.payment_id)
    assert (status.status, status.amount, status.currency) == ("succeeded", 9900, "cny")
    assert status.channel_trade_no == wechat.trade(paid.payment_id).trade_no and status.paid_at is not None
    assert wechat.channel.close(paid.payment_id).status == "succeeded"
    assert wechat.channel.close(unpaid.payment_id).status == "closed"
    assert wechat.channel.query("pay_nobodyeverorderedthis00").status == "not_found"


def test_refunds_are_idempotent_on_out_refund_no_and_called_back(wechat, receiver):
    order = _order(receiver)
    wechat.channel.create(order)
    wechat.pay(order.payment_id)
    first = wechat.channel.refund(_refund(order, 3000, "ref_0000000000000000000001", receiver))
    again = wechat.channel.refund(_refund(order, 3000, "ref_0000000000000000000001", receiver))
    assert (first.status, again.status) == ("pending", "succeeded")  # PROCESSING at first, as WeChat answers
    assert first.channel_refund_no == again.channel_refund_no is not None
    assert wechat.trade(order.payment_id).amount_refunded == 3000  # refunded once
    queried = wechat.channel.query_refund(_refund(order, 3000, "ref_0000000000000000000001", receiver))
    assert queried.status == "succeeded"
    too_much = wechat.channel.refund(_refund(order, 9000, "ref_0000000000000000000002", receiver))
    assert (too_much.status, too_much.failure_code) == ("failed", "invalid_request")
    never_asked = wechat.channel.query_refund(_refund(order, 1, "ref_0000000000000000000003", receiver))
    assert never_asked.status == "pending"

    assert wechat.deliver_due() == 2  # the payment's callback and the refund's
    notes = [wechat.channel.parse_notification(headers, body) for headers, body in receiver.received]
    refund_note = next(n for n in notes if n.kind == "refund")
    assert (refund_note.refund_id, refund_note.payment_id, refund_note.amount, refund_note.status) == (
        "ref_0000000000000000000001", order.payment_id, 3000, "succeeded")
    assert refund_note.details["refund_no"] == first.channel_refund_no


def test_the_days_bill_lists_payments_and_refunds(wechat, receiver):
    orders = [_order(receiver, amount=9900), _order(receiver, amount=2990)]
    for order in orders:
        wechat.channel.create(order)
        wechat.pay(order.payment_id)
    wechat.channel.refund(_refund(orders[0], 9900, "ref_0000000000000000000009", receiver))
    bill = wechat.channel.fetch_bill(datetime.now(BEIJING).date().isoformat())
    assert bill.startswith("交易时间,公众账号ID,商户号".encode())
    lines = wechat.channel.parse_bill(bill)
    fee = wechat.gateway.store.fee_bps
    assert sorted((line.kind, line.payment_id, line.refund_id, line.amount, line.fee, line.status)
                  for line in lines) == sorted([
        ("payment", orders[0].payment_id, None, 9900, apply_rate_bps(9900, fee), "succeeded"),
        ("payment", orders[1].payment_id, None, 2990, apply_rate_bps(2990, fee), "succeeded"),
        ("refund", orders[0].payment_id, "ref_0000000000000000000009", 9900, apply_rate_bps(9900, fee),
         "succeeded")])


def test_requests_and_answers_signed_with_other_keys_are_refused(wechat, tmp_path):
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    config = wechat.channel._config
    wrong_signer = WeChatPayChannel(dataclasses.replace(config, private_key=stranger))
    with pytest.raises(ChannelUnavailable, match="SIGN_ERROR"):
        wrong_signer.create(_order())
    wrong_platform = WeChatPayChannel(dataclasses.replace(config, public_key=stranger.public_key()))
    with pytest.raises(ChannelUnavailable, match="failed verification"):
        wrong_platform.create(_order())


def test_without_wechat_keys_the_sandbox_still_runs_without_the_v3_paths(tmp_path):
    app = create_sandbox_app(Settings(instance_path=tmp_path), notify_sync=True)
    try:
        client = app.test_client()
        assert client.get("/healthz").status_code == 200
        assert client.post("/v3/pay/transactions/native", json={}).status_code == 404
        assert "wechat" in app.extensions["sandbox"].notifier.formats
    finally:
        app.extensions["sandbox"].store.close()


# -- end to end through KnowPay -------------------------------------------------------------------------

@pytest.fixture
def app(settings, db, wechat):
    """KnowPay with the real WeChat Pay adapter, pointed at the sandbox."""
    from knowpay.web import create_app

    return create_app(settings, db=db, clock=SystemClock(), config={"TESTING": True, **FAST_PASSWORDS},
                      channels=Registry({"wechat": wechat.channel}))


def _knowpay_payment(client, buyer, product_id: str, **extra) -> tuple[dict, dict]:
    order = client.post("/api/v1/orders", headers=buyer.headers, json={"items": [{"product_id": product_id}]})
    assert order.status_code == 201, order.get_json()
    payment = client.post(f"/api/v1/orders/{order.get_json()['id']}/payments", headers=buyer.headers,
                          json={"channel": "wechat", **extra})
    assert payment.status_code == 201, payment.get_json()
    return order.get_json(), payment.get_json()


def _notify(client, callback: tuple[dict[str, str], bytes]):
    headers, body = callback
    return client.post("/notify/wechat", data=body, headers=headers)


def test_paying_with_wechat_through_knowpay_captures_once(client, ctx, buyer, published_product, wechat):
    order, payment = _knowpay_payment(client, buyer, published_product["id"])
    assert payment["action"]["type"] == "qr_code"
    assert payment["action"]["code_url"].startswith(f"{wechat.url}/pay/")
    wechat.pay(payment["id"])
    [callback] = wechat.callbacks(payment["id"])

    answer = _notify(client, callback)
    assert (answer.status_code, answer.get_data()) == (204, b"")
    assert _notify(client, callback).status_code == 204  # WeChat Pay resends: a duplicate
    assert _notify(client, wechat.callbacks(payment["id"])[0]).status_code == 204  # re-rendered, same event

    paid = client.get(f"/api/v1/payments/{payment['id']}", headers=buyer.headers).get_json()
    assert paid["status"] == "succeeded"
    assert paid["channel_trade_no"] == wechat.trade(payment["id"]).trade_no
    assert client.get(f"/api/v1/orders/{order['id']}", headers=buyer.headers).get_json()["status"] == "paid"
    with ctx.db.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(JournalTransaction)
                              .where(JournalTransaction.kind == "capture")) == 1
        notes = list(session.scalars(select(ChannelNotification).order_by(ChannelNotification.received_at)))
        assert sorted(n.status for n in notes) == ["duplicate", "duplicate", "processed"]
        assert {n.event_id for n in notes} == {json.loads(callback[1])["id"]}


def test_a_refund_through_knowpay_completes_on_wechats_refund_callback(client, buyer, published_product,
                                                                       wechat):
    order, payment = _knowpay_payment(client, buyer, published_product["id"])
    wechat.pay(payment["id"])
    assert _notify(client, wechat.callbacks(payment["id"])[0]).status_code == 204
    made = client.post("/api/v1/refunds", headers=buyer.headers, json={"payment_id": payment["id"]})
    assert made.status_code == 201, made.get_json()
    refund = made.get_json()
    assert refund["status"] == "pending"  # WeChat Pay answered PROCESSING
    assert wechat.trade(payment["id"]).amount_refunded == 9900

    [callback] = [c for c in wechat.callbacks(payment["id"])
                  if json.loads(c[1])["event_type"] == "REFUND.SUCCESS"]
    assert _notify(client, callback).status_code == 204
    assert _notify(client, callback).status_code == 204  # again: a duplicate, nothing more
    done = client.get(f"/api/v1/refunds/{refund['id']}", headers=buyer.headers).get_json()
    assert done["status"] == "succeeded"
    refunded = client.get(f"/api/v1/orders/{order['id']}", headers=buyer.headers).get_json()
    assert refunded["status"] == "refunded"


def test_a_jsapi_payment_through_knowpay_hands_over_the_front_end_parameters(client, buyer,
                                                                              published_product):
    _, payment = _knowpay_payment(client, buyer, published_product["id"], method="jsapi",
                                  openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o")
    assert payment["action"]["type"] == "jsapi"
    assert set(payment["action"]["params"]) == {"appId", "timeStamp", "nonceStr", "package", "signType",
                                                "paySign"}


def test_a_callback_that_does_not_fit_changes_nothing_and_is_stored_with_its_reason(
        client, ctx, buyer, published_product, wechat):
    order, payment = _knowpay_payment(client, buyer, published_product["id"])
    wechat.pay(payment["id"])
    [(headers, body)] = wechat.callbacks(payment["id"])
    platform, env = wechat.platform_key(), wechat.env
    genuine = json.loads(wechat.gateway.store.deliveries(wechat.trade(payment["id"]).trade_no)[0].body)

    def forged(**changes):
        # WeChat Pay's side, signed and encrypted by the test with the sandbox's own platform key.
        resource = transaction(payment["id"], mchid=env["KNOWPAY_WECHAT_MCH_ID"],
                               appid=env["KNOWPAY_WECHAT_APP_ID"], total=changes.pop("total", 9900),
                               currency=changes.pop("currency", "CNY"))
        resource["transaction_id"] = genuine["trade_no"]
        return wechat_callback(platform, resource, apiv3_key=env["KNOWPAY_WECHAT_APIV3_KEY"],
                               serial=env["KNOWPAY_WECHAT_PUBLIC_KEY_ID"],
                               timestamp=changes.pop("timestamp", int(time.time())))

    signature = headers["Wechatpay-Signature"]
    cases = [
        (({**headers, "Wechatpay-Signature": signature[:10] + signature[10:][::-1]}, body),
         "does not verify"),
        (forged(total=1), "amount 1 does not match"),
        (forged(currency="USD"), "currency 'usd' does not match"),
        (forged(timestamp=int(time.time()) - 301), "old (more than 300 s"),
        (({**headers, "Wechatpay-Signature": "WECHATPAY/SIGNTEST/" + signature}, body), "SIGNTEST"),
    ]
    for callback, _ in cases:
        answer = _notify(client, callback)
        assert answer.status_code == 400
        assert answer.get_json()["code"] == "FAIL" and answer.get_json()["message"]
    with ctx.db.transaction(write=False) as session:
        notes = list(session.scalars(select(ChannelNotification).order_by(ChannelNotification.received_at)))
        assert [n.status for n in notes] == ["rejected"] * len(cases)
        for note, (_, reason) in zip(notes, cases, strict=True):
            assert reason in note.reason
        assert session.scalar(select(func.count()).select_from(OutboxEvent)) == 0
    assert client.get(f"/api/v1/payments/{payment['id']}", headers=buyer.headers).get_json()["status"] == \
        "requires_action"
    unpaid = client.get(f"/api/v1/orders/{order['id']}", headers=buyer.headers).get_json()
    assert unpaid["status"] == "pending"
    # The genuine callback, when it comes, still captures.
    assert _notify(client, (headers, body)).status_code == 204


class CallbackFirst:
    """The adapter, except that WeChat Pay's callback reaches KnowPay before create() has returned."""

    name = "wechat"

    def __init__(self, inner: WeChatPayChannel, sandbox: WeChatSandbox, app) -> None:
        self.inner, self.sandbox, self.app = inner, sandbox, app
        self.fee_bps = inner.fee_bps
        self.answers: list[int] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def create(self, request: PaymentRequest):
        created = self.inner.create(request)
        self.sandbox.pay(request.payment_id)
        [(headers, body)] = self.sandbox.callbacks(request.payment_id)
        # Another thread, as another gunicorn worker would take WeChat Pay's POST.
        thread = threading.Thread(target=lambda: self.answers.append(
            self.app.test_client().post("/notify/wechat", data=body, headers=headers).status_code))
        thread.start()
        thread.join(10)
        return created


def test_a_callback_before_create_returned_still_captures(app, client, ctx, buyer, published_product, wechat):
    early = CallbackFirst(wechat.channel, wechat, app)
    ctx.channels = Registry({"wechat": early})
    order, payment = _knowpay_payment(client, buyer, published_product["id"])
    assert early.answers == [204]
    assert payment["status"] == "succeeded" and payment["action"]["type"] == "qr_code"
    assert client.get(f"/api/v1/orders/{order['id']}", headers=buyer.headers).get_json()["status"] == "paid"
