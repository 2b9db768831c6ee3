"""The sandbox adapter reads and verifies notifications and bills without any network.

Notifications are signed here by test code written from the protocol (hex HMAC-SHA256 of
"<timestamp>.<raw body>"), never by the adapter's own signing function.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime

import pytest

from knowpay.channels.base import NotificationRejected, PaymentRequest
from knowpay.channels.sandbox import SandboxChannel, from_settings
from knowpay.config import ConfigError, Settings
from knowpay.domain.errors import InvalidRequest
from knowpay.sandbox import SandboxConfig

MERCHANT = "kp-unit-merchant"
SECRET = "unit-test-sandbox-secret"
NOW = 1_795_000_000  # 2026-11-18T11:06:40Z


def signed(body: bytes, *, secret: str = SECRET, merchant: str = MERCHANT,
           timestamp: int = NOW) -> dict[str, str]:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"Sandbox-Merchant": merchant, "Sandbox-Timestamp": str(timestamp), "Sandbox-Signature": mac}


def payment_body(**changes: object) -> bytes:
    payload = {"notify_id": "sbn_001", "type": "payment", "merchant_id": MERCHANT, "out_trade_no": "pay_abc",
               "trade_no": "sbx123", "status": "SUCCESS", "amount": 9900, "currency": "CNY",
               "paid_at": "2026-11-18T11:06:30.000Z", "decided_at": "2026-11-18T11:06:30.000Z"}
    payload.update(changes)
    return json.dumps(payload).encode()


@pytest.fixture
def channel() -> SandboxChannel:
    config = SandboxConfig(url="http://127.0.0.1:9", merchant_id=MERCHANT, secret=SECRET, fee_bps=60)
    return SandboxChannel(config, clock=lambda: NOW)


def test_a_well_signed_payment_notification_is_read_in_our_terms(channel):
    body = payment_body()
    note = channel.parse_notification(signed(body), body)
    assert (note.kind, note.payment_id, note.status) == ("payment", "pay_abc", "succeeded")
    assert (note.amount, note.currency) == (9900, "cny")
    assert note.channel_trade_no == "sbx123"
    assert note.event_id == "sbn_001"
    assert note.occurred_at == datetime(2026, 11, 18, 11, 6, 30)
    assert note.refund_id is None


def test_header_names_are_matched_whatever_their_case(channel):
    body = payment_body()
    headers = {name.lower(): value for name, value in signed(body).items()}
    assert channel.parse_notification(headers, body).status == "succeeded"


def test_a_declined_payment_is_a_failure_with_a_reason(channel):
    body = payment_body(status="DECLINED", paid_at=None)
    note = channel.parse_notification(signed(body), body)
    assert note.status == "failed"
    assert note.details["code"] == "declined"


def test_a_refund_notification_names_our_refund(channel):
    body = payment_body(type="refund", status="REFUND_SUCCESS", amount=3000, out_refund_no="ref_1",
                        refund_no="sbr9", refunded_at="2026-11-18T11:06:35.000Z")
    note = channel.parse_notification(signed(body), body)
    assert (note.kind, note.status, note.amount, note.refund_id) == ("refund", "succeeded", 3000, "ref_1")
    assert note.details["refund_no"] == "sbr9"
    assert note.occurred_at == datetime(2026, 11, 18, 11, 6, 35)


def test_amounts_are_reported_not_judged(channel):
    # Whether 1 fen matches our payment is the service's question, not the adapter's.
    body = payment_body(amount=1)
    assert channel.parse_notification(signed(body), body).amount == 1


def test_a_tampered_body_is_rejected(channel):
    headers = signed(payment_body())
    with pytest.raises(NotificationRejected, match="does not match"):
        channel.parse_notification(headers, payment_body(amount=1))


def test_a_signature_made_with_another_secret_is_rejected(channel):
    body = payment_body()
    with pytest.raises(NotificationRejected, match="does not match"):
        channel.parse_notification(signed(body, secret="someone-else"), body)


def test_another_merchant_is_rejected(channel):
    body = payment_body(merchant_id="kp-other")
    with pytest.raises(NotificationRejected, match="unknown merchant"):
        channel.parse_notification(signed(body, merchant="kp-other"), body)


def test_a_body_naming_another_merchant_is_rejected_even_when_signed_by_ours(channel):
    body = payment_body(merchant_id="kp-other")
    with pytest.raises(NotificationRejected, match="merchant_id"):
        channel.parse_notification(signed(body), body)


@pytest.mark.parametrize("offset", [-301, 301, -100_000])
def test_a_timestamp_more_than_five_minutes_away_is_rejected(channel, offset):
    body = payment_body()
    with pytest.raises(NotificationRejected, match="from now"):
        channel.parse_notification(signed(body, timestamp=NOW + offset), body)


@pytest.mark.parametrize("offset", [-300, 299])
def test_a_timestamp_within_five_minutes_is_accepted(channel, offset):
    body = payment_body()
    assert channel.parse_notification(signed(body, timestamp=NOW + offset), body).status == "succeeded"


@pytest.mark.parametrize("missing", ["Sandbox-Merchant", "Sandbox-Timestamp", "Sandbox-Signature"])
def test_a_missing_signature_header_is_rejected(channel, missing):
    body = payment_body()
    headers = signed(body)
    del headers[missing]
    with pytest.raises(NotificationRejected, match="missing"):
        channel.parse_notification(headers, body)


def test_a_timestamp_that_is_not_a_number_is_rejected(channel):
    body = payment_body()
    headers = signed(body) | {"Sandbox-Timestamp": "yesterday"}
    with pytest.raises(NotificationRejected, match="unix seconds"):
        channel.parse_notification(headers, body)


@pytest.mark.parametrize("body, reason", [
    (b"amount=9900", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    (payment_body(amount=9900.0), "amount"),
    (payment_body(amount="9900"), "amount"),
    (payment_body(amount=True), "amount"),
    (payment_body(status="TRADE_FINISHED"), "unknown payment status"),
    (payment_body(type="chargeback"), "unknown type"),
    (payment_body(out_trade_no=None), "out_trade_no"),
    (payment_body(type="refund", status="REFUND_SUCCESS"), "out_refund_no"),
    (payment_body(paid_at="last tuesday"), "paid_at"),
])
def test_a_malformed_body_is_rejected_with_a_reason(channel, body, reason):
    with pytest.raises(NotificationRejected, match=reason):
        channel.parse_notification(signed(body), body)


def test_acknowledgements_are_the_exact_words_the_gateway_waits_for(channel):
    assert (channel.acknowledge(True).status, channel.acknowledge(True).body) == (200, "success")
    assert (channel.acknowledge(False, "bad").status, channel.acknowledge(False).body) == (400, "failure")
    assert channel.acknowledge(True).content_type == "text/plain"


def test_a_float_amount_never_reaches_the_gateway(channel):
    request = PaymentRequest(payment_id="pay_x", amount=99.0, currency="cny", subject="Course", method=None,
                             notify_url="http://kp/notify/sandbox", return_url="http://kp/r",
                             expires_at=datetime(2026, 11, 18, 9, 0))
    with pytest.raises(InvalidRequest, match="integer"):
        channel.create(request)


def test_an_unknown_method_is_refused(channel):
    request = PaymentRequest(payment_id="pay_x", amount=9900, currency="cny", subject="Course",
                             method="jsapi",
                             notify_url="http://kp/notify/sandbox", return_url="http://kp/r",
                             expires_at=datetime(2026, 11, 18, 9, 0))
    with pytest.raises(InvalidRequest, match="method"):
        channel.create(request)


BILL = (
    b"kind,out_trade_no,trade_no,out_refund_no,amount,currency,status,occurred_at,fee\n"
    b"payment,pay_a,sbx1,,9900,CNY,SUCCESS,2026-11-18T16:26:30+08:00,59\n"
    b"refund,pay_a,sbx1,ref_1,3000,CNY,REFUND_SUCCESS,2026-11-18T16:30:00+08:00,18\n"
)


def test_a_bill_is_read_line_by_line_with_integer_amounts_and_utc_times(channel):
    payment, refund = channel.parse_bill(BILL)
    assert (payment.kind, payment.payment_id, payment.channel_trade_no) == ("payment", "pay_a", "sbx1")
    assert (payment.amount, payment.currency, payment.fee, payment.status) == (9900, "cny", 59, "succeeded")
    assert payment.occurred_at == datetime(2026, 11, 18, 8, 26, 30)
    assert payment.refund_id is None
    assert (refund.kind, refund.refund_id, refund.amount, refund.fee) == ("refund", "ref_1", 3000, 18)


def test_a_bill_with_a_decimal_amount_is_refused(channel):
    with pytest.raises(InvalidRequest, match="Line 2"):
        channel.parse_bill(BILL.replace(b",9900,", b",99.00,"))


def test_a_bill_without_its_columns_is_refused(channel):
    with pytest.raises(InvalidRequest, match="columns"):
        channel.parse_bill(b"order,amount\npay_a,9900\n")


def test_the_sandbox_is_off_in_production():
    assert from_settings(Settings(env="production")) is None


def test_the_sandbox_has_development_defaults():
    channel = from_settings(Settings())
    assert (channel.name, channel.fee_bps) == ("sandbox", 60)


def test_the_fee_rate_comes_from_the_environment():
    assert from_settings(Settings(channel={"sandbox_fee_bps": "38"})).fee_bps == 38
    with pytest.raises(ConfigError, match="KNOWPAY_SANDBOX_FEE_BPS"):
        from_settings(Settings(channel={"sandbox_fee_bps": "0.6"}))
