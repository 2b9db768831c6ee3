"""The Alipay adapter against Alipay's documented wire format, with no network.

Alipay's side is played by test code written from Alipay's documentation with `cryptography` (and
cross-checked with python-alipay-sdk): it signs notifications and answers with "Alipay's" private key and
checks our requests with our app's public key. The adapter under test never signs its own inputs.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from alipay import AliPay
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from knowpay.channels.alipay import AlipayChannel, AlipayConfig, from_settings
from knowpay.channels.base import NotificationRejected, PaymentRequest, RefundRequest
from knowpay.channels.http import HttpAnswer
from knowpay.config import ConfigError, Settings
from knowpay.domain.errors import ChannelUnavailable, InvalidRequest

APP_ID = "2021004100000001"
SELLER_ID = "2088102180000001"
GATEWAY = "https://openapi.alipay.example/gateway.do"
NOW = datetime(2026, 11, 25, 4, 0, 0).timestamp()  # only used for request timestamps


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.fixture(scope="module")
def keys() -> dict[str, rsa.RSAPrivateKey]:
    """Our app's key pair, Alipay's, and a stranger's."""
    return {name: rsa.generate_private_key(public_exponent=65537, key_size=2048)
            for name in ("app", "alipay", "stranger")}


# -- Alipay's side, from its documentation ----------------------------------------------------------

def alipay_sign(content: str, key: rsa.RSAPrivateKey) -> str:
    """SHA256withRSA over the UTF-8 bytes, base64 encoded."""
    return base64.b64encode(key.sign(content.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


def signed_notification(fields: dict[str, str], key: rsa.RSAPrivateKey) -> dict[str, str]:
    """How Alipay signs an asynchronous notification: all fields but sign and sign_type, sorted, k=v&..."""
    content = "&".join(f"{k}={v}" for k, v in sorted(fields.items()) if k not in ("sign", "sign_type"))
    return {**fields, "sign_type": "RSA2", "sign": alipay_sign(content, key)}


def verify_request(params: dict[str, str], public_key: rsa.RSAPublicKey) -> bool:
    """How Alipay checks a request: all parameters but sign (sign_type included), no empty ones, sorted."""
    content = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "sign" and v != "")
    try:
        public_key.verify(base64.b64decode(params["sign"]), content.encode(), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def form(fields: dict[str, str]) -> bytes:
    return urlencode(fields).encode()


def paid_fields(**changes: str) -> dict[str, str]:
    """A trade_status_sync notification in the shape of Alipay's documented example."""
    fields = {
        "gmt_create": "2026-11-25 11:59:30", "charset": "utf-8", "seller_email": "shop@example.com",
        "subject": "Python 进阶课 · Advanced Python", "buyer_id": "2088102122524333", "invoice_amount": "99.00",
        "notify_id": "2026112500222120000050881413337001", "fund_bill_list": '[{"amount":"99.00","fundChannel":"ALIPAYACCOUNT"}]',
        "notify_type": "trade_status_sync", "trade_status": "TRADE_SUCCESS", "receipt_amount": "99.00",
        "app_id": APP_ID, "buyer_pay_amount": "99.00", "seller_id": SELLER_ID, "gmt_payment": "2026-11-25 12:00:00",
        "notify_time": "2026-11-25 12:00:01", "version": "1.0", "out_trade_no": "pay_0001",
        "total_amount": "99.00", "trade_no": "2026112522001400001000000001", "auth_app_id": APP_ID,
        "buyer_logon_id": "159****5620", "point_amount": "0.00",
    }
    fields.update(changes)
    return fields


@dataclass
class FakeAlipay:
    """Alipay's gateway played by the test: records every form posted, answers what the test scripted,
    signing each answer with Alipay's key exactly as Alipay's documentation shows."""

    key: rsa.RSAPrivateKey
    posted: list[dict[str, str]] = field(default_factory=list)
    scripted: dict[str, list[tuple[dict, str | None]]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)

    def answer(self, method: str, content: dict, *, sign: str | None = "good") -> None:
        self.scripted.setdefault(method, []).append((content, sign))

    def post_form(self, body: bytes) -> HttpAnswer:
        fields = dict(parse_qsl(body.decode(), keep_blank_values=True))
        self.posted.append(fields)
        content, sign = self.scripted[fields["method"]].pop(0)
        text = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
        key = fields["method"].replace(".", "_") + "_response"
        body_text = f'{{"{key}":{text}'
        if sign == "good":
            body_text += f',"sign":"{alipay_sign(text, self.key)}"'
        elif sign is not None:
            body_text += f',"sign":"{sign}"'
        return HttpAnswer(200, (body_text + "}").encode(), "application/json;charset=utf-8", "Alipay")

    def download(self, url: str) -> HttpAnswer:
        return HttpAnswer(200, self.files[url], "application/octet-stream", "Alipay")

    def biz(self, n: int = -1) -> dict:
        return json.loads(self.posted[n]["biz_content"])


def _config(keys, **changes) -> AlipayConfig:
    values = {"app_id": APP_ID, "seller_id": SELLER_ID, "private_key": keys["app"],
              "alipay_public_key": keys["alipay"].public_key(), "gateway": GATEWAY}
    values.update(changes)
    return AlipayConfig(**values)


@pytest.fixture
def alipay(keys) -> FakeAlipay:
    return FakeAlipay(keys["alipay"])


@pytest.fixture
def channel(keys, alipay) -> AlipayChannel:
    return AlipayChannel(_config(keys), http=alipay, clock=lambda: NOW)


def payment(**changes) -> PaymentRequest:
    values = {"payment_id": "pay_0001", "amount": 9900, "currency": "cny",
              "subject": "Python 进阶课 · Advanced Python", "method": None,
              "notify_url": "https://knowpay.example/notify/alipay",
              "return_url": "https://knowpay.example/checkout/payments/pay_0001",
              "expires_at": datetime(2026, 11, 25, 4, 15, 0)}
    values.update(changes)
    return PaymentRequest(**values)


def refund_request(**changes) -> RefundRequest:
    values = {"refund_id": "ref_0001", "payment_id": "pay_0001",
              "channel_trade_no": "2026112522001400001000000001", "amount": 3000, "payment_amount": 9900,
              "currency": "cny", "reason": "changed my mind", "notify_url": "https://knowpay.example/notify/alipay"}
    values.update(changes)
    return RefundRequest(**values)


# -- notifications --------------------------------------------------------------------------------------

def test_a_documented_paid_notification_signed_by_alipay_is_read_as_succeeded(channel, keys):
    note = channel.parse_notification({}, form(signed_notification(paid_fields(), keys["alipay"])))
    assert (note.kind, note.payment_id, note.status) == ("payment", "pay_0001", "succeeded")
    assert (note.amount, note.currency) == (9900, "cny")
    assert note.channel_trade_no == "2026112522001400001000000001"
    assert note.event_id == "2026112500222120000050881413337001"
    assert note.occurred_at == datetime(2026, 11, 25, 4, 0, 0)  # 12:00 in Beijing is 04:00 UTC
    assert note.details["buyer_id"] == "2088102122524333"


def test_our_test_signer_agrees_with_python_alipay_sdk(keys):
    """The notifications these tests sign are the ones Alipay's client libraries accept."""
    sdk = AliPay(appid=APP_ID, app_private_key_string=_pem(keys["app"]),
                 alipay_public_key_string=_public_pem(keys["alipay"]), sign_type="RSA2")
    fields = signed_notification(paid_fields(), keys["alipay"])
    signature = fields.pop("sign")
    assert sdk.verify(fields, signature)


@pytest.mark.parametrize("change", [
    {"total_amount": "0.01"}, {"out_trade_no": "pay_9999"}, {"trade_status": "TRADE_FINISHED"},
    {"app_id": "2021004100000002"}, {"extra": "1"}, {"subject": "Python 进阶课 · Advanced Pythonx"},
])
def test_a_tampered_field_breaks_the_signature(channel, keys, change):
    fields = signed_notification(paid_fields(), keys["alipay"])
    fields.update(change)
    with pytest.raises(NotificationRejected) as refused:
        channel.parse_notification({}, form(fields))
    assert "signature" in refused.value.message


def test_a_notification_without_a_field_that_was_signed_is_refused(channel, keys):
    fields = signed_notification(paid_fields(), keys["alipay"])
    del fields["buyer_id"]
    with pytest.raises(NotificationRejected, match="signature"):
        channel.parse_notification({}, form(fields))


def test_a_notification_signed_with_another_key_is_refused(channel, keys):
    with pytest.raises(NotificationRejected, match="signature"):
        channel.parse_notification({}, form(signed_notification(paid_fields(), keys["stranger"])))


def test_an_rsa1_or_unsigned_notification_is_refused(channel, keys):
    fields = signed_notification(paid_fields(), keys["alipay"])
    with pytest.raises(NotificationRejected, match="RSA2"):
        channel.parse_notification({}, form({**fields, "sign_type": "RSA"}))
    del fields["sign"]
    with pytest.raises(NotificationRejected, match="no sign"):
        channel.parse_notification({}, form(fields))


def test_a_validly_signed_notification_for_another_app_is_refused(channel, keys):
    body = form(signed_notification(paid_fields(app_id="2021004100000002"), keys["alipay"]))
    with pytest.raises(NotificationRejected) as refused:
        channel.parse_notification({}, body)
    assert "app_id" in refused.value.message and "not ours" in refused.value.message


def test_a_validly_signed_notification_for_another_seller_is_refused(channel, keys):
    body = form(signed_notification(paid_fields(seller_id="2088102180000002"), keys["alipay"]))
    with pytest.raises(NotificationRejected, match="seller_id"):
        channel.parse_notification({}, body)


def test_a_notification_without_seller_id_is_read(channel, keys):
    fields = paid_fields()
    del fields["seller_id"]
    assert channel.parse_notification({}, form(signed_notification(fields, keys["alipay"]))).status == "succeeded"


@pytest.mark.parametrize(("trade_status", "ours"), [
    ("TRADE_SUCCESS", "succeeded"), ("TRADE_FINISHED", "succeeded"), ("TRADE_CLOSED", "failed"),
    ("WAIT_BUYER_PAY", "pending"),
])
def test_only_trade_success_and_finished_mean_paid(channel, keys, trade_status, ours):
    fields = paid_fields(trade_status=trade_status)
    if trade_status != "TRADE_SUCCESS":
        del fields["gmt_payment"]
    note = channel.parse_notification({}, form(signed_notification(fields, keys["alipay"])))
    assert note.status == ours
    if ours == "failed":
        assert note.details["code"] == "trade_closed"


def test_an_unknown_trade_status_is_refused(channel, keys):
    with pytest.raises(NotificationRejected, match="unknown trade_status"):
        channel.parse_notification({}, form(signed_notification(paid_fields(trade_status="TRADE_PENDING"),
                                                                keys["alipay"])))


@pytest.mark.parametrize("amount", ["99.001", "99,00", "abc", "-99.00", "0.00", " 99.00", "1e2", ""])
def test_an_amount_that_is_not_exact_yuan_is_refused(channel, keys, amount):
    body = form(signed_notification(paid_fields(total_amount=amount), keys["alipay"]))
    with pytest.raises(NotificationRejected, match="total_amount"):
        channel.parse_notification({}, body)


def test_a_field_sent_twice_or_a_body_that_is_not_a_form_is_refused(channel, keys):
    body = form(signed_notification(paid_fields(), keys["alipay"]))
    with pytest.raises(NotificationRejected, match="twice"):
        channel.parse_notification({}, body + b"&total_amount=0.01")
    with pytest.raises(NotificationRejected, match="form"):
        channel.parse_notification({}, b"\xff\xfe")


def test_a_refund_notification_is_read_as_that_refund_with_its_own_amount(channel, keys, alipay):
    """refund_fee is the trade's refunded total (50.00 after a 20.00 and this 30.00); Alipay's refund query
    says what this refund was."""
    fields = paid_fields(refund_fee="50.00", out_biz_no="ref_0002", gmt_refund="2026-11-25 13:00:00.123")
    alipay.answer("alipay.trade.fastpay.refund.query", {
        "code": "10000", "msg": "Success", "trade_no": "2026112522001400001000000001", "out_trade_no": "pay_0001",
        "out_request_no": "ref_0002", "total_amount": "99.00", "refund_amount": "30.00",
        "refund_status": "REFUND_SUCCESS"})
    note = channel.parse_notification({}, form(signed_notification(fields, keys["alipay"])))
    assert (note.kind, note.status, note.payment_id, note.refund_id) == ("refund", "succeeded", "pay_0001", "ref_0002")
    assert (note.amount, note.currency) == (3000, "cny")
    assert note.details["refund_total"] == 5000
    assert note.occurred_at == datetime(2026, 11, 25, 5, 0, 0)
    assert alipay.biz() == {"out_trade_no": "pay_0001", "out_request_no": "ref_0002",
                            "query_options": ["gmt_refund_pay"]}


def test_a_full_refund_closing_the_trade_is_a_refund_not_a_failed_payment(channel, keys, alipay):
    fields = paid_fields(trade_status="TRADE_CLOSED", refund_fee="99.00", out_biz_no="ref_0001",
                         gmt_refund="2026-11-25 13:00:00", gmt_close="2026-11-25 13:00:00")
    alipay.answer("alipay.trade.fastpay.refund.query", {
        "code": "10000", "msg": "Success", "out_request_no": "ref_0001", "refund_amount": "99.00"})
    note = channel.parse_notification({}, form(signed_notification(fields, keys["alipay"])))
    assert (note.kind, note.status, note.amount) == ("refund", "succeeded", 9900)


def test_a_refund_notification_alipay_cannot_confirm_is_refused(channel, keys, alipay):
    alipay.answer("alipay.trade.fastpay.refund.query", {"code": "10000", "msg": "Success"})
    body = form(signed_notification(paid_fields(refund_fee="30.00", out_biz_no="ref_0009"), keys["alipay"]))
    with pytest.raises(NotificationRejected, match="knows no refund"):
        channel.parse_notification({}, body)


def test_acknowledgements_are_alipays_exact_words(channel):
    assert (channel.acknowledge(True).status, channel.acknowledge(True).body) == (200, "success")
    assert (channel.acknowledge(False, "x").body, channel.acknowledge(False).content_type) == ("failure", "text/plain")


# -- requests ---------------------------------------------------------------------------------------------

def test_precreate_is_signed_so_alipay_can_verify_it_and_answers_a_qr_code(channel, keys, alipay):
    alipay.answer("alipay.trade.precreate", {"code": "10000", "msg": "Success", "out_trade_no": "pay_0001",
                                             "qr_code": "https://qr.alipay.com/bax01234"})
    created = channel.create(payment())
    assert created.action.to_json() == {"type": "qr_code", "code_url": "https://qr.alipay.com/bax01234"}
    assert created.channel_trade_no is None  # Alipay numbers the trade when the buyer scans
    [params] = alipay.posted
    assert verify_request(params, keys["app"].public_key())
    assert not verify_request(params, keys["stranger"].public_key())
    assert (params["app_id"], params["method"], params["sign_type"], params["charset"]) == (
        APP_ID, "alipay.trade.precreate", "RSA2", "utf-8")
    assert params["notify_url"] == "https://knowpay.example/notify/alipay"
    assert params["timestamp"] == "2026-11-25 12:00:00"
    assert alipay.biz() == {"out_trade_no": "pay_0001", "total_amount": "99.00",
                            "subject": "Python 进阶课 · Advanced Python", "product_code": "FACE_TO_FACE_PAYMENT",
                            "time_expire": "2026-11-25 12:15:00"}


def test_our_request_signature_is_the_one_python_alipay_sdk_computes(channel, keys, alipay):
    """RSA PKCS#1 v1.5 is deterministic: the client library, given our key, signs the same parameters alike."""
    alipay.answer("alipay.trade.precreate", {"code": "10000", "out_trade_no": "pay_0001", "qr_code": "x"})
    channel.create(payment())
    params = dict(alipay.posted[0])
    ours = params.pop("sign")
    sdk = AliPay(appid=APP_ID, app_private_key_string=_pem(keys["app"]),
                 alipay_public_key_string=_public_pem(keys["alipay"]), sign_type="RSA2")
    assert dict(parse_qsl(sdk.sign_data(params)))["sign"] == ours


def test_installments_ask_for_huabei_with_the_configured_fee_payer(keys, alipay):
    channel = AlipayChannel(_config(keys, hb_seller_percent="100"), http=alipay, clock=lambda: NOW)
    alipay.answer("alipay.trade.precreate", {"code": "10000", "out_trade_no": "pay_0001", "qr_code": "x"})
    channel.create(payment(installments=6))
    assert alipay.biz()["extend_params"] == {"hb_fq_num": "6", "hb_fq_seller_percent": "100"}


@pytest.mark.parametrize(("amount", "yuan"), [(9900, "99.00"), (1, "0.01"), (100000, "1000.00"), (1234567, "12345.67")])
def test_amounts_travel_as_exact_yuan(channel, alipay, amount, yuan):
    alipay.answer("alipay.trade.precreate", {"code": "10000", "out_trade_no": "pay_0001", "qr_code": "x"})
    channel.create(payment(amount=amount))
    assert alipay.biz()["total_amount"] == yuan


@pytest.mark.parametrize(("method", "api", "product_code"), [
    ("page", "alipay.trade.page.pay", "FAST_INSTANT_TRADE_PAY"), ("wap", "alipay.trade.wap.pay", "QUICK_WAP_WAY"),
])
def test_page_and_wap_payments_redirect_to_the_signed_gateway_url(channel, keys, alipay, method, api, product_code):
    created = channel.create(payment(method=method, installments=3))
    assert created.action.type == "redirect" and not alipay.posted  # nothing is called: the browser goes
    url = urlsplit(created.action.data["url"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == GATEWAY
    params = dict(parse_qsl(url.query, keep_blank_values=True))
    assert verify_request(params, keys["app"].public_key())
    assert params["method"] == api and params["return_url"] == "https://knowpay.example/checkout/payments/pay_0001"
    biz = json.loads(params["biz_content"])
    assert (biz["product_code"], biz["total_amount"], biz["extend_params"]["hb_fq_num"]) == (product_code, "99.00", "3")


def test_only_cny_and_known_methods_are_sent(channel, alipay):
    with pytest.raises(InvalidRequest):
        channel.create(payment(currency="usd"))
    with pytest.raises(InvalidRequest):
        channel.create(payment(method="jsapi"))
    with pytest.raises(InvalidRequest):
        channel.create(payment(installments=24))
    assert not alipay.posted


# -- answers -----------------------------------------------------------------------------------------

def test_an_answer_whose_signature_does_not_verify_is_not_believed(channel, keys, alipay):
    alipay.answer("alipay.trade.query", {"code": "10000", "trade_status": "TRADE_SUCCESS", "total_amount": "99.00"},
                  sign=alipay_sign("something else", keys["alipay"]))
    with pytest.raises(ChannelUnavailable, match="signature"):
        channel.query("pay_0001")


def test_an_unsigned_refusal_at_alipays_door_is_unavailable_with_a_hint(channel, alipay):
    alipay.answer("alipay.trade.query", {"code": "40002", "msg": "Invalid Arguments",
                                         "sub_code": "isv.invalid-signature", "sub_msg": "验签出错"}, sign=None)
    with pytest.raises(ChannelUnavailable, match="KNOWPAY_ALIPAY_PRIVATE_KEY"):
        channel.query("pay_0001")


def test_query_maps_alipays_trade_statuses(channel, alipay):
    alipay.answer("alipay.trade.query", {
        "code": "10000", "msg": "Success", "trade_no": "2026112522001400001000000001", "out_trade_no": "pay_0001",
        "trade_status": "TRADE_SUCCESS", "total_amount": "99.00", "send_pay_date": "2026-11-25 12:00:00"})
    alipay.answer("alipay.trade.query", {"code": "10000", "trade_status": "WAIT_BUYER_PAY", "total_amount": "99.00"})
    alipay.answer("alipay.trade.query", {"code": "40004", "msg": "Business Failed",
                                         "sub_code": "ACQ.TRADE_NOT_EXIST", "sub_msg": "交易不存在"})
    paid = channel.query("pay_0001")
    assert (paid.status, paid.amount, paid.currency, paid.paid_at) == (
        "succeeded", 9900, "cny", datetime(2026, 11, 25, 4, 0, 0))
    assert channel.query("pay_0001").status == "pending"
    assert channel.query("pay_0001").status == "not_found"
    assert alipay.biz(0) == {"out_trade_no": "pay_0001"}


def test_closing_a_trade_that_was_just_paid_reports_it_succeeded(channel, alipay):
    alipay.answer("alipay.trade.close", {"code": "40004", "msg": "Business Failed",
                                         "sub_code": "ACQ.TRADE_STATUS_ERROR", "sub_msg": "交易状态不合法"})
    alipay.answer("alipay.trade.query", {"code": "10000", "trade_no": "2026112522001400001000000001",
                                         "trade_status": "TRADE_SUCCESS", "total_amount": "99.00"})
    status = channel.close("pay_0001")
    assert (status.status, status.amount, status.channel_trade_no) == (
        "succeeded", 9900, "2026112522001400001000000001")
    assert [p["method"] for p in alipay.posted] == ["alipay.trade.close", "alipay.trade.query"]


def test_closing_an_open_trade_closes_it(channel, alipay):
    alipay.answer("alipay.trade.close", {"code": "10000", "msg": "Success", "trade_no": "T1",
                                         "out_trade_no": "pay_0001"})
    assert channel.close("pay_0001").status == "closed"


def test_a_refund_names_our_refund_id_and_a_retry_is_confirmed_by_the_refund_query(channel, alipay):
    alipay.answer("alipay.trade.refund", {"code": "10000", "msg": "Success", "fund_change": "Y",
                                          "refund_fee": "30.00"})
    alipay.answer("alipay.trade.refund", {"code": "10000", "msg": "Success", "fund_change": "N",
                                          "refund_fee": "30.00"})
    alipay.answer("alipay.trade.fastpay.refund.query", {"code": "10000", "out_request_no": "ref_0001",
                                                         "refund_amount": "30.00"})
    assert channel.refund(refund_request()).status == "succeeded"
    assert alipay.biz(0) == {"out_trade_no": "pay_0001", "refund_amount": "30.00", "out_request_no": "ref_0001",
                             "refund_reason": "changed my mind"}
    assert channel.refund(refund_request()).status == "succeeded"
    assert [p["method"] for p in alipay.posted] == ["alipay.trade.refund", "alipay.trade.refund",
                                                    "alipay.trade.fastpay.refund.query"]


def test_an_over_refund_fails_and_a_system_error_is_retried_later(channel, alipay):
    alipay.answer("alipay.trade.refund", {"code": "40004", "msg": "Business Failed",
                                          "sub_code": "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "sub_msg": "退款金额超限"})
    alipay.answer("alipay.trade.refund", {"code": "40004", "msg": "Business Failed",
                                          "sub_code": "ACQ.SYSTEM_ERROR", "sub_msg": "系统错误"})
    refused = channel.refund(refund_request(amount=99900))
    assert (refused.status, refused.failure_code) == ("failed", "refund_exceeds_payment")
    with pytest.raises(ChannelUnavailable):
        channel.refund(refund_request())


def test_a_refund_alipay_never_received_is_pending(channel, alipay):
    alipay.answer("alipay.trade.fastpay.refund.query", {"code": "10000", "msg": "Success"})
    assert channel.query_refund(refund_request()).status == "pending"


# -- bills -------------------------------------------------------------------------------------------

HEADER = ("支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,"
          "订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,"
          "券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注")


def _row(trade_no, out_trade_no, kind, amount, finished, request_no="", fee="-0.59") -> str:
    cells = [trade_no + "\t", out_trade_no + "\t", kind, "Python 进阶课", "2026-11-25 11:59:30", finished,
             "", "", "", "", "159****5620", amount, amount, "0.00", "0.00", "0.00", "0.00", "0.00", "", "0.00",
             "0.00", request_no + ("\t" if request_no else ""), fee, "0.00", ""]
    return ",".join(cells)


def alipay_bill_zip(rows: list[str]) -> bytes:
    """A trade bill as Alipay ships it: a zip with the GBK 业务明细 CSV and its 汇总 beside it."""
    detail = "\r\n".join([
        "#支付宝业务明细查询", "#账号：[20881021800000010156]",
        "#起始日期：[2026年11月25日 00:00:00]   终止日期：[2026年11月26日 00:00:00]",
        "#-----------------------------------------业务明细列表----------------------------------------",
        HEADER, *rows,
        "#-----------------------------------------业务明细列表结束------------------------------------",
        "#交易合计：2笔，商家实收：￥104.00元，商家优惠：￥0.00元", "#退款合计：1笔，商家实收：-￥30.00元，商家优惠：￥0.00元",
        "#导出时间：[2026年11月26日 09:00:00]", ""])
    summary = "#支付宝业务汇总查询\r\n门店编号,门店名称,交易订单总笔数,退款订单总笔数\r\n,合计,2,1\r\n"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("20881021800000010156_20261125_业务明细(汇总).csv", summary.encode("gbk"))
        archive.writestr("20881021800000010156_20261125_业务明细.csv", detail.encode("gbk"))
    return out.getvalue()


def test_the_gbk_zipped_bill_becomes_payment_and_refund_lines(channel):
    data = alipay_bill_zip([
        _row("2026112522001400001000000001", "pay_0001", "交易", "99.00", "2026-11-25 12:00:00"),
        _row("2026112522001400001000000002", "pay_0002", "交易", "5.00", "2026-11-25 12:30:00", fee="-0.03"),
        _row("2026112522001400001000000001", "pay_0001", "退款", "-30.00", "2026-11-25 13:00:00",
             request_no="ref_0001", fee="0.18"),
    ])
    lines = channel.parse_bill(data)
    assert [(l.kind, l.payment_id, l.amount, l.fee, l.refund_id) for l in lines] == [
        ("payment", "pay_0001", 9900, 59, None), ("payment", "pay_0002", 500, 3, None),
        ("refund", "pay_0001", 3000, 18, "ref_0001")]
    assert lines[0].channel_trade_no == "2026112522001400001000000001"
    assert lines[0].occurred_at == datetime(2026, 11, 25, 4, 0, 0)
    assert {(l.currency, l.status) for l in lines} == {("cny", "succeeded")}


def test_a_bill_with_an_inexact_amount_or_not_a_zip_is_refused(channel):
    with pytest.raises(InvalidRequest, match="Row 2"):
        channel.parse_bill(alipay_bill_zip([_row("T1", "pay_0001", "交易", "99.001", "2026-11-25 12:00:00")]))
    with pytest.raises(InvalidRequest, match="zip"):
        channel.parse_bill(b"not a zip")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("readme.txt", "nothing here")
    with pytest.raises(InvalidRequest, match="业务明细"):
        channel.parse_bill(out.getvalue())


def test_fetch_bill_downloads_the_zip_alipay_points_to(channel, alipay):
    url = "https://dwbillcenter.alipay.example/downloadBillFile.resource?bizType=trade&fileId=1"
    alipay.answer("alipay.data.dataservice.bill.downloadurl.query",
                  {"code": "10000", "msg": "Success", "bill_download_url": url})
    alipay.files[url] = b"PK-zip-bytes"
    assert channel.fetch_bill("2026-11-25") == b"PK-zip-bytes"
    assert alipay.biz() == {"bill_type": "trade", "bill_date": "2026-11-25"}


# -- configuration ---------------------------------------------------------------------------------

def _settings(keys, tmp_path, **changes) -> Settings:
    private_path = tmp_path / "app.private.pem"
    private_path.write_text(_pem(keys["app"]))
    channel = {"alipay_app_id": APP_ID, "alipay_seller_id": SELLER_ID, "alipay_private_key": str(private_path),
               "alipay_public_key": _public_pem(keys["alipay"]), "alipay_gateway": GATEWAY}
    channel.update(changes)
    return Settings(instance_path=tmp_path, channel={k: v for k, v in channel.items() if v is not None})


def test_the_channel_is_off_when_a_required_setting_is_missing(keys, tmp_path):
    for name in ("alipay_app_id", "alipay_seller_id", "alipay_private_key", "alipay_public_key", "alipay_gateway"):
        assert from_settings(_settings(keys, tmp_path, **{name: None})) is None
    channel = from_settings(_settings(keys, tmp_path))
    assert channel is not None and (channel.name, channel.fee_bps) == ("alipay", 60)


def test_keys_may_be_pem_text_a_pem_path_or_bare_base64(keys, tmp_path):
    der = keys["alipay"].public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    config = AlipayConfig.from_settings(_settings(keys, tmp_path, alipay_public_key=base64.b64encode(der).decode(),
                                                  alipay_private_key=_pem(keys["app"]), alipay_fee_bps="55",
                                                  alipay_hb_seller_percent="100"))
    assert (config.fee_bps, config.hb_seller_percent) == (55, "100")


@pytest.mark.parametrize(("changes", "named"), [
    ({"alipay_private_key": "/nowhere/app.private.pem"}, "KNOWPAY_ALIPAY_PRIVATE_KEY"),
    ({"alipay_private_key": "-----BEGIN PRIVATE KEY-----\nnonsense\n-----END PRIVATE KEY-----"},
     "KNOWPAY_ALIPAY_PRIVATE_KEY"),
    ({"alipay_public_key": "not a key at all!"}, "KNOWPAY_ALIPAY_PUBLIC_KEY"),
    ({"alipay_gateway": "openapi.alipay.com/gateway.do"}, "KNOWPAY_ALIPAY_GATEWAY"),
    ({"alipay_hb_seller_percent": "50"}, "KNOWPAY_ALIPAY_HB_SELLER_PERCENT"),
    ({"alipay_fee_bps": "0.6"}, "KNOWPAY_ALIPAY_FEE_BPS"),
])
def test_a_wrong_setting_is_a_config_error_naming_it(keys, tmp_path, changes, named):
    with pytest.raises(ConfigError, match=named):
        from_settings(_settings(keys, tmp_path, **changes))


def test_bill_rows_keep_their_columns_when_a_subject_holds_a_comma(channel):
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(["T1\t", "pay_0003\t", "交易", "课程, 含答疑", "2026-11-25 11:00:00",
                                                 "2026-11-25 11:01:00", "", "", "", "", "x", "12.30", "12.30",
                                                 "0.00", "0.00", "0.00", "0.00", "0.00", "", "0.00", "0.00", "",
                                                 "-0.07", "0.00", ""])
    [line] = channel.parse_bill(alipay_bill_zip([out.getvalue()]))
    assert (line.payment_id, line.amount, line.fee) == ("pay_0003", 1230, 7)
