"""The WeChat Pay v3 adapter against WeChat Pay's side played by the test, never by the adapter itself.

WeChat Pay's signatures come from wechatpayv3's own `rsa_sign`; its AES-256-GCM resources from test code
written from WeChat Pay's documentation with `cryptography`; and wechatpayv3 reads those callbacks exactly
as the adapter should. No network: a fake transport records each request and answers from a script.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from wechatpayv3 import WeChatPay, WeChatPayType
from wechatpayv3.utils import rsa_sign

from knowpay.channels.base import NotificationRejected, PaymentRequest, RefundRequest
from knowpay.channels.wechat import (
    RequestsTransport,
    WeChatPayChannel,
    WeChatPayConfig,
    WireAnswer,
    from_settings,
)
from knowpay.config import ConfigError, Settings
from knowpay.domain.errors import ChannelUnavailable, InvalidRequest

NOW = 1_795_600_000  # 2026-11-25 07:06:40 UTC
MCH_ID = "1900000109"
APP_ID = "wxd678efh567hg6787"
APIV3_KEY = "a12d3924fd499edac8a5efc000000032"
CERT_SERIAL = "444F4864EA9B34415C4E2F1D9F3B4F7E2C1D0A11"
PUBLIC_KEY_ID = "PUB_KEY_ID_0114232134912410000000000000"
GATEWAY = "https://api.mch.weixin.qq.com"


# -- WeChat Pay's side, from its documentation --------------------------------------------------------------

def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass(frozen=True)
class Keys:
    merchant: rsa.RSAPrivateKey  # ours: signs requests and JSAPI parameters
    platform: rsa.RSAPrivateKey  # WeChat Pay's: signs answers and callbacks
    stranger: rsa.RSAPrivateKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(_new_key(), _new_key(), _new_key())


def wechat_signed(key: rsa.RSAPrivateKey, body: bytes, *, timestamp: int,
                  nonce: str = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS", serial: str = PUBLIC_KEY_ID,
                  signature: str | None = None) -> dict[str, str]:
    """The headers WeChat Pay puts on an answer or callback: "timestamp\\nnonce\\nbody\\n", SHA256withRSA."""
    message = f"{timestamp}\n{nonce}\n{body.decode()}\n"
    return {"Wechatpay-Timestamp": str(timestamp), "Wechatpay-Nonce": nonce, "Wechatpay-Serial": serial,
            "Wechatpay-Signature": signature or rsa_sign(key, message),
            "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048"}


def aes_gcm_encrypt(apiv3_key: str, plaintext: str, *, nonce: str, associated_data: str) -> str:
    """AEAD_AES_256_GCM: the APIv3 key as the 32-byte key, a 12-byte nonce, base64(ciphertext + tag)."""
    sealed = AESGCM(apiv3_key.encode()).encrypt(nonce.encode(), plaintext.encode(), associated_data.encode())
    return base64.b64encode(sealed).decode()


def transaction(out_trade_no: str = "pay_0000000000000000000001", *, total: int = 9900, currency: str = "CNY",
                trade_state: str = "SUCCESS", mchid: str = MCH_ID, appid: str = APP_ID) -> dict:
    """A transaction as WeChat Pay's payment callback resource shows it."""
    return {"appid": appid, "mchid": mchid, "out_trade_no": out_trade_no,
            "transaction_id": "4200000000202611250000000001", "trade_type": "NATIVE",
            "trade_state": trade_state,
            "trade_state_desc": "支付成功", "bank_type": "OTHERS", "attach": "",
            "success_time": "2026-11-25T15:06:00+08:00", "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
            "amount": {"total": total, "payer_total": total, "currency": currency,
                       "payer_currency": currency}}


def refund_resource(refund_status: str = "SUCCESS", *, refund: int = 3000, mchid: str = MCH_ID) -> dict:
    return {"mchid": mchid, "transaction_id": "4200000000202611250000000001",
            "out_trade_no": "pay_0000000000000000000001", "refund_id": "50000000382019052709732678859",
            "out_refund_no": "ref_0000000000000000000001", "refund_status": refund_status,
            "success_time": "2026-11-25T15:10:00+08:00", "user_received_account": "招商银行信用卡0403",
            "amount": {"total": 9900, "refund": refund, "payer_total": 9900, "payer_refund": refund}}


def wechat_callback(key: rsa.RSAPrivateKey, resource: dict, *, timestamp: int,
                    event_type: str = "TRANSACTION.SUCCESS", apiv3_key: str = APIV3_KEY,
                    serial: str = PUBLIC_KEY_ID, event_id: str = "EV-2018022511223320873",
                    nonce: str = "fdasflkja484",
                    signature: str | None = None) -> tuple[dict[str, str], bytes]:
    """A v3 callback: the resource encrypted with the APIv3 key, the envelope signed with the platform key."""
    original_type = "refund" if event_type.startswith("REFUND.") else "transaction"
    ciphertext = aes_gcm_encrypt(apiv3_key, json.dumps(resource, ensure_ascii=False), nonce=nonce,
                                 associated_data=original_type)
    envelope = {"id": event_id, "create_time": "2026-11-25T15:06:01+08:00",
                "resource_type": "encrypt-resource", "event_type": event_type, "summary": "支付成功",
                "resource": {"original_type": original_type, "algorithm": "AEAD_AES_256_GCM",
                             "ciphertext": ciphertext, "associated_data": original_type, "nonce": nonce}}
    body = json.dumps(envelope, ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json",
               **wechat_signed(key, body, timestamp=timestamp, serial=serial, signature=signature)}
    return headers, body


# -- the fake wire ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sent:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeWeChatPay:
    """WeChat Pay's API played by the test: records each request, answers from `script`, signs each answer."""

    platform: rsa.RSAPrivateKey
    script: list[tuple[int, object]] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    sign_with: rsa.RSAPrivateKey | None = None
    serial: str = PUBLIC_KEY_ID
    timestamp: int = NOW
    tamper: bool = False
    signed: bool = True

    def __call__(self, method, url, headers, body) -> WireAnswer:
        self.sent.append(Sent(method, url, dict(headers), body))
        status, payload = self.script.pop(0)
        if isinstance(payload, bytes) or payload is None:
            raw = payload or b""
        else:
            raw = json.dumps(payload).encode()
        answer_headers = {}
        if self.signed:
            answer_headers = wechat_signed(self.sign_with or self.platform, raw, timestamp=self.timestamp,
                                           serial=self.serial)
        if self.tamper:
            raw = raw.replace(b"9900", b"9901")
        return WireAnswer(status, {k.lower(): v for k, v in answer_headers.items()}, raw)


def _wechatpayv3(keys: Keys, kind: WeChatPayType) -> WeChatPay:
    """WeChat Pay's maintained Python client, configured as a merchant would (public-key mode)."""
    return WeChatPay(wechatpay_type=kind, mchid=MCH_ID, private_key=private_pem(keys.merchant),
                     cert_serial_no=CERT_SERIAL, appid=APP_ID, apiv3_key=APIV3_KEY,
                     public_key=public_pem(keys.platform), public_key_id=PUBLIC_KEY_ID)


def _env(keys: Keys, **changes: str) -> dict[str, str]:
    env = {"wechat_mch_id": MCH_ID, "wechat_app_id": APP_ID, "wechat_apiv3_key": APIV3_KEY,
           "wechat_private_key": private_pem(keys.merchant), "wechat_cert_serial": CERT_SERIAL,
           "wechat_public_key": public_pem(keys.platform), "wechat_public_key_id": PUBLIC_KEY_ID,
           "wechat_gateway": GATEWAY}
    env.update(changes)
    return env


def _channel(keys: Keys, fake: FakeWeChatPay | None = None, **changes: str) -> WeChatPayChannel:
    config = WeChatPayConfig.from_settings(Settings(channel=_env(keys, **changes)))
    assert config is not None
    return WeChatPayChannel(config, clock=lambda: NOW, transport=fake or FakeWeChatPay(keys.platform))


@pytest.fixture
def fake(keys) -> FakeWeChatPay:
    return FakeWeChatPay(keys.platform)


@pytest.fixture
def channel(keys, fake) -> WeChatPayChannel:
    return _channel(keys, fake)


def _request(method: str | None = None, **changes) -> PaymentRequest:
    values = {"payment_id": "pay_0000000000000000000001", "amount": 9900, "currency": "cny",
              "subject": "Course A", "method": method, "notify_url": "https://shop.example.com/notify/wechat",
              "return_url": "https://shop.example.com/checkout",
              "expires_at": datetime(2026, 11, 25, 7, 21, 40)}
    values.update(changes)
    return PaymentRequest(**values)


def _refund_request(**changes) -> RefundRequest:
    values = {"refund_id": "ref_0000000000000000000001", "payment_id": "pay_0000000000000000000001",
                  "channel_trade_no": "4200000000202611250000000001", "amount": 3000, "payment_amount": 9900,
                  "currency": "cny", "reason": "不想学了", "notify_url": "https://shop.example.com/notify/wechat"}
    values.update(changes)
    return RefundRequest(**values)


# -- configuration ----------------------------------------------------------------------------------------

def test_the_channel_is_off_until_every_variable_is_set(keys):
    for name in _env(keys):
        if name != "wechat_fee_bps":
            assert from_settings(Settings(channel=_env(keys, **{name: ""}))) is None, name
    assert from_settings(Settings(channel=_env(keys))).name == "wechat"


def test_keys_may_be_paths_and_bad_values_are_named(keys, tmp_path):
    (tmp_path / "apiclient_key.pem").write_text(private_pem(keys.merchant))
    (tmp_path / "pub_key.pem").write_text(public_pem(keys.platform))
    paths = {"wechat_private_key": str(tmp_path / "apiclient_key.pem"),
             "wechat_public_key": str(tmp_path / "pub_key.pem")}
    channel = from_settings(Settings(channel=_env(keys, **paths)))
    assert channel is not None and channel.fee_bps == 60
    with pytest.raises(ConfigError, match="KNOWPAY_WECHAT_APIV3_KEY must be 32 bytes"):
        from_settings(Settings(channel=_env(keys, wechat_apiv3_key="too-short")))
    with pytest.raises(ConfigError, match="KNOWPAY_WECHAT_PRIVATE_KEY"):
        from_settings(Settings(channel=_env(keys, wechat_private_key=str(tmp_path / "missing.pem"))))
    with pytest.raises(ConfigError, match="KNOWPAY_WECHAT_PUBLIC_KEY"):
        from_settings(Settings(channel=_env(keys, wechat_public_key=private_pem(keys.platform))))
    with pytest.raises(ConfigError, match="https in production"):
        from_settings(Settings(env="production", channel=_env(keys, wechat_gateway="http://10.0.0.2:8100")))


# -- callbacks --------------------------------------------------------------------------------------------

def test_a_good_callback_is_accepted_as_a_succeeded_payment(keys, channel):
    headers, body = wechat_callback(keys.platform, transaction(), timestamp=NOW - 10)
    note = channel.parse_notification(headers, body)
    assert (note.kind, note.payment_id, note.status, note.amount, note.currency) == (
        "payment", "pay_0000000000000000000001", "succeeded", 9900, "cny")
    assert note.channel_trade_no == "4200000000202611250000000001"
    assert note.event_id == "EV-2018022511223320873"
    assert note.occurred_at == datetime(2026, 11, 25, 7, 6, 0)  # 15:06 in Beijing
    # Header names arrive in any case.
    assert channel.parse_notification({k.lower(): v for k, v in headers.items()}, body).status == "succeeded"


def test_wechatpayv3_reads_the_test_callbacks_as_wechat_pay_means_them(keys):
    # Proves the test's own callbacks follow WeChat Pay's format, as its maintained client reads it.
    client = _wechatpayv3(keys, WeChatPayType.NATIVE)
    headers, body = wechat_callback(keys.platform, transaction(), timestamp=NOW)
    assert client.callback(headers, body)["resource"] == transaction()


def _tampered_ciphertext(keys):
    headers, body = wechat_callback(keys.platform, transaction(), timestamp=NOW)
    envelope = json.loads(body)
    sealed = bytearray(base64.b64decode(envelope["resource"]["ciphertext"]))
    sealed[5] ^= 0x01
    envelope["resource"]["ciphertext"] = base64.b64encode(bytes(sealed)).decode()
    body = json.dumps(envelope).encode()
    # Signed again after the change, so only the AES-GCM tag can catch it.
    return {**headers, **wechat_signed(keys.platform, body, timestamp=NOW)}, body


def _tampered_body(keys):
    headers, body = wechat_callback(keys.platform, transaction(), timestamp=NOW)
    return headers, body.replace(b'"summary": "', b'"summary": "!')


REJECTED = {
    "tampered ciphertext": (_tampered_ciphertext, "does not decrypt"),
    "tampered body": (_tampered_body, "does not verify"),
    "signed with another key": (lambda k: wechat_callback(k.stranger, transaction(), timestamp=NOW),
                                "does not verify"),
    "unknown serial": (lambda k: wechat_callback(k.platform, transaction(), timestamp=NOW,
                                                 serial="PUB_KEY_ID_0000000000000000000000000099"),
                       "not the WeChat Pay public key we know"),
    "SIGNTEST probe": (lambda k: wechat_callback(k.platform, transaction(), timestamp=NOW,
                                                 signature="WECHATPAY/SIGNTEST/" + "A" * 64), "SIGNTEST"),
    "301 s old": (lambda k: wechat_callback(k.platform, transaction(), timestamp=NOW - 301), "301 s old"),
    "301 s in the future": (lambda k: wechat_callback(k.platform, transaction(), timestamp=NOW + 301),
                            "301 s in the future"),
    "another APIv3 key": (lambda k: wechat_callback(k.platform, transaction(), timestamp=NOW,
                                                    apiv3_key="b" * 32), "does not decrypt"),
    "another mchid": (lambda k: wechat_callback(k.platform, transaction(mchid="1900000110"), timestamp=NOW),
                      "mchid"),
    "another appid": (lambda k: wechat_callback(k.platform, transaction(appid="wx0000000000000001"),
                                                timestamp=NOW), "appid"),
    "refund for another mchid": (lambda k: wechat_callback(k.platform, refund_resource(mchid="1900000110"),
                                                           timestamp=NOW, event_type="REFUND.SUCCESS"),
                                 "mchid"),
    "unknown event": (lambda k: wechat_callback(k.platform, transaction(), timestamp=NOW,
                                                event_type="MCHTRANSFER.BILL.FINISHED"),
                      "unknown event_type"),
    "no signature": (lambda k: ({}, b"{}"), "Wechatpay-Timestamp header is missing"),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_a_callback_that_does_not_check_out_is_rejected_with_its_reason(keys, channel, case):
    build, reason = REJECTED[case]
    headers, body = build(keys)
    with pytest.raises(NotificationRejected) as refused:
        channel.parse_notification(headers, body)
    assert reason in refused.value.message


def test_timestamps_exactly_five_minutes_away_still_pass(keys, channel):
    for moment in (NOW - 300, NOW + 300):
        headers, body = wechat_callback(keys.platform, transaction(), timestamp=moment)
        assert channel.parse_notification(headers, body).status == "succeeded"


@pytest.mark.parametrize(("state", "status"), [
    ("CLOSED", "failed"), ("PAYERROR", "failed"), ("REVOKED", "failed"), ("NOTPAY", "pending"),
    ("USERPAYING", "pending")])
def test_other_trade_states_are_mapped(keys, channel, state, status):
    headers, body = wechat_callback(keys.platform, transaction(trade_state=state), timestamp=NOW)
    note = channel.parse_notification(headers, body)
    assert note.status == status
    if status == "failed":
        assert note.details["code"] == f"wechat_{state.lower()}"


@pytest.mark.parametrize(("event", "status"), [("REFUND.SUCCESS", "succeeded"), ("REFUND.ABNORMAL", "failed"),
                                               ("REFUND.CLOSED", "failed")])
def test_refund_callbacks_name_our_refund(keys, channel, event, status):
    headers, body = wechat_callback(keys.platform, refund_resource(event.split(".")[1]), timestamp=NOW,
                                    event_type=event)
    note = channel.parse_notification(headers, body)
    assert (note.kind, note.payment_id, note.refund_id, note.amount, note.currency, note.status) == (
        "refund", "pay_0000000000000000000001", "ref_0000000000000000000001", 3000, "cny", status)
    assert note.details["refund_no"] == "50000000382019052709732678859"


def test_acknowledgements_are_204_or_a_json_fail():
    channel = WeChatPayChannel.__new__(WeChatPayChannel)
    assert channel.acknowledge(True) == channel.acknowledge(True, "ignored")
    assert channel.acknowledge(True).status == 204 and channel.acknowledge(True).body == ""
    refused = channel.acknowledge(False, "amount 1 does not match")
    assert (refused.status, refused.content_type) == (400, "application/json")
    assert json.loads(refused.body) == {"code": "FAIL", "message": "amount 1 does not match"}


# -- requests and answers ---------------------------------------------------------------------------------

_AUTH = re.compile(r'^WECHATPAY2-SHA256-RSA2048 (.+)$')


def _verify_authorization(keys: Keys, sent: Sent) -> dict[str, str]:
    """Check a request's Authorization as WeChat Pay does, written from its documentation."""
    match = _AUTH.match(sent.headers["Authorization"])
    assert match, sent.headers["Authorization"]
    fields = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
    url = sent.url[len(GATEWAY):]
    message = f"{sent.method}\n{url}\n{fields['timestamp']}\n{fields['nonce_str']}\n{sent.body.decode()}\n"
    keys.merchant.public_key().verify(base64.b64decode(fields["signature"]), message.encode(),
                                      padding.PKCS1v15(), hashes.SHA256())
    return fields


def test_a_native_order_is_signed_so_wechat_pay_can_verify_it(keys, channel, fake):
    fake.script.append((200, {"code_url": "weixin://wxpay/bizpayurl?pr=p4lpSuKzz"}))
    created = channel.create(_request())
    assert created.action.to_json() == {"type": "qr_code",
                                        "code_url": "weixin://wxpay/bizpayurl?pr=p4lpSuKzz"}
    sent = fake.sent[0]
    assert (sent.method, sent.url) == ("POST", f"{GATEWAY}/v3/pay/transactions/native")
    fields = _verify_authorization(keys, sent)
    assert (fields["mchid"], fields["serial_no"], fields["timestamp"]) == (MCH_ID, CERT_SERIAL, str(NOW))
    assert len(fields["nonce_str"]) == 32
    assert sent.headers["Wechatpay-Serial"] == PUBLIC_KEY_ID
    order = json.loads(sent.body)
    assert order == {"appid": APP_ID, "mchid": MCH_ID, "description": "Course A",
                     "out_trade_no": "pay_0000000000000000000001", "time_expire": "2026-11-25T15:21:40+08:00",
                     "notify_url": "https://shop.example.com/notify/wechat",
                     "amount": {"total": 9900, "currency": "CNY"}}


def test_a_signed_get_covers_its_query_string(keys, channel, fake):
    unpaid = {**transaction(trade_state="NOTPAY"), "transaction_id": None, "success_time": None}
    fake.script.append((200, unpaid))
    assert channel.query("pay_0000000000000000000001").status == "pending"
    sent = fake.sent[0]
    assert sent.url == f"{GATEWAY}/v3/pay/transactions/out-trade-no/pay_0000000000000000000001?mchid={MCH_ID}"
    assert sent.body == b""
    _verify_authorization(keys, sent)


def test_a_jsapi_order_gives_parameters_signed_as_wechat_documents(keys, channel, fake):
    fake.script.append((200, {"prepay_id": "wx201410272009395522657a690389285100"}))
    created = channel.create(_request("jsapi", openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"))
    assert json.loads(fake.sent[0].body)["payer"] == {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}
    assert fake.sent[0].url.endswith("/v3/pay/transactions/jsapi")
    action = created.action.to_json()
    params = action["params"]
    assert action["type"] == "jsapi"
    assert (params["appId"], params["timeStamp"], params["package"], params["signType"]) == (
        APP_ID, str(NOW), "prepay_id=wx201410272009395522657a690389285100", "RSA")
    message = f"{params['appId']}\n{params['timeStamp']}\n{params['nonceStr']}\n{params['package']}\n"
    keys.merchant.public_key().verify(base64.b64decode(params["paySign"]), message.encode(),
                                      padding.PKCS1v15(), hashes.SHA256())
    # wechatpayv3's own signer, with our key, gives the very same (deterministic) signature.
    client = _wechatpayv3(keys, WeChatPayType.JSAPI)
    assert client.sign([params["appId"], params["timeStamp"], params["nonceStr"], params["package"]]) == \
        params["paySign"]


def test_orders_wechat_cannot_take_are_refused_before_sending(channel, fake):
    with pytest.raises(InvalidRequest, match="openid"):
        channel.create(_request("jsapi"))
    with pytest.raises(InvalidRequest, match="CNY"):
        channel.create(_request(currency="usd"))
    assert fake.sent == []


ANSWERS_REFUSED = {
    "tampered body": {"tamper": True},
    "signed with another key": {"sign_with": "stranger"},
    "another serial": {"serial": "PUB_KEY_ID_0000000000000000000000000099"},
    "not signed": {"signed": False},
    "stale": {"timestamp": NOW - 400},
}


@pytest.mark.parametrize("case", sorted(ANSWERS_REFUSED))
def test_an_answer_whose_signature_does_not_check_out_is_not_believed(keys, case):
    changes = dict(ANSWERS_REFUSED[case])
    if changes.get("sign_with") == "stranger":
        changes["sign_with"] = keys.stranger
    fake = FakeWeChatPay(keys.platform, script=[(200, transaction())], **changes)
    with pytest.raises(ChannelUnavailable, match="failed verification"):
        _channel(keys, fake).query("pay_0000000000000000000001")


@pytest.mark.parametrize("status", [500, 502, 429])
def test_server_errors_mean_try_again_later(keys, status):
    fake = FakeWeChatPay(keys.platform, script=[(status, {"code": "SYSTEM_ERROR", "message": "系统错误"})])
    with pytest.raises(ChannelUnavailable):
        _channel(keys, fake).create(_request())


def test_a_gateway_that_cannot_be_reached_is_unavailable(keys):
    config = WeChatPayConfig.from_settings(Settings(channel=_env(keys, wechat_gateway="http://127.0.0.1:9")))
    channel = WeChatPayChannel(config, transport=RequestsTransport(timeout=(0.5, 0.5), trust_env=False))
    with pytest.raises(ChannelUnavailable, match="could not be reached"):
        channel.query("pay_0000000000000000000001")


def test_a_refused_signature_is_a_configuration_fault_not_a_result(keys):
    fake = FakeWeChatPay(keys.platform, script=[(401, {"code": "SIGN_ERROR", "message": "签名错误"})])
    with pytest.raises(ChannelUnavailable, match="KNOWPAY_WECHAT_"):
        _channel(keys, fake).refund(_refund_request())


def test_query_maps_trade_states_and_a_missing_trade(keys):
    answers = [(200, transaction()), (200, transaction(trade_state="REFUND")),
               (200, transaction(trade_state="CLOSED")), (200, transaction(trade_state="PAYERROR")),
               (404, {"code": "ORDER_NOT_EXIST", "message": "订单不存在"})]
    channel = _channel(keys, FakeWeChatPay(keys.platform, script=answers))
    paid = channel.query("pay_0000000000000000000001")
    assert (paid.status, paid.amount, paid.currency, paid.channel_trade_no, paid.paid_at) == (
        "succeeded", 9900, "cny", "4200000000202611250000000001", datetime(2026, 11, 25, 7, 6))
    assert [channel.query("pay_0000000000000000000001").status for _ in range(4)] == [
        "succeeded", "closed", "failed", "not_found"]


def test_close_asks_again_so_a_paid_trade_is_reported_paid(keys, fake):
    fake.script += [(400, {"code": "ORDERPAID", "message": "订单已支付"}), (200, transaction())]
    assert _channel(keys, fake).close("pay_0000000000000000000001").status == "succeeded"
    assert [s.url.split("?")[0] for s in fake.sent] == [
        f"{GATEWAY}/v3/pay/transactions/out-trade-no/pay_0000000000000000000001/close",
        f"{GATEWAY}/v3/pay/transactions/out-trade-no/pay_0000000000000000000001"]
    assert json.loads(fake.sent[0].body) == {"mchid": MCH_ID}


def _refund_answer(status: str) -> dict:
    return {"refund_id": "50000000382019052709732678859", "out_refund_no": "ref_0000000000000000000001",
            "transaction_id": "4200000000202611250000000001", "out_trade_no": "pay_0000000000000000000001",
            "channel": "ORIGINAL", "status": status,
            "amount": {"total": 9900, "refund": 3000, "currency": "CNY"}}


def test_refunds_carry_our_refund_id_and_map_every_status(keys, fake):
    fake.script += [(200, _refund_answer(s)) for s in ("PROCESSING", "SUCCESS", "ABNORMAL", "CLOSED")]
    fake.script.append((400, {"code": "INVALID_REQUEST", "message": "申请退款金额超过订单可退金额"}))
    channel = _channel(keys, fake)
    results = [channel.refund(_refund_request()) for _ in range(5)]
    assert [(r.status, r.failure_code) for r in results] == [
        ("pending", None), ("succeeded", None), ("failed", "refund_abnormal"), ("failed", "refund_closed"),
        ("failed", "invalid_request")]
    assert results[0].channel_refund_no == "50000000382019052709732678859"
    asked = json.loads(fake.sent[0].body)
    assert asked == {"out_trade_no": "pay_0000000000000000000001",
                     "out_refund_no": "ref_0000000000000000000001",
                     "notify_url": "https://shop.example.com/notify/wechat", "reason": "不想学了",
                     "amount": {"refund": 3000, "total": 9900, "currency": "CNY"}}
    _verify_authorization(keys, fake.sent[0])


def test_a_refund_wechat_never_saw_stays_pending(keys, fake):
    fake.script += [(404, {"code": "RESOURCE_NOT_EXISTS", "message": "退款单不存在"}),
                    (200, _refund_answer("SUCCESS"))]
    channel = _channel(keys, fake)
    assert channel.query_refund(_refund_request()).status == "pending"
    assert channel.query_refund(_refund_request()).status == "succeeded"
    assert fake.sent[0].url == f"{GATEWAY}/v3/refund/domestic/refunds/ref_0000000000000000000001"


# -- bills ------------------------------------------------------------------------------------------------

BILL_HEADER = ("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,"
               "货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,"
               "商户数据包,手续费,费率,订单金额,申请退款金额,费率备注")


def _bill_row(*cells: str) -> str:
    return ",".join("`" + cell for cell in cells)


OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
PAID = _bill_row("2026-11-25 10:00:00", APP_ID, MCH_ID, "0", "", "4200000000202611250000000001",
                 "pay_0000000000000000000001", OPENID, "NATIVE", "SUCCESS", "OTHERS", "CNY", "99.00", "0.00",
                 "0", "0", "0.00", "0.00", "", "", "Python 课, 第一期", "", "0.59400", "0.60%", "99.00", "0.00",
                 "")
REFUNDED = _bill_row("2026-11-25 11:30:00", APP_ID, MCH_ID, "0", "", "4200000000202611250000000001",
                     "pay_0000000000000000000001", OPENID, "NATIVE", "REFUND", "OTHERS", "CNY", "0.00",
                     "0.00", "50000000382019052709732678859", "ref_0000000000000000000001", "30.00", "0.00",
                     "ORIGINAL", "SUCCESS", "Python 课, 第一期", "", "-0.18000", "0.60%", "99.00", "30.00", "")
REVOKED = _bill_row("2026-11-25 12:00:00", APP_ID, MCH_ID, "0", "", "4200000000202611250000000002",
                    "pay_0000000000000000000002", OPENID, "MICROPAY", "REVOKED", "OTHERS", "CNY", "0.00",
                    "0.00", "0", "0", "0.00", "0.00", "", "", "x", "", "0.00000", "0.60%", "5.00", "0.00", "")
SUMMARY = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"


def _bill(*rows: str, count: int | None = None, summary: bool = True) -> bytes:
    lines = [BILL_HEADER, *rows]
    if summary:
        lines += [SUMMARY, _bill_row(str(len(rows) if count is None else count), "99.00", "30.00", "0.00",
                                     "0.41400", "203.00", "30.00")]
    return ("\ufeff" + "\r\n".join(lines) + "\r\n").encode()


def test_a_trade_bill_with_backticks_and_a_summary_is_read(channel):
    lines = channel.parse_bill(_bill(PAID, REFUNDED, REVOKED))
    assert [(l.kind, l.payment_id, l.refund_id, l.amount, l.currency, l.status, l.fee) for l in lines] == [
        ("payment", "pay_0000000000000000000001", None, 9900, "cny", "succeeded", 59),
        ("refund", "pay_0000000000000000000001", "ref_0000000000000000000001", 3000, "cny", "succeeded", 18)]
    assert lines[0].channel_trade_no == "4200000000202611250000000001"
    assert lines[0].occurred_at == datetime(2026, 11, 25, 2, 0, 0)  # Beijing 10:00 is 02:00 UTC


@pytest.mark.parametrize(("bill", "reason"), [
    (_bill(PAID, REFUNDED, summary=False), "no summary"),
    (_bill(PAID, REFUNDED, count=3), "states 3 trades but lists 2"),
    (_bill(PAID.replace("`99.00", "`99.0x")), "Line 2"),
    (_bill(PAID[:-40]), "Line 2"),
    ("交易时间,商户订单号\r\n".encode(), "lacks the columns"),
])
def test_a_bill_that_cannot_be_trusted_is_refused(channel, bill, reason):
    with pytest.raises(InvalidRequest, match=reason):
        channel.parse_bill(bill)


def test_fetching_a_bill_downloads_the_file_and_checks_its_sha1(keys, fake):
    content = _bill(PAID)
    ticket = {"hash_type": "SHA1", "hash_value": hashlib.sha1(content).hexdigest(),
              "download_url": f"{GATEWAY}/v3/billdownload/file?token=6XIv5TUPto7pByrTQKhd6kwvyKLG2uY2wMM"}
    fake.script += [(200, ticket), (200, content)]
    channel = _channel(keys, fake)
    assert channel.fetch_bill("2026-11-24") == content
    assert fake.sent[0].url == f"{GATEWAY}/v3/bill/tradebill?bill_date=2026-11-24&bill_type=ALL"
    assert fake.sent[1].url == ticket["download_url"]
    _verify_authorization(keys, fake.sent[1])

    fake.script += [(200, {**ticket, "hash_value": "0" * 40}), (200, content)]
    with pytest.raises(ChannelUnavailable, match="SHA1"):
        channel.fetch_bill("2026-11-24")
    fake.script += [(200, {**ticket, "download_url": "https://evil.example.com/file?token=x"})]
    with pytest.raises(ChannelUnavailable, match="outside"):
        channel.fetch_bill("2026-11-24")
    assert len(fake.sent) == 5  # nothing went to the foreign host
    with pytest.raises(InvalidRequest):
        channel.fetch_bill("yesterday")

