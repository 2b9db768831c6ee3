"""The Stripe adapter's webhook verification and event mapping, with events signed by Stripe's own library.

No network: the adapter's client points at an address nothing listens on and is never called here.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest
import stripe

from knowpay.channels.base import NotificationRejected, PaymentRequest
from knowpay.channels.stripe import StripeChannel, StripeConfig, from_settings
from knowpay.config import ConfigError, Settings
from knowpay.domain.errors import InvalidRequest

WEBHOOK_SECRET = "whsec_unit_test_secret"
PAYMENT_ID = "pay_01hunittest"


@pytest.fixture
def channel() -> StripeChannel:
    return StripeChannel(StripeConfig(secret_key="sk_test_unit", webhook_secret=WEBHOOK_SECRET,
                                      api_base="http://127.0.0.1:9"))


def intent(status: str = "succeeded", *, amount: int = 9900, received: int | None = None, **extra) -> dict:
    return {"id": "pi_3unit", "object": "payment_intent", "amount": amount,
            "amount_received": amount if received is None and status == "succeeded" else (received or 0),
            "currency": "cny", "status": status, "metadata": {"payment_id": PAYMENT_ID}, **extra}


def refund_object(status: str = "succeeded", *, amount: int = 500, **extra) -> dict:
    return {"id": "re_3unit", "object": "refund", "amount": amount, "currency": "cny", "status": status,
            "payment_intent": "pi_3unit", "metadata": {"refund_id": "ref_01hunit", "payment_id": PAYMENT_ID},
            **extra}


def event(event_type: str, obj: dict, *, event_id: str = "evt_1unit") -> bytes:
    return json.dumps({"id": event_id, "object": "event", "type": event_type, "created": 1_795_600_000,
                       "livemode": False, "data": {"object": obj}}).encode()


def signed(body: bytes, *, secret: str = WEBHOOK_SECRET, at: float | None = None) -> dict[str, str]:
    """Headers as Stripe sends them, signed by Stripe's library (never by the adapter under test)."""
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret,
                                                               timestamp=int(at if at is not None else time.time()))
    return {"Content-Type": "application/json", "Stripe-Signature": header}


def rejected(channel: StripeChannel, headers: dict[str, str], body: bytes) -> str:
    with pytest.raises(NotificationRejected) as refused:
        channel.parse_notification(headers, body)
    return refused.value.message


# -- signatures -------------------------------------------------------------------------------------

def test_a_signed_payment_intent_succeeded_is_a_succeeded_payment(channel):
    body = event("payment_intent.succeeded", intent())
    note = channel.parse_notification(signed(body), body)
    assert (note.kind, note.payment_id, note.status) == ("payment", PAYMENT_ID, "succeeded")
    assert (note.amount, note.currency, note.channel_trade_no) == (9900, "cny", "pi_3unit")
    assert note.event_id == "evt_1unit"  # KnowPay's store sees repeats of the same event by this id
    assert note.occurred_at == datetime(2026, 11, 25, 9, 46, 40)


def test_the_header_name_is_read_in_any_case(channel):
    body = event("payment_intent.succeeded", intent())
    headers = {"stripe-signature": signed(body)["Stripe-Signature"]}
    assert channel.parse_notification(headers, body).status == "succeeded"


def test_a_tampered_body_is_refused(channel):
    body = event("payment_intent.succeeded", intent())
    tampered = body.replace(b"9900", b"9901")
    assert "no v1 signature matches" in rejected(channel, signed(body), tampered)


def test_a_signature_made_with_another_secret_is_refused(channel):
    body = event("payment_intent.succeeded", intent())
    assert "no v1 signature matches" in rejected(channel, signed(body, secret="whsec_someone_else"), body)


def test_a_signature_older_than_five_minutes_is_refused(channel):
    body = event("payment_intent.succeeded", intent())
    assert "more than 300 s old" in rejected(channel, signed(body, at=time.time() - 301), body)


def test_a_signature_dated_more_than_five_minutes_ahead_is_refused(channel):
    # Stripe's library checks only the past; the adapter refuses the future too.
    body = event("payment_intent.succeeded", intent())
    assert "in the future" in rejected(channel, signed(body, at=time.time() + 301), body)


def test_a_little_clock_skew_either_way_is_accepted(channel):
    body = event("payment_intent.succeeded", intent())
    for skew in (-240, 240):
        assert channel.parse_notification(signed(body, at=time.time() + skew), body).status == "succeeded"


def test_a_missing_signature_header_is_refused(channel):
    body = event("payment_intent.succeeded", intent())
    assert "no Stripe-Signature header" in rejected(channel, {"Content-Type": "application/json"}, body)


def test_a_header_without_a_v1_signature_is_refused(channel):
    body = event("payment_intent.succeeded", intent())
    header = signed(body)["Stripe-Signature"].replace("v1=", "v0=")
    assert "no v1 signature" in rejected(channel, {"Stripe-Signature": header}, body)


def test_any_matching_v1_signature_among_several_is_enough(channel):
    # Stripe signs with every active secret while one is being rolled.
    body = event("payment_intent.succeeded", intent())
    good = signed(body)["Stripe-Signature"]
    timestamp, signature = good.split(",")
    header = f"{timestamp},v1={'0' * 64},{signature}"
    assert channel.parse_notification({"Stripe-Signature": header}, body).status == "succeeded"


def test_unreadable_headers_and_bodies_are_refused(channel):
    body = event("payment_intent.succeeded", intent())
    assert "cannot be read" in rejected(channel, {"Stripe-Signature": "t=soon,v1=abc"}, body)
    assert "not ASCII" in rejected(channel, {"Stripe-Signature": "t=1,v1=é"}, body)
    assert "not UTF-8" in rejected(channel, {"Stripe-Signature": "t=1,v1=ab"}, b"\xff\xfe")
    assert "not JSON" in rejected(channel, signed(b"not json"), b"not json")
    assert "not a Stripe event" in rejected(channel, signed(b"[1, 2]"), b"[1, 2]")


# -- event types ------------------------------------------------------------------------------------

def test_payment_failed_is_a_failed_payment_with_stripes_reason(channel):
    failed = intent("requires_payment_method", last_payment_error={
        "type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
        "message": "Your card has insufficient funds."})
    body = event("payment_intent.payment_failed", failed)
    note = channel.parse_notification(signed(body), body)
    assert (note.kind, note.status, note.amount) == ("payment", "failed", 9900)  # what was asked, not received
    assert note.details["code"] == "insufficient_funds"
    assert note.details["message"] == "Your card has insufficient funds."


def test_a_succeeded_intent_reports_the_amount_received(channel):
    body = event("payment_intent.succeeded", intent(amount=9900, received=9800))
    assert channel.parse_notification(signed(body), body).amount == 9800


def test_an_intent_without_our_payment_id_is_refused(channel):
    body = event("payment_intent.succeeded", intent(metadata={}))
    assert "no metadata.payment_id" in rejected(channel, signed(body), body)


def checkout_session(payment_status: str = "paid", *, status: str = "complete", **extra) -> dict:
    return {"id": "cs_test_unit", "object": "checkout.session", "mode": "payment", "amount_total": 9900,
            "currency": "cny", "status": status, "payment_status": payment_status, "client_reference_id": PAYMENT_ID,
            "metadata": {"payment_id": PAYMENT_ID},
            "payment_intent": "pi_3unit" if payment_status == "paid" else None, **extra}


def test_a_paid_checkout_session_is_a_succeeded_payment_of_its_intent(channel):
    body = event("checkout.session.completed", checkout_session())
    note = channel.parse_notification(signed(body), body)
    assert (note.kind, note.payment_id, note.status) == ("payment", PAYMENT_ID, "succeeded")
    # The intent, not the session: the same trade number as payment_intent.succeeded, which refunds name.
    assert (note.amount, note.currency, note.channel_trade_no) == (9900, "cny", "pi_3unit")
    assert note.details["session_id"] == "cs_test_unit"


def test_an_expanded_payment_intent_on_a_session_is_read_by_its_id(channel):
    body = event("checkout.session.completed", checkout_session(payment_intent={"id": "pi_3unit",
                                                                                "object": "payment_intent"}))
    assert channel.parse_notification(signed(body), body).channel_trade_no == "pi_3unit"


@pytest.mark.parametrize("event_type, payment_status, expected", [
    ("checkout.session.completed", "unpaid", "pending"),  # a delayed method: its async event follows
    ("checkout.session.async_payment_succeeded", "paid", "succeeded"),
    ("checkout.session.async_payment_failed", "unpaid", "failed"),
    ("checkout.session.expired", "unpaid", "pending"),  # nothing to do: the order's expiry closes the payment
])
def test_checkout_session_events_map_to_our_statuses(channel, event_type, payment_status, expected):
    status = "expired" if event_type.endswith("expired") else "complete"
    body = event(event_type, checkout_session(payment_status, status=status))
    note = channel.parse_notification(signed(body), body)
    assert (note.payment_id, note.status) == (PAYMENT_ID, expected)


def test_a_session_without_our_payment_id_is_refused(channel):
    body = event("checkout.session.completed", checkout_session(metadata={}, client_reference_id=None))
    assert "names no payment_id" in rejected(channel, signed(body), body)


def test_a_checkout_event_that_carries_no_session_is_refused(channel):
    body = event("checkout.session.completed", intent())
    assert "does not carry a checkout.session" in rejected(channel, signed(body), body)


def test_stripe_takes_the_checkout_method_or_none(channel):
    request = PaymentRequest(payment_id=PAYMENT_ID, amount=9900, currency="cny", subject="A course", method="qr",
                             notify_url="http://127.0.0.1/notify/stripe", return_url="http://127.0.0.1/done",
                             expires_at=datetime(2026, 11, 25, 10, 0))
    with pytest.raises(InvalidRequest) as refused:
        channel.create(request)
    assert (refused.value.code, refused.value.param) == ("invalid_method", "method")


@pytest.mark.parametrize("event_type", ["refund.created", "refund.updated", "charge.refund.updated"])
def test_a_succeeded_refund_event_is_a_refund_notification(channel, event_type):
    body = event(event_type, refund_object())
    note = channel.parse_notification(signed(body), body)
    assert (note.kind, note.status, note.amount, note.currency) == ("refund", "succeeded", 500, "cny")
    assert (note.refund_id, note.payment_id, note.channel_trade_no) == ("ref_01hunit", PAYMENT_ID, "pi_3unit")
    assert note.details["refund_no"] == "re_3unit"


def test_a_failed_refund_event_is_a_failed_refund(channel):
    body = event("refund.updated", refund_object("failed", failure_reason="expired_or_canceled_card"))
    note = channel.parse_notification(signed(body), body)
    assert (note.kind, note.status, note.details["code"]) == ("refund", "failed", "expired_or_canceled_card")


def test_charge_refunded_reports_the_newest_finished_refund_it_lists(channel):
    charge = {"id": "ch_3unit", "object": "charge", "amount": 9900, "currency": "cny", "payment_intent": "pi_3unit",
              "metadata": {}, "refunds": {"object": "list", "data": [
                  refund_object(amount=300, id="re_old", created=100),
                  refund_object(amount=500, id="re_new", created=200),
                  refund_object("pending", amount=700, id="re_pending", created=300)]}}
    body = event("charge.refunded", charge)
    note = channel.parse_notification(signed(body), body)
    assert (note.kind, note.amount, note.details["refund_no"]) == ("refund", 500, "re_new")


@pytest.mark.parametrize("event_type, obj", [
    ("payment_intent.created", intent("requires_payment_method")),
    ("payment_intent.processing", intent("processing")),
    ("refund.created", refund_object("pending")),
    ("customer.created", {"id": "cus_1", "object": "customer", "metadata": {}}),
])
def test_other_events_are_pending_so_knowpay_ignores_them(channel, event_type, obj):
    body = event(event_type, obj)
    note = channel.parse_notification(signed(body), body)
    assert (note.kind, note.status, note.event_id) == ("payment", "pending", "evt_1unit")


def test_an_event_without_id_type_or_object_is_refused(channel):
    body = json.dumps({"object": "event", "type": "payment_intent.succeeded", "data": {}}).encode()
    assert "malformed event" in rejected(channel, signed(body), body)


# -- answers, settings, bills -----------------------------------------------------------------------

def test_acknowledgements_are_json_200_or_400(channel):
    ok = channel.acknowledge(True)
    assert (ok.status, json.loads(ok.body), ok.content_type) == (200, {"received": True}, "application/json")
    refused = channel.acknowledge(False, "amount 1 does not match")
    assert (refused.status, json.loads(refused.body)) == (400, {"error": {"message": "amount 1 does not match"}})


def test_the_channel_is_off_without_its_secret_key_or_webhook_secret():
    assert from_settings(Settings(channel={})) is None
    assert from_settings(Settings(channel={"stripe_secret_key": "sk_test_x"})) is None
    assert from_settings(Settings(channel={"stripe_webhook_secret": "whsec_x"})) is None
    channel = from_settings(Settings(channel={"stripe_secret_key": "sk_test_x", "stripe_webhook_secret": "whsec_x"}))
    assert (channel.name, channel.fee_bps) == ("stripe", 290)


def test_bad_stripe_settings_name_the_variable():
    base = {"stripe_secret_key": "sk_test_x", "stripe_webhook_secret": "whsec_x"}
    with pytest.raises(ConfigError, match="KNOWPAY_STRIPE_FEE_BPS"):
        from_settings(Settings(channel={**base, "stripe_fee_bps": "2.9"}))
    with pytest.raises(ConfigError, match="KNOWPAY_STRIPE_API_BASE"):
        from_settings(Settings(channel={**base, "stripe_api_base": "api.stripe.com"}))
    assert from_settings(Settings(channel={**base, "stripe_fee_bps": "340"})).fee_bps == 340


def test_a_bill_of_balance_transactions_becomes_bill_lines(channel):
    pi = {"id": "pi_3unit", "object": "payment_intent", "metadata": {"payment_id": PAYMENT_ID}}
    bill = {"balance_transactions": [
        {"id": "txn_2", "type": "refund", "amount": -500, "fee": 0, "currency": "cny", "created": 1_795_600_100,
         "source": {"id": "re_3unit", "object": "refund", "payment_intent": pi,
                    "metadata": {"refund_id": "ref_01hunit", "payment_id": PAYMENT_ID}}},
        {"id": "txn_1", "type": "charge", "amount": 9900, "fee": 287, "currency": "CNY", "created": 1_795_600_000,
         "source": {"id": "ch_3unit", "object": "charge", "payment_intent": pi, "metadata": {}}},
        {"id": "txn_0", "type": "payout", "amount": -9000, "fee": 0, "currency": "cny", "created": 1_795_600_200,
         "source": {"id": "po_1", "object": "payout"}},
    ]}
    refund, payment = channel.parse_bill(json.dumps(bill).encode())
    assert (payment.kind, payment.payment_id, payment.channel_trade_no) == ("payment", PAYMENT_ID, "pi_3unit")
    assert (payment.amount, payment.fee, payment.currency) == (9900, 287, "cny")
    assert payment.occurred_at == datetime(2026, 11, 25, 9, 46, 40)
    assert (refund.kind, refund.refund_id, refund.amount, refund.fee) == ("refund", "ref_01hunit", 500, 0)


def test_an_unreadable_bill_is_refused(channel):
    from knowpay.domain.errors import InvalidRequest

    for data in (b"not json", b"{}", json.dumps({"balance_transactions": [
            {"type": "charge", "amount": "9900", "fee": 0, "currency": "cny", "source": {}}]}).encode()):
        with pytest.raises(InvalidRequest):
            channel.parse_bill(data)
