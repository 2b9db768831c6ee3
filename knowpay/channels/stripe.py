"""The `stripe` channel: PaymentIntents (action `client_secret`) or, with method `checkout`, a Checkout Session
on Stripe's hosted page (action `redirect`); signed webhooks, refunds and balance transactions, spoken through
Stripe's own Python library with its API base taken from settings.

Stripe's statuses and event types are mapped to ours here, in one place. The same code talks to
https://api.stripe.com in production and to `knowpay sandbox` on a developer's machine.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_start
from typing import TYPE_CHECKING, TypeGuard, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import requests
import stripe

from knowpay.channels.base import (
    Acknowledgement,
    Action,
    BillLine,
    ChannelRefund,
    ChannelStatus,
    Created,
    Notification,
    NotificationRejected,
    PaymentRequest,
    RefundRequest,
)
from knowpay.config import ConfigError, Settings
from knowpay.domain.errors import ChannelUnavailable, Conflict, InvalidRequest, NotFound
from knowpay.domain.money import check_amount

if TYPE_CHECKING:
    from stripe.params import BalanceTransactionListParams, PaymentIntentCreateParams, RefundCreateParams
    from stripe.params.checkout import SessionCreateParams

DEFAULT_API_BASE = "https://api.stripe.com"
DEFAULT_FEE_BPS = 290
WEBHOOK_TOLERANCE_SECONDS = 300
TIMEOUT = (3.05, 10.0)  # (connect, read) seconds
PAGE_SIZE = 100  # Stripe's largest list page

# Stripe's PaymentIntent statuses → ours. `requires_payment_method` after a failed attempt is "failed"
# (see `_intent_status`): the buyer may still retry on the same intent, and a late success is captured.
INTENT_STATUSES = {"requires_payment_method": "pending", "requires_confirmation": "pending",
                   "requires_action": "pending", "processing": "pending", "requires_capture": "pending",
                   "succeeded": "succeeded", "canceled": "closed"}
REFUND_STATUSES = {"pending": "pending", "requires_action": "pending", "succeeded": "succeeded",
                   "failed": "failed", "canceled": "failed"}
PAYMENT_EVENTS = {"payment_intent.succeeded": "succeeded", "payment_intent.payment_failed": "failed"}
# A Checkout Session's own events. Its PaymentIntent carries our payment id too, so payment_intent.succeeded
# comes as well: whichever arrives first captures, the other is a duplicate.
CHECKOUT_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded",
                   "checkout.session.async_payment_failed")
CHECKOUT_METHOD = "checkout"
# Stripe takes a Checkout Session's expires_at from 30 minutes to 24 hours ahead; a minute more than the
# least allows for the request's time in transit and for clock skew.
CHECKOUT_MIN_SECONDS = 31 * 60
CHECKOUT_MAX_SECONDS = 24 * 3600
REFUND_EVENTS = ("refund.created", "refund.updated", "charge.refund.updated")
# Balance transaction types that are money in or out for one of our payments; the rest (payouts,
# Stripe's own fees, adjustments) are not payments and stay out of the bill.
BILL_KINDS = {"charge": "payment", "payment": "payment", "refund": "refund", "payment_refund": "refund"}
OUR_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

T = TypeVar("T")


@dataclass(frozen=True)
class StripeConfig:
    """The `KNOWPAY_STRIPE_*` variables (and the platform time zone, for a day's bill)."""

    secret_key: str
    webhook_secret: str
    api_base: str = DEFAULT_API_BASE
    fee_bps: int = DEFAULT_FEE_BPS
    timezone: str = "Asia/Shanghai"

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeConfig | None:
        """None when the secret key or the webhook secret is missing: the channel is off."""
        env = settings.channel
        secret_key, webhook_secret = env.get("stripe_secret_key"), env.get("stripe_webhook_secret")
        if not secret_key or not webhook_secret:
            return None
        raw_fee = env.get("stripe_fee_bps") or str(DEFAULT_FEE_BPS)
        if not raw_fee.isascii() or not raw_fee.isdigit() or int(raw_fee) > 10_000:
            raise ConfigError(f"KNOWPAY_STRIPE_FEE_BPS must be a whole number from 0 to 10000, got {raw_fee!r}")
        api_base = (env.get("stripe_api_base") or DEFAULT_API_BASE).rstrip("/")
        parts = urlsplit(api_base)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise ConfigError(
                f"KNOWPAY_STRIPE_API_BASE must be a base URL like {DEFAULT_API_BASE}, got {api_base!r}")
        return cls(secret_key=secret_key, webhook_secret=webhook_secret, api_base=api_base,
                   fee_bps=int(raw_fee), timezone=settings.timezone)


def from_settings(settings: Settings) -> StripeChannel | None:
    config = StripeConfig.from_settings(settings)
    return None if config is None else StripeChannel(config)


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _client(config: StripeConfig) -> stripe.StripeClient:
    """A client of our own (nothing global), with timeouts and no retries of its own: a failure is
    ChannelUnavailable, and KnowPay's sweeps retry later with the same idempotency keys."""
    session = requests.Session()
    # A gateway on this machine (the sandbox) is reached directly, never through an environment proxy.
    session.trust_env = not _is_loopback(config.api_base)
    return stripe.StripeClient(config.secret_key, base_addresses={"api": config.api_base},
                               max_network_retries=0,
                               http_client=stripe.RequestsClient(timeout=TIMEOUT, session=session))


def _our_time(unix: object) -> datetime | None:
    """Stripe's unix seconds → naive UTC, as KnowPay stores times."""
    if isinstance(unix, bool) or not isinstance(unix, int):
        return None
    try:
        return datetime.fromtimestamp(unix, UTC).replace(tzinfo=None)
    except (OverflowError, OSError, ValueError):
        return None


def _is_amount(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _metadata(obj: Mapping) -> dict:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _unix(moment: datetime) -> int:
    """KnowPay's naive UTC time → Stripe's unix seconds."""
    return int(moment.replace(tzinfo=UTC).timestamp())


def _object_id(value: object) -> str | None:
    """An id field that Stripe gives as the id, or as the object when expanded."""
    return _text(value.get("id")) if isinstance(value, dict) else _text(value)


def _signature_timestamp(header: str) -> int | None:
    """The `t=` of a Stripe-Signature header, as Stripe's library reads it (the first one)."""
    for item in header.split(","):
        name, _, value = item.partition("=")
        if name.strip() == "t":
            return int(value) if value.isascii() and value.isdigit() else None
    return None


class StripeChannel:
    """Talks to Stripe (or the sandbox's imitation) at `config.api_base` with our secret key."""

    name = "stripe"

    def __init__(self, config: StripeConfig, *, clock: Callable[[], float] = time.time,
                 page_size: int = PAGE_SIZE) -> None:
        self.fee_bps = config.fee_bps
        self._config = config
        # The freshness check on webhooks uses this clock; Stripe's library checks staleness with time.time().
        self._clock = clock
        self._client = _client(config)
        self._page_size = page_size

    # -- payments ----------------------------------------------------------------------------------

    def create(self, request: PaymentRequest) -> Created:
        check_amount(request.amount)
        if request.method == CHECKOUT_METHOD:
            return self._create_checkout(request)
        if request.method is not None:
            raise InvalidRequest(f"Stripe takes method {CHECKOUT_METHOD!r} or none.", code="invalid_method",
                                 param="method")
        params: PaymentIntentCreateParams = {
            "amount": request.amount, "currency": request.currency.lower(),
            "automatic_payment_methods": {"enabled": True},
            "metadata": {"payment_id": request.payment_id}}
        if request.subject:
            params["description"] = request.subject[:1000]
        # Our payment id is the idempotency key: a retried create never opens a second intent.
        intent = self._create_once(request.payment_id, lambda: self._client.v1.payment_intents.create(
            params, {"idempotency_key": request.payment_id}))
        intent_id, client_secret = _text(intent.get("id")), _text(intent.get("client_secret"))
        if not intent_id or not client_secret:
            raise ChannelUnavailable("Stripe answered a PaymentIntent without id or client_secret.")
        extra = {"intent_id": intent_id}
        next_action = intent.get("next_action")
        if isinstance(next_action, dict) and isinstance(next_action.get("redirect_to_url"), dict):
            # Where a person confirms this intent without Stripe.js (the sandbox's pay page).
            url = _text(next_action["redirect_to_url"].get("url"))
            if url:
                extra["pay_url"] = url
        return Created(action=Action("client_secret", {"client_secret": client_secret}),
                       channel_trade_no=intent_id, extra=extra)

    def _create_once(self, payment_id: str, call: Callable[[], object]) -> dict:
        """Create a Stripe object keyed by our payment id; Stripe's refusals become our errors."""
        try:
            return self._data(self._reach(call))
        except stripe.IdempotencyError as exc:
            raise Conflict(f"Stripe already holds another request for {payment_id}: {exc.user_message}",
                           code="idempotency_conflict") from None
        except (stripe.InvalidRequestError, stripe.CardError) as exc:
            raise InvalidRequest(f"Stripe refused the payment: {exc.user_message}",
                                 code=exc.code or "stripe_refused") from None

    def _create_checkout(self, request: PaymentRequest) -> Created:
        """A Checkout Session in payment mode: the buyer types the card on Stripe's hosted page, so no Stripe.js
        has to load on ours. Its PaymentIntent (made when the buyer pays) carries our payment id as ours do."""
        # The order's expiry when Stripe takes it, else the nearest it takes (whole minutes, so that a quick
        # retry sends the same parameters with the same Idempotency-Key); close() expires it with the order.
        now = int(self._clock())
        earliest = -(-(now + CHECKOUT_MIN_SECONDS) // 60) * 60
        expires_at = min(max(_unix(request.expires_at), earliest), now + CHECKOUT_MAX_SECONDS - 60)
        metadata = {"payment_id": request.payment_id}
        intent_data: dict = {"metadata": metadata}
        if request.subject:
            intent_data["description"] = request.subject[:1000]
        params: SessionCreateParams = {
            "mode": "payment", "payment_method_types": ["card"],
            "line_items": [{"quantity": 1, "price_data": {
                "currency": request.currency.lower(), "unit_amount": request.amount,
                "product_data": {"name": request.subject[:250] or request.payment_id}}}],
            "client_reference_id": request.payment_id, "metadata": metadata, "payment_intent_data": intent_data,
            "success_url": request.return_url, "cancel_url": request.return_url, "expires_at": expires_at}
        session = self._create_once(request.payment_id, lambda: self._client.v1.checkout.sessions.create(
            params, {"idempotency_key": request.payment_id}))
        session_id, url = _text(session.get("id")), _text(session.get("url"))
        if not session_id or not url:
            raise ChannelUnavailable("Stripe answered a Checkout Session without id or url.")
        # No channel_trade_no yet: that is the PaymentIntent, which exists once the buyer pays and which refunds
        # name; capture records it from the event.
        return Created(action=Action("redirect", {"url": url}), extra={"session_id": session_id})

    def query(self, payment_id: str) -> ChannelStatus:
        intent = self._find_intent(payment_id)
        if intent is not None:
            return self._intent_status(intent)
        # A Checkout Session nobody has paid yet has no PaymentIntent.
        return ChannelStatus("pending") if self._open_session(payment_id) else ChannelStatus("not_found")

    def close(self, payment_id: str) -> ChannelStatus:
        """Expire its open Checkout Session, or cancel its intent, if nobody paid yet; the answer says what it
        is now (a paid one stays paid)."""
        session = self._open_session(payment_id)
        if session is not None:
            return self._expire(session["id"])
        intent = self._find_intent(payment_id)
        if intent is None:
            return ChannelStatus("not_found")
        if intent.get("status") in ("succeeded", "canceled"):
            return self._intent_status(intent)
        intent_id = intent["id"]
        try:
            intent = self._data(self._reach(lambda: self._client.v1.payment_intents.cancel(intent_id)))
        except stripe.InvalidRequestError as exc:
            if exc.code != "payment_intent_unexpected_state":
                raise InvalidRequest(f"Stripe refused to cancel {intent_id}: {exc.user_message}",
                                     code=exc.code or "stripe_refused") from None
            # Paid (or cancelled) between our read and the cancel: report what it is now.
            intent = self._retrieve(intent_id)
        return self._intent_status(intent)

    def _intent_status(self, intent: dict) -> ChannelStatus:
        status = INTENT_STATUSES.get(str(intent.get("status")))
        if status is None:
            raise ChannelUnavailable(f"Stripe answered an unknown PaymentIntent status {intent.get('status')!r}.")
        if intent.get("status") == "requires_payment_method" and intent.get("last_payment_error"):
            status = "failed"
        amount = intent.get("amount_received") if status == "succeeded" else intent.get("amount")
        currency = intent.get("currency")
        return ChannelStatus(status, channel_trade_no=_text(intent.get("id")),
                             amount=amount if _is_amount(amount) else None,
                             currency=currency.lower() if isinstance(currency, str) else None)

    def _open_session(self, payment_id: str) -> dict | None:
        """Our payment's Checkout Session while it is open, or None.

        Stripe lists sessions but neither searches nor filters them by our id, so the open ones are read
        (few: a session is open for 24 hours at most, ours about as long as their order) and ours picked out.
        """
        if not OUR_ID.match(payment_id):
            raise InvalidRequest("That is not a KnowPay payment id.", code="invalid_payment_id")
        since = int(self._clock()) - CHECKOUT_MAX_SECONDS

        def scan() -> dict | None:
            page = self._client.v1.checkout.sessions.list(
                {"status": "open", "created": {"gte": since}, "limit": self._page_size})
            for item in page.auto_paging_iter():
                session = self._data(item)
                if session.get("client_reference_id") == payment_id and _text(session.get("id")):
                    return session
            return None

        try:
            return self._reach(scan)
        except stripe.InvalidRequestError as exc:
            raise InvalidRequest(f"Stripe refused to list Checkout Sessions: {exc.user_message}",
                                 code=exc.code or "stripe_refused") from None

    def _expire(self, session_id: str) -> ChannelStatus:
        try:
            session = self._data(self._reach(lambda: self._client.v1.checkout.sessions.expire(session_id)))
        except stripe.InvalidRequestError as exc:
            # Paid (or expired) between our read and the expire: report what it is now.
            session = self._retrieve_session(session_id)
            if session.get("status") == "open":
                raise InvalidRequest(f"Stripe refused to expire {session_id}: {exc.user_message}",
                                     code=exc.code or "stripe_refused") from None
        return self._session_status(session)

    def _retrieve_session(self, session_id: str) -> dict:
        try:
            return self._data(self._reach(lambda: self._client.v1.checkout.sessions.retrieve(session_id)))
        except stripe.InvalidRequestError as exc:
            raise NotFound(f"Stripe does not know {session_id}: {exc.user_message}",
                           code=exc.code or "resource_missing") from None

    @staticmethod
    def _session_status(session: dict) -> ChannelStatus:
        state, paid = session.get("status"), session.get("payment_status") == "paid"
        if state == "complete" and paid:
            status = "succeeded"
        elif state == "expired":
            status = "closed"
        elif state in ("open", "complete"):  # complete but unpaid: a delayed payment method is on its way
            status = "pending"
        else:
            raise ChannelUnavailable(f"Stripe answered an unknown Checkout Session status {state!r}.")
        amount, currency = session.get("amount_total"), session.get("currency")
        return ChannelStatus(status, channel_trade_no=_object_id(session.get("payment_intent")),
                             amount=amount if _is_amount(amount) else None,
                             currency=currency.lower() if isinstance(currency, str) else None)

    def _find_intent(self, payment_id: str) -> dict | None:
        """Our payment's intent, found by its metadata, then read fresh.

        Stripe finds an object by our id only through its Search API, which may lag a new intent by up
        to a minute (so a very young intent can be "not_found"); the read by id that follows is exact.
        """
        if not OUR_ID.match(payment_id):
            raise InvalidRequest("That is not a KnowPay payment id.", code="invalid_payment_id")
        found = self._reach(lambda: self._client.v1.payment_intents.search(
            {"query": f"metadata['payment_id']:'{payment_id}'", "limit": 10}))
        intents = [self._data(i) for i in found.data]
        intents = [i for i in intents if _metadata(i).get("payment_id") == payment_id and _text(i.get("id"))]
        if not intents:
            return None
        # A retried create after Stripe forgot the idempotency key (24 h) could make two; a paid one wins.
        intents.sort(key=lambda i: i.get("status") != "succeeded")
        return self._retrieve(intents[0]["id"])

    def _retrieve(self, intent_id: str) -> dict:
        try:
            return self._data(self._reach(lambda: self._client.v1.payment_intents.retrieve(intent_id)))
        except stripe.InvalidRequestError as exc:
            raise NotFound(f"Stripe does not know {intent_id}: {exc.user_message}",
                           code=exc.code or "resource_missing") from None

    # -- notifications -----------------------------------------------------------------------------

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> Notification:
        """Verify a webhook's Stripe-Signature (v1, 300 s either way) and read its event; else NotificationRejected.

        Amounts are reported as sent; comparing them with our payment is the caller's job, and so is
        noticing a repeated event id.
        """
        header = next((v for k, v in headers.items() if k.lower() == "stripe-signature"), "")
        if not header:
            raise NotificationRejected("stripe webhook refused: no Stripe-Signature header")
        if not header.isascii():
            raise NotificationRejected("stripe webhook refused: the Stripe-Signature header is not ASCII")
        try:
            payload = body.decode("utf-8")
        except UnicodeDecodeError:
            raise NotificationRejected("stripe webhook refused: the body is not UTF-8") from None
        try:
            stripe.WebhookSignature.verify_header(payload, header, self._config.webhook_secret,
                                                  WEBHOOK_TOLERANCE_SECONDS)
        except stripe.SignatureVerificationError as exc:
            raise NotificationRejected(f"stripe webhook refused: {self._signature_fault(str(exc))}") from None
        timestamp = _signature_timestamp(header)
        now = self._clock()
        # Stripe's library refuses only old timestamps; a signature dated in the future is refused here.
        if timestamp is None or timestamp > now + WEBHOOK_TOLERANCE_SECONDS:
            raise NotificationRejected(
                f"stripe webhook refused: the signature's timestamp is more than {WEBHOOK_TOLERANCE_SECONDS} s "
                "in the future")
        if timestamp < now - WEBHOOK_TOLERANCE_SECONDS:
            raise NotificationRejected(
                f"stripe webhook refused: the signature's timestamp is more than {WEBHOOK_TOLERANCE_SECONDS} s old")
        try:
            event = json.loads(payload)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            raise NotificationRejected("stripe webhook refused: the body is not JSON") from None
        return self._notification(event)

    @staticmethod
    def _signature_fault(message: str) -> str:
        lower = message.lower()
        if "tolerance" in lower:
            return f"the signature's timestamp is more than {WEBHOOK_TOLERANCE_SECONDS} s old"
        if "matching the expected signature" in lower:
            return "no v1 signature matches the body and our webhook secret"
        if "expected scheme" in lower:
            return "the Stripe-Signature header has no v1 signature"
        return "the Stripe-Signature header cannot be read"

    def _notification(self, event: object) -> Notification:
        def malformed(why: str) -> NotificationRejected:
            return NotificationRejected(f"stripe webhook refused: malformed event, {why}")

        if not isinstance(event, dict) or event.get("object") != "event":
            raise malformed("the body is not a Stripe event")
        event_id, event_type = _text(event.get("id")), _text(event.get("type"))
        data = event.get("data")
        obj = data.get("object") if isinstance(data, dict) else None
        if not event_id or not event_type or not isinstance(obj, dict):
            raise malformed("`id`, `type` or `data.object` is missing")
        occurred_at = _our_time(event.get("created"))
        details = {"event_type": event_type}

        if event_type in PAYMENT_EVENTS:
            status = PAYMENT_EVENTS[event_type]
            if obj.get("object") != "payment_intent":
                raise malformed(f"{event_type} does not carry a payment_intent")
            payment_id = _text(_metadata(obj).get("payment_id"))
            if not payment_id:
                raise NotificationRejected(
                    f"stripe webhook refused: {obj.get('id')!r} has no metadata.payment_id, so it is no KnowPay payment")
            # A success reports what was received; a failure received nothing and reports what was asked.
            amount = obj.get("amount_received" if status == "succeeded" else "amount")
            currency = obj.get("currency")
            if not _is_amount(amount) or not isinstance(currency, str):
                raise malformed("the intent's amount or currency is missing")
            details["channel_status"] = str(obj.get("status"))
            if status == "failed":
                reported = obj.get("last_payment_error")
                error = reported if isinstance(reported, dict) else {}
                details["code"] = _text(error.get("decline_code")) or _text(error.get("code")) or "payment_failed"
                details["message"] = _text(error.get("message")) or "Stripe reports the payment failed."
            return Notification(kind="payment", payment_id=payment_id, status=status, amount=amount,
                                currency=currency.lower(), channel_trade_no=_text(obj.get("id")),
                                event_id=event_id, occurred_at=occurred_at, details=details)

        if event_type in CHECKOUT_EVENTS:
            if obj.get("object") != "checkout.session":
                raise malformed(f"{event_type} does not carry a checkout.session")
            return self._checkout_notification(obj, event_type, event_id, occurred_at, details)

        refund = None
        if event_type in REFUND_EVENTS and obj.get("object") == "refund":
            refund = obj
        elif event_type == "charge.refunded" and obj.get("object") == "charge":
            refund = self._newest_refund(obj)
        if refund is not None:
            finished = REFUND_STATUSES.get(str(refund.get("status")))
            if finished in ("succeeded", "failed"):
                return self._refund_notification(refund, str(finished), event_id, occurred_at, details)
        # Anything else needs no action from us: "pending" is stored as ignored.
        amount, currency = obj.get("amount"), obj.get("currency")
        return Notification(kind="payment", payment_id=_text(_metadata(obj).get("payment_id")) or "",
                            status="pending", amount=amount if _is_amount(amount) else 0,
                            currency=currency.lower() if isinstance(currency, str) else "",
                            channel_trade_no=_text(obj.get("id")) if obj.get("object") == "payment_intent" else None,
                            event_id=event_id, occurred_at=occurred_at, details=details)

    @staticmethod
    def _checkout_notification(session: dict, event_type: str, event_id: str, occurred_at: datetime | None,
                               seen: dict[str, str]) -> Notification:
        payment_id = _text(_metadata(session).get("payment_id")) or _text(session.get("client_reference_id"))
        if not payment_id:
            raise NotificationRejected(
                f"stripe webhook refused: {session.get('id')!r} names no payment_id, so it is no KnowPay payment")
        amount, currency = session.get("amount_total"), session.get("currency")
        if not _is_amount(amount) or not isinstance(currency, str):
            raise NotificationRejected(
                "stripe webhook refused: malformed event, the session's amount_total or currency is missing")
        details = {**seen, "session_id": str(session.get("id")),
                   "channel_status": f"{session.get('status')}/{session.get('payment_status')}"}
        if event_type == "checkout.session.async_payment_failed":
            status = "failed"
            details["code"] = "async_payment_failed"
            details["message"] = "Stripe reports the delayed payment failed."
        else:
            # Completed but unpaid: a delayed payment method, whose async_payment_* event follows.
            status = "succeeded" if session.get("payment_status") == "paid" else "pending"
        return Notification(kind="payment", payment_id=payment_id, status=status, amount=amount,
                            currency=currency.lower(), channel_trade_no=_object_id(session.get("payment_intent")),
                            event_id=event_id, occurred_at=occurred_at, details=details)

    @staticmethod
    def _newest_refund(charge: dict) -> dict | None:
        """charge.refunded names no refund; its newest finished one (when the charge lists them) is the news."""
        refunds = charge.get("refunds")
        listed = refunds.get("data") if isinstance(refunds, dict) else None
        finished = [r for r in listed or () if isinstance(r, dict) and r.get("status") in ("succeeded", "failed")]

        def created(refund: dict) -> int:
            moment = refund.get("created")
            return moment if isinstance(moment, int) else 0

        return max(finished, key=created, default=None)

    @staticmethod
    def _refund_notification(refund: dict, status: str, event_id: str, occurred_at: datetime | None,
                             seen: dict[str, str]) -> Notification:
        metadata = _metadata(refund)
        amount, currency = refund.get("amount"), refund.get("currency")
        if not _is_amount(amount) or not isinstance(currency, str):
            raise NotificationRejected("stripe webhook refused: malformed event, the refund's amount or currency is missing")
        details = {**seen, "refund_no": str(refund.get("id")), "channel_status": str(refund.get("status"))}
        if status == "failed":
            details["code"] = _text(refund.get("failure_reason")) or "refund_failed"
        intent = refund.get("payment_intent")
        return Notification(kind="refund", payment_id=_text(metadata.get("payment_id")) or "", status=status,
                            amount=amount, currency=currency.lower(),
                            channel_trade_no=intent if isinstance(intent, str) else None,
                            refund_id=_text(metadata.get("refund_id")), event_id=event_id,
                            occurred_at=occurred_at, details=details)

    def acknowledge(self, ok: bool, message: str = "") -> Acknowledgement:
        # Stripe retries (for up to three days) until it gets a 2xx.
        if ok:
            return Acknowledgement(200, json.dumps({"received": True}), "application/json")
        return Acknowledgement(400, json.dumps({"error": {"message": message or "notification refused"}}),
                               "application/json")

    # -- refunds -----------------------------------------------------------------------------------

    def refund(self, request: RefundRequest) -> ChannelRefund:
        check_amount(request.amount)
        intent_id = self._intent_id(request)
        if intent_id is None:
            # Not findable (yet: search lags); sending it later is safe, so it is not a failure.
            return ChannelRefund("pending", failure_code="payment_not_found")
        # Stripe forgets idempotency keys after 24 h: a refund already made for our id is found first.
        existing = self._our_refund(intent_id, request.refund_id)
        if existing is not None:
            return self._refund_result(existing)
        params: RefundCreateParams = {
            "payment_intent": intent_id, "amount": request.amount,
            "metadata": {"refund_id": request.refund_id, "payment_id": request.payment_id}}
        try:
            refund = self._data(self._reach(lambda: self._client.v1.refunds.create(
                params, {"idempotency_key": request.refund_id})))
        except stripe.IdempotencyError:
            return ChannelRefund("failed", failure_code="idempotency_key_reused")
        except (stripe.InvalidRequestError, stripe.CardError) as exc:
            return ChannelRefund("failed", failure_code=exc.code or "stripe_refused")  # a refusal is a result
        return self._refund_result(refund)

    def query_refund(self, request: RefundRequest) -> ChannelRefund:
        intent_id = self._intent_id(request)
        refund = self._our_refund(intent_id, request.refund_id) if intent_id else None
        if refund is None:
            # Never reached Stripe (or not yet): not a failure, since sending it again is safe.
            return ChannelRefund("pending", failure_code="refund_not_found")
        return self._refund_result(refund)

    def _intent_id(self, request: RefundRequest) -> str | None:
        if request.channel_trade_no:
            return request.channel_trade_no
        intent = self._find_intent(request.payment_id)
        return intent["id"] if intent else None

    def _our_refund(self, intent_id: str, refund_id: str) -> dict | None:
        def scan() -> dict | None:
            page = self._client.v1.refunds.list({"payment_intent": intent_id, "limit": self._page_size})
            for item in page.auto_paging_iter():
                refund = self._data(item)
                if _metadata(refund).get("refund_id") == refund_id:
                    return refund
            return None

        try:
            return self._reach(scan)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404 or exc.code == "resource_missing":
                return None
            raise InvalidRequest(f"Stripe refused to list refunds: {exc.user_message}",
                                 code=exc.code or "stripe_refused") from None

    @staticmethod
    def _refund_result(refund: dict) -> ChannelRefund:
        status = REFUND_STATUSES.get(str(refund.get("status")))
        if status is None:
            raise ChannelUnavailable(f"Stripe answered an unknown refund status {refund.get('status')!r}.")
        failure = (_text(refund.get("failure_reason")) or "refund_failed") if status == "failed" else None
        return ChannelRefund(status, channel_refund_no=_text(refund.get("id")), failure_code=failure)

    # -- bills -------------------------------------------------------------------------------------

    def fetch_bill(self, day: str) -> bytes:
        """Stripe has no daily bill file: the day's balance transactions (the day in KNOWPAY_TIMEZONE), as JSON."""
        try:
            start_day = date.fromisoformat(day)
        except (TypeError, ValueError):
            raise InvalidRequest("day must look like YYYY-MM-DD.", code="invalid_date", param="date") from None
        zone = ZoneInfo(self._config.timezone)
        start = int(datetime.combine(start_day, day_start.min, tzinfo=zone).timestamp())
        end = int(datetime.combine(start_day + timedelta(days=1), day_start.min, tzinfo=zone).timestamp())
        params: BalanceTransactionListParams = {
            "created": {"gte": start, "lt": end}, "limit": self._page_size,
            "expand": ["data.source", "data.source.payment_intent"]}

        def every() -> list[dict]:
            page = self._client.v1.balance_transactions.list(params)
            return [item.to_dict(for_json=True) for item in page.auto_paging_iter()]

        try:
            transactions = self._reach(every)
        except stripe.InvalidRequestError as exc:
            raise InvalidRequest(f"Stripe refused to list balance transactions: {exc.user_message}",
                                 code=exc.code or "stripe_refused") from None
        return json.dumps({"day": day, "timezone": self._config.timezone, "start": start, "end": end,
                           "balance_transactions": transactions}, separators=(",", ":")).encode("utf-8")

    def parse_bill(self, data: bytes) -> list[BillLine]:
        try:
            bill = json.loads(data)
        except (ValueError, RecursionError):
            raise InvalidRequest("The Stripe bill is not JSON.", code="invalid_bill") from None
        transactions = bill.get("balance_transactions") if isinstance(bill, dict) else None
        if not isinstance(transactions, list):
            raise InvalidRequest("The Stripe bill lists no balance_transactions.", code="invalid_bill")
        return [line for number, txn in enumerate(transactions, start=1)
                if (line := self._bill_line(txn, number)) is not None]

    @staticmethod
    def _bill_line(txn: object, number: int) -> BillLine | None:
        def unreadable(why: str) -> InvalidRequest:
            return InvalidRequest(f"Balance transaction {number} of the Stripe bill {why}.", code="invalid_bill")

        if not isinstance(txn, dict):
            raise unreadable("is not an object")
        kind = BILL_KINDS.get(str(txn.get("type")))
        if kind is None:
            return None
        amount, fee, currency = txn.get("amount"), txn.get("fee"), txn.get("currency")
        if isinstance(amount, bool) or not isinstance(amount, int) or isinstance(fee, bool) \
                or not isinstance(fee, int) or not isinstance(currency, str):
            raise unreadable("has no amount, fee or currency")
        source = txn.get("source")
        if not isinstance(source, dict):
            raise unreadable("has no expanded source")
        intent = source.get("payment_intent")
        if isinstance(intent, dict):
            intent_id, payment_id = _text(intent.get("id")), _text(_metadata(intent).get("payment_id"))
        else:
            intent_id, payment_id = _text(intent), None
        payment_id = payment_id or _text(_metadata(source).get("payment_id")) or ""
        # Money out is negative on a balance transaction; our lines carry positive amounts, and the
        # fee Stripe gives back on a refund as a positive fee.
        sign = 1 if kind == "payment" else -1
        return BillLine(kind=kind, payment_id=payment_id, channel_trade_no=intent_id, amount=sign * amount,
                        currency=currency.lower(), status="succeeded", occurred_at=_our_time(txn.get("created")),
                        refund_id=_text(_metadata(source).get("refund_id")) if kind == "refund" else None,
                        fee=sign * fee)

    # -- answers -----------------------------------------------------------------------------------

    def _reach(self, call: Callable[[], T]) -> T:
        """Run one call to Stripe; whenever no usable answer came back, raise ChannelUnavailable.

        Stripe's refusals (InvalidRequestError, IdempotencyError, CardError) pass through for the caller
        to map in its own terms.
        """
        try:
            return call()
        except (stripe.InvalidRequestError, stripe.IdempotencyError, stripe.CardError):
            raise
        except stripe.APIConnectionError:
            raise ChannelUnavailable("Stripe could not be reached or did not answer in time.") from None
        except (stripe.AuthenticationError, stripe.PermissionError) as exc:
            # Our secret key is not one Stripe accepts: a configuration fault, not the buyer's.
            raise ChannelUnavailable(
                f"Stripe refused our credentials ({exc.user_message}); check KNOWPAY_STRIPE_SECRET_KEY.") from None
        except stripe.StripeError as exc:  # 5xx, 429, 409 lock timeouts, unreadable bodies
            status = exc.http_status or "no status"
            raise ChannelUnavailable(f"Stripe answered {status}; try again later.") from None

    @staticmethod
    def _data(obj: object) -> dict:
        if isinstance(obj, stripe.StripeObject):
            return obj.to_dict()
        raise ChannelUnavailable("Stripe answered something other than an object.")

