"""Stripe's `/v1` API and signed webhook events, imitated inside the sandbox gateway.

KnowPay's `stripe` adapter, pointed here by KNOWPAY_STRIPE_API_BASE, opens PaymentIntents and Checkout
Sessions through Stripe's own library (form-encoded bodies, Bearer secret key, Idempotency-Key); a person
pays on the shared pay page (a session's hosted page, which then goes to its success_url); the gateway then
POSTs Stripe events signed with the webhook secret to KNOWPAY_BASE_URL/notify/stripe, as the webhook
endpoint registered in Stripe's dashboard would be.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, jsonify, request

from knowpay.config import Settings
from knowpay.domain.money import EXPONENTS, MAX_AMOUNT, apply_rate_bps
from knowpay.sandbox import DEFAULT_URL
from knowpay.sandbox.keys import keys_folder
from knowpay.sandbox.store import (
    REFUND_SUCCESS,
    BillEntry,
    Delivery,
    GatewayError,
    Refund,
    SandboxStore,
    Trade,
    TradeStatus,
)

if TYPE_CHECKING:
    from knowpay.sandbox.app import Gateway

log = logging.getLogger(__name__)

CHANNEL = "stripe"
DEFAULT_FEE_BPS = 290  # Stripe's card rate, as KNOWPAY_STRIPE_FEE_BPS (shared with KnowPay) may say otherwise
# Stripe's intents do not expire; the shared store wants a moment, so a day it is (KnowPay cancels sooner).
INTENT_LIFETIME_SECONDS = 24 * 3600
INTENT_STATUSES = {TradeStatus.WAIT_BUYER_PAY: "requires_action", TradeStatus.SUCCESS: "succeeded",
                   # A declined attempt leaves a Stripe intent waiting for another payment method.
                   TradeStatus.DECLINED: "requires_payment_method", TradeStatus.CLOSED: "canceled"}
# A Checkout Session after a declined card stays open on Stripe, for another card.
SESSION_STATUSES = {TradeStatus.WAIT_BUYER_PAY: "open", TradeStatus.DECLINED: "open",
                    TradeStatus.SUCCESS: "complete", TradeStatus.CLOSED: "expired"}
SESSION_LIFETIME = (30 * 60, 24 * 3600)  # expires_at may be this far ahead, least and most (Stripe's rule)
SESSION_PARAMS = ("mode", "line_items", "payment_method_types", "client_reference_id", "metadata",
                  "payment_intent_data", "success_url", "cancel_url", "expires_at", "customer_email", "locale")
DECLINE = {"type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
           "message": "Your card was declined."}
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
GENERATED = "~"  # marks a trade or refund number the gateway made up (no Idempotency-Key was sent)
PARAM_KEY = re.compile(r"^([A-Za-z0-9_]+)((?:\[[A-Za-z0-9_.\-]*\])*)$")
SEARCH = re.compile(r"^\s*metadata\['([A-Za-z0-9_\-]{1,40})'\]\s*:\s*'([^'\\]{1,500})'\s*$")


class StripeApiError(Exception):
    """An answer in Stripe's error shape: {"error": {"type", "code", "message", "param", ...}}."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"type": type, "message": message, **({"code": code} if code else {}),
                     **({"param": param} if param else {}), **extra}


def _missing(kind: str, object_id: str, param: str) -> StripeApiError:
    return StripeApiError(404, f"No such {kind}: '{object_id[:100]}'", code="resource_missing", param=param)


def _too_large(amount: int, left: int) -> StripeApiError:
    return StripeApiError(400, f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left}).",
                          code="amount_too_large", param="amount")


def _idempotency_error(key: str) -> StripeApiError:
    return StripeApiError(400, "Keys for idempotent requests can only be used with the same parameters they were "
                               f"first used with. Try using a key other than '{key[:255]}' if you meant to execute "
                               "a different request.", type="idempotency_error")


# -- keys and settings ------------------------------------------------------------------------------

def account_id(secret_key: str) -> str:
    """The sandbox's Stripe account for a secret key: its merchant id in the shared store."""
    return "acct_" + hashlib.sha256(secret_key.encode("utf-8")).hexdigest()[:16]


def demo_env(instance_path: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """KNOWPAY_STRIPE_* for `knowpay demo`: test-looking keys made once and kept in the sandbox-keys folder,
    shared by KnowPay and the gateway; the API base is the sandbox (KNOWPAY_SANDBOX_URL)."""
    env = os.environ if environ is None else environ
    folder = keys_folder(instance_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "stripe.json"
    if not path.exists():
        keys = {"secret_key": "sk_test_" + secrets.token_hex(24), "webhook_secret": "whsec_" + secrets.token_hex(24)}
        draft = folder / f".stripe.{os.getpid()}.json"
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            json.dump(keys, out)
        try:
            os.link(draft, path)  # fails if another process got there first: theirs is kept
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    keys = json.loads(path.read_text())
    return {"KNOWPAY_STRIPE_SECRET_KEY": keys["secret_key"], "KNOWPAY_STRIPE_WEBHOOK_SECRET": keys["webhook_secret"],
            "KNOWPAY_STRIPE_API_BASE": (env.get("KNOWPAY_SANDBOX_URL") or DEFAULT_URL).rstrip("/")}


# -- Stripe's objects, from the shared store's rows -------------------------------------------------

def _extra(trade: Trade) -> dict:
    try:
        extra = json.loads(trade.extra)
    except ValueError:
        return {}
    return extra if isinstance(extra, dict) else {}


def _refund_extra(refund: Refund) -> dict:
    """Stripe keeps a refund's metadata and reason; the store's `reason` column holds them as JSON."""
    try:
        extra = json.loads(refund.reason or "{}")
    except ValueError:
        return {}
    return extra if isinstance(extra, dict) else {}


def _checkout(trade: Trade) -> dict | None:
    """A Checkout Session's own facts (urls, client_reference_id, metadata); None for a bare PaymentIntent."""
    facts = _extra(trade).get("checkout")
    return facts if isinstance(facts, dict) else None


def has_intent(trade: Trade) -> bool:
    """A Checkout Session makes its PaymentIntent only when the buyer pays, or tries to."""
    return _checkout(trade) is None or trade.status in (TradeStatus.SUCCESS, TradeStatus.DECLINED)


def session_json(trade: Trade, *, public_url: str, status: str | None = None) -> dict:
    facts = _checkout(trade) or {}
    status = status or SESSION_STATUSES[TradeStatus(trade.status)]
    # The hosted page is the shared pay page, which sends the buyer on to success_url once decided (the
    # sandbox's decline is final, so staying on the page would not help either).
    url = f"{public_url}/pay/{trade.trade_no}?{urlencode({'redirect_url': facts.get('success_url', '')})}"
    return {
        "id": f"cs_{trade.trade_no}", "object": "checkout.session", "amount_subtotal": trade.amount,
        "amount_total": trade.amount, "cancel_url": facts.get("cancel_url"),
        "client_reference_id": facts.get("client_reference_id"), "created": int(trade.created_at),
        "currency": trade.currency.lower(), "expires_at": int(trade.expires_at), "livemode": False,
        "metadata": facts.get("metadata", {}), "mode": "payment",
        "payment_intent": f"pi_{trade.trade_no}" if has_intent(trade) else None, "payment_method_types": ["card"],
        "payment_status": "paid" if trade.status == TradeStatus.SUCCESS else "unpaid", "status": status,
        "success_url": facts.get("success_url"), "url": url if status == "open" else None,
    }


def intent_json(trade: Trade, *, public_url: str, status: str | None = None) -> dict:
    extra = _extra(trade)
    intent_id = f"pi_{trade.trade_no}"
    status = status or INTENT_STATUSES[TradeStatus(trade.status)]
    paid = trade.status == TradeStatus.SUCCESS
    next_action = None
    if status == "requires_action" and _checkout(trade) is None:
        # Where Stripe.js would take the buyer to confirm (3-D Secure); here, the shared pay page.
        next_action = {"type": "redirect_to_url",
                       "redirect_to_url": {"url": f"{public_url}/pay/{trade.trade_no}", "return_url": trade.return_url}}
    return {
        "id": intent_id, "object": "payment_intent", "amount": trade.amount, "amount_capturable": 0,
        "amount_received": trade.amount if paid else 0, "automatic_payment_methods": {"enabled": True},
        "canceled_at": int(trade.decided_at or time.time()) if status == "canceled" else None,
        "cancellation_reason": None, "capture_method": "automatic",
        "client_secret": f"{intent_id}_secret_{extra.get('secret', '')}", "confirmation_method": "automatic",
        "created": int(trade.created_at), "currency": trade.currency.lower(), "description": extra.get("description"),
        "last_payment_error": DECLINE if trade.status == TradeStatus.DECLINED else None,
        "latest_charge": f"ch_{trade.trade_no}" if paid else None, "livemode": False,
        "metadata": extra.get("metadata", {}), "next_action": next_action, "payment_method_types": ["card"],
        "status": status,
    }


def charge_json(trade: Trade, *, public_url: str, expand_intent: bool = False) -> dict:
    return {
        "id": f"ch_{trade.trade_no}", "object": "charge", "amount": trade.amount, "amount_captured": trade.amount,
        "amount_refunded": trade.amount_refunded, "balance_transaction": f"txn_{trade.trade_no}", "captured": True,
        "created": int(trade.paid_at or trade.created_at), "currency": trade.currency.lower(), "livemode": False,
        "metadata": _extra(trade).get("metadata", {}), "paid": True,
        "payment_intent": intent_json(trade, public_url=public_url) if expand_intent else f"pi_{trade.trade_no}",
        "refunded": trade.amount_refunded == trade.amount, "status": "succeeded",
    }


def refund_json(refund: Refund, trade: Trade, *, public_url: str, expand_intent: bool = False) -> dict:
    extra = _refund_extra(refund)
    return {
        "id": f"re_{refund.refund_no}", "object": "refund", "amount": refund.amount,
        "balance_transaction": f"txn_{refund.refund_no}", "charge": f"ch_{trade.trade_no}",
        "created": int(refund.refunded_at), "currency": trade.currency.lower(), "failure_reason": None,
        "metadata": extra.get("metadata", {}),
        "payment_intent": intent_json(trade, public_url=public_url) if expand_intent else f"pi_{trade.trade_no}",
        "reason": extra.get("reason"), "status": "succeeded" if refund.status == REFUND_SUCCESS else "failed",
    }


def balance_transaction_json(entry: BillEntry, *, public_url: str, expand: set[str], fee_bps: int) -> dict:
    trade, refund = entry.trade, entry.refund
    expand_source = any(path.startswith("data.source") for path in expand)
    expand_intent = "data.source.payment_intent" in expand
    if refund is None:
        # Stripe's fee, not the store's (which charges the sandbox channel's own rate).
        number, amount, fee, kind = trade.trade_no, entry.amount, apply_rate_bps(entry.amount, fee_bps), "charge"
        source: object = (charge_json(trade, public_url=public_url, expand_intent=expand_intent)
                          if expand_source else f"ch_{trade.trade_no}")
    else:
        # Money going back is negative; Stripe keeps its fee on a refund.
        number, amount, fee, kind = refund.refund_no, -entry.amount, 0, "refund"
        source = (refund_json(refund, trade, public_url=public_url, expand_intent=expand_intent)
                  if expand_source else f"re_{refund.refund_no}")
    created = int(entry.occurred_at)
    return {"id": f"txn_{number}", "object": "balance_transaction", "amount": amount, "available_on": created,
            "created": created, "currency": trade.currency.lower(), "description": trade.subject, "fee": fee,
            "net": amount - fee, "reporting_category": kind, "source": source, "status": "available", "type": kind}


def event_json(delivery: Delivery, trade: Trade, refund: Refund | None, *, public_url: str) -> dict:
    """The Stripe event for one queued notification; its id is stable across attempts."""
    facts = json.loads(delivery.body)
    if facts.get("type") == "refund":
        if refund is None:
            raise LookupError(f"refund {facts.get('out_refund_no')!r} of {delivery.notify_id} vanished")
        event_type, obj = "refund.created", refund_json(refund, trade, public_url=public_url)
    elif facts.get("status") == TradeStatus.SUCCESS and _checkout(trade) is not None:
        # What Checkout fulfilment listens to. (Stripe sends payment_intent.succeeded as well; the sandbox
        # queues one event per decision, and KnowPay takes either.)
        event_type, obj = "checkout.session.completed", session_json(trade, public_url=public_url)
    elif facts.get("status") == TradeStatus.SUCCESS:
        event_type, obj = "payment_intent.succeeded", intent_json(trade, public_url=public_url, status="succeeded")
    else:
        event_type = "payment_intent.payment_failed"
        obj = intent_json(trade, public_url=public_url, status="requires_payment_method")
        obj["last_payment_error"] = DECLINE
    return {"id": f"evt_{delivery.notify_id}", "object": "event", "api_version": None,
            "created": int(delivery.created_at), "data": {"object": obj}, "livemode": False, "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None}, "type": event_type}


class StripeEvents:
    """Stripe's webhook wire format: the event as JSON, `Stripe-Signature: t=<now>,v1=<HMAC-SHA256 of
    "<t>.<body>">` signed afresh at each attempt, acknowledged by any 2xx."""

    def __init__(self, store: SandboxStore, webhook_secret: str | None, public_url: str) -> None:
        self._store = store
        self._secret = webhook_secret
        self._public_url = public_url

    def render(self, delivery: Delivery, now: float) -> tuple[bytes, dict[str, str]]:
        if not self._secret:
            raise LookupError("no KNOWPAY_STRIPE_WEBHOOK_SECRET: the sandbox cannot sign Stripe events")
        trade = self._store.trade(delivery.trade_no, now=now)
        if trade is None:
            raise LookupError(f"trade {delivery.trade_no} of {delivery.notify_id} vanished")
        facts = json.loads(delivery.body)
        refund = None
        if facts.get("type") == "refund":
            found = self._store.find_refund(delivery.merchant_id, str(facts.get("out_refund_no")), now=now)
            refund = found[0] if found else None
        event = event_json(delivery, trade, refund, public_url=self._public_url)
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        timestamp = str(int(now))
        signature = hmac.new(self._secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body,
                             hashlib.sha256).hexdigest()
        return body, {"Content-Type": "application/json; charset=utf-8",
                      "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                      "Stripe-Signature": f"t={timestamp},v1={signature}"}

    def acknowledged(self, status: int, text: str) -> bool:
        return 200 <= status < 300


# -- reading requests -----------------------------------------------------------------------------

def _nested(pairs: Iterable[tuple[str, str]]) -> dict:
    """Stripe's form encoding (`metadata[payment_id]=...`, `expand[0]=...`) → nested dicts and lists."""
    root: dict = {}
    for key, value in pairs:
        match = PARAM_KEY.match(key)
        if not match:
            raise StripeApiError(400, f"Invalid parameter name: {key[:100]}", code="parameter_unknown")
        path = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node = root
        for name in path[:-1]:
            child = node.setdefault(name, {})
            if not isinstance(child, dict):
                raise StripeApiError(400, f"Invalid parameter: {key[:100]}", code="parameter_invalid", param=key)
            node = child
        last = path[-1] if path[-1] != "" else str(len(node))  # `expand[]=` appends
        if isinstance(node.get(last), dict):
            raise StripeApiError(400, f"Invalid parameter: {key[:100]}", code="parameter_invalid", param=key)
        node[last] = value
    params = _listed(root)
    if not isinstance(params, dict):
        raise StripeApiError(400, "Parameter names must not be numbers.", code="parameter_unknown")
    return params


def _listed(node: object) -> object:
    if not isinstance(node, dict):
        return node
    if node and all(k.isdigit() for k in node):
        return [_listed(node[k]) for k in sorted(node, key=int)]
    return {k: _listed(v) for k, v in node.items()}


def _params(allowed: Iterable[str]) -> dict:
    pairs = request.form.items(multi=True) if request.method == "POST" else request.args.items(multi=True)
    params = _nested(pairs)
    for name in params:
        if name not in allowed and name != "expand":
            raise StripeApiError(400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name)
    return params


def _expand(params: dict) -> set[str]:
    value = params.get("expand", [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise StripeApiError(400, "Invalid array", code="parameter_invalid", param="expand")
    return set(value)


def _integer(params: dict, name: str, *, required: bool, low: int = 1, high: int = MAX_AMOUNT) -> int | None:
    value = params.get(name)
    if value is None:
        if required:
            raise StripeApiError(400, f"Missing required param: {name}.", code="parameter_missing", param=name)
        return None
    if not isinstance(value, str) or not value.isascii() or not value.lstrip("-").isdigit():
        raise StripeApiError(400, "Invalid integer: " + str(value)[:50], code="parameter_invalid_integer", param=name)
    number = int(value)
    if number < low:
        raise StripeApiError(400, f"This value must be greater than or equal to {low}.",
                             code="amount_too_small" if name == "amount" else "parameter_invalid_integer", param=name)
    if number > high:
        raise StripeApiError(400, f"This value must be less than or equal to {high}.",
                             code="amount_too_large" if name == "amount" else "parameter_invalid_integer", param=name)
    return number


def _currency(params: dict) -> str:
    value = params.get("currency")
    if not isinstance(value, str) or not value:
        raise StripeApiError(400, "Missing required param: currency.", code="parameter_missing", param="currency")
    if value.lower() not in EXPONENTS or value.lower() == "coin":
        raise StripeApiError(400, f"Invalid currency: {value[:10].lower()}.", code="parameter_invalid",
                             param="currency")
    return value.lower()


def _metadata(params: dict) -> dict[str, str]:
    value = params.get("metadata", {})
    if value == "":  # Stripe's way of clearing metadata
        return {}
    if not isinstance(value, dict) or len(value) > 50 or not all(
            isinstance(v, str) and len(k) <= 40 and len(v) <= 500 for k, v in value.items()):
        raise StripeApiError(400, "Invalid metadata: at most 50 keys of 40 characters, values of 500.",
                             code="parameter_invalid", param="metadata")
    return dict(value)


def _text(params: dict, name: str, *, max_length: int) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > max_length:
        raise StripeApiError(400, f"Invalid string: {name} must be at most {max_length} characters.",
                             code="parameter_invalid", param=name)
    return value


def _http_url(params: dict, name: str, *, required: bool) -> str | None:
    value = _text(params, name, max_length=5000)
    if value is None and required:
        raise StripeApiError(400, f"Missing required param: {name}.", code="parameter_missing", param=name)
    if value is not None and not value.startswith(("http://", "https://")):
        raise StripeApiError(400, f"Not a valid URL: {name}", code="url_invalid", param=name)
    return value


def _line_items(params: dict) -> tuple[int, str, str]:
    """Checkout's `line_items` with inline `price_data` → (amount total, currency, names for the page)."""
    items = params.get("line_items")
    if not isinstance(items, list) or not items:
        raise StripeApiError(400, "Missing required param: line_items.", code="parameter_missing", param="line_items")
    total, currencies, names = 0, set(), []
    for number, item in enumerate(items):
        where = f"line_items[{number}]"
        price = item.get("price_data") if isinstance(item, dict) else None
        if not isinstance(price, dict) or set(item) - {"quantity", "price_data"} \
                or set(price) - {"currency", "unit_amount", "product_data"}:
            raise StripeApiError(400, f"The sandbox takes {where} as quantity and price_data (currency, unit_amount, "
                                      "product_data) only.", code="parameter_invalid", param=where)
        quantity = _integer(item, "quantity", required=True, high=999_999) or 1
        unit_amount = _integer(price, "unit_amount", required=True) or 0
        currencies.add(_currency(price))
        product = price.get("product_data")
        name = _text(product, "name", max_length=250) if isinstance(product, dict) else None
        if name is None:
            raise StripeApiError(400, f"Missing required param: {where}[price_data][product_data][name].",
                                 code="parameter_missing", param=f"{where}[price_data][product_data][name]")
        total += quantity * unit_amount
        names.append(name)
    if len(currencies) != 1:
        raise StripeApiError(400, "All line items must be in one currency.", code="parameter_invalid",
                             param="line_items")
    if total > MAX_AMOUNT:
        raise StripeApiError(400, "The line items add up to too much.", code="amount_too_large", param="line_items")
    return total, currencies.pop(), "; ".join(names)[:256]


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= 255:
        raise StripeApiError(400, "Idempotency-Key must be 1 to 255 characters.", type="idempotency_error")
    return key


def _page(items: list[dict], params: dict, url: str) -> dict:
    """One page of a Stripe list, newest first, from `starting_after` on."""
    limit = _integer(params, "limit", required=False, low=1, high=100) or 10
    after = _text(params, "starting_after", max_length=255)
    if params.get("ending_before") is not None:
        raise StripeApiError(400, "The sandbox pages forward only (starting_after).", code="parameter_unknown",
                             param="ending_before")
    start = 0
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise StripeApiError(400, f"No such object: '{after[:100]}'", code="resource_missing",
                                 param="starting_after")
        start = ids.index(after) + 1
    chunk = items[start:start + limit]
    return {"object": "list", "data": chunk, "has_more": start + limit < len(items), "url": url}


def _created_range(params: dict) -> tuple[float, float]:
    created = params.get("created")
    if created is None:
        return 0.0, time.time() + 1
    if not isinstance(created, dict):
        number = _integer(params, "created", required=True, low=0) or 0
        return float(number), float(number) + 1
    bounds = {"gte": 0, "gt": 1, "lte": 1, "lt": 0}
    start, end = 0.0, time.time() + 1
    for name, value in created.items():
        if name not in bounds:
            raise StripeApiError(400, f"Received unknown parameter: created[{name}]", code="parameter_unknown",
                                 param=f"created[{name}]")
        number = _integer({name: value}, name, required=True, low=0, high=2**40) or 0
        if name in ("gte", "gt"):
            start = max(start, float(number + bounds[name]))
        else:
            end = min(end, float(number + bounds[name]))
    return start, end


# -- the routes -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StripeSandbox:
    """What the imitation needs: the shared gateway, our keys, and where events go."""

    gateway: Gateway
    secret_key: str
    account: str
    webhook_url: str
    return_base: str
    fee_bps: int

    def public_url(self) -> str:
        # KNOWPAY_SANDBOX_URL when set (a phone on the LAN must reach the pay page), else how we were called.
        config = self.gateway.config
        return config.url if config.url_is_set else request.host_url.rstrip("/")

    @property
    def store(self) -> SandboxStore:
        return self.gateway.store

    def trade(self, intent_id: str, *, param: str = "intent") -> Trade:
        trade = self.store.trade(intent_id[3:], now=time.time()) if intent_id.startswith("pi_") else None
        if trade is None or trade.channel != CHANNEL or trade.merchant_id != self.account or not has_intent(trade):
            raise _missing("payment_intent", intent_id, param)
        return trade

    def session(self, session_id: str) -> Trade:
        trade = self.store.trade(session_id[3:], now=time.time()) if session_id.startswith("cs_") else None
        if trade is None or trade.channel != CHANNEL or trade.merchant_id != self.account or _checkout(trade) is None:
            raise _missing("checkout.session", session_id, "session")
        return trade

    def refunds_of(self, trade: Trade | None) -> list[tuple[Refund, Trade]]:
        """Refunds, newest first: of one trade, or all of this account's (the store lists them by day)."""
        start = trade.created_at if trade else 0.0
        entries = self.store.bill(self.account, start=start, end=time.time() + 1, now=time.time())
        found = [(e.refund, e.trade) for e in entries if e.refund is not None and e.trade.channel == CHANNEL
                 and (trade is None or e.trade.trade_no == trade.trade_no)]
        return sorted(found, key=lambda pair: (pair[0].refunded_at, pair[0].refund_no), reverse=True)


def install(app: Flask, gateway: Gateway, settings: Settings) -> StripeEvents:
    """Add Stripe's /v1 paths (when KNOWPAY_STRIPE_SECRET_KEY and _WEBHOOK_SECRET are set); return the event format."""
    secret_key = settings.channel.get("stripe_secret_key")
    webhook_secret = settings.channel.get("stripe_webhook_secret")

    if not secret_key or not webhook_secret:
        log.info("Stripe imitation off: set KNOWPAY_STRIPE_SECRET_KEY and KNOWPAY_STRIPE_WEBHOOK_SECRET to turn it on")
        return StripeEvents(gateway.store, webhook_secret, gateway.config.url)
    raw_fee = settings.channel.get("stripe_fee_bps") or ""
    sandbox = StripeSandbox(gateway, secret_key, account_id(secret_key),
                            webhook_url=f"{settings.base_url}/notify/stripe", return_base=settings.base_url,
                            fee_bps=int(raw_fee) if raw_fee.isdigit() else DEFAULT_FEE_BPS)
    app.register_blueprint(_blueprint(sandbox))
    return StripeEvents(gateway.store, webhook_secret, gateway.config.url)


def _blueprint(sandbox: StripeSandbox) -> Blueprint:
    bp = Blueprint("stripe_v1", __name__, url_prefix="/v1")
    store = sandbox.store

    @bp.errorhandler(StripeApiError)
    def _stripe_error(exc: StripeApiError):
        return jsonify(error=exc.body), exc.status

    @bp.before_request
    def _authenticate():
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise StripeApiError(401, "You did not provide an API key. Provide it as 'Authorization: Bearer <key>'.")
        if not hmac.compare_digest(key.encode("utf-8", "replace"), sandbox.secret_key.encode("utf-8")):
            raise StripeApiError(401, f"Invalid API Key provided: {key[:8]}****{key[-4:]}")

    @bp.after_request
    def _request_id(response: Response) -> Response:
        response.headers["Request-Id"] = "req_" + secrets.token_hex(8)
        return response

    # -- payment intents ---------------------------------------------------------------------------

    @bp.post("/payment_intents")
    def create_intent():
        params = _params(("amount", "currency", "metadata", "description", "automatic_payment_methods",
                          "payment_method_types", "statement_descriptor_suffix", "receipt_email"))
        amount = _integer(params, "amount", required=True)
        currency = _currency(params)
        metadata = _metadata(params)
        description = _text(params, "description", max_length=1000)
        key = _idempotency_key()
        # Stripe keys idempotency on the Idempotency-Key; the store's unique out_trade_no keeps it across restarts.
        out_trade_no = key or GENERATED + secrets.token_hex(12)
        payment_id = metadata.get("payment_id")
        # Stripe.js would send the buyer back where KnowPay's checkout said; that is KnowPay's payment page.
        return_url = (f"{sandbox.return_base}/checkout/payments/{payment_id}" if payment_id
                      else sandbox.return_base)
        try:
            trade, created = store.create_trade(
                sandbox.account, out_trade_no=out_trade_no, amount=amount, currency=currency.upper(),
                subject=description or "Stripe PaymentIntent", notify_url=sandbox.webhook_url, return_url=return_url,
                expires_at=time.time() + INTENT_LIFETIME_SECONDS, now=time.time(), channel=CHANNEL,
                extra={"secret": secrets.token_hex(12), "metadata": metadata, "description": description})
        except GatewayError as exc:
            if exc.code == "out_trade_no_conflict":
                raise _idempotency_error(out_trade_no) from None
            raise StripeApiError(400, exc.message, code=exc.code) from None
        extra = _extra(trade)
        if not created and (trade.channel != CHANNEL or extra.get("metadata") != metadata
                            or extra.get("description") != description):
            raise _idempotency_error(out_trade_no)
        response = jsonify(intent_json(trade, public_url=sandbox.public_url()))
        if not created:
            response.headers["Idempotent-Replayed"] = "true"
        return response

    @bp.get("/payment_intents/search")
    def search_intents():
        params = _params(("query", "limit", "page"))
        query = _text(params, "query", max_length=5000) or ""
        match = SEARCH.match(query)
        if not match:
            raise StripeApiError(400, "The sandbox searches only metadata['key']:'value'.",
                                 code="parameter_invalid", param="query")
        name, value = match.groups()
        # Found through the trade number the Idempotency-Key gave it: KnowPay's adapter uses its payment id
        # as both the key and metadata.payment_id, so that is what this imitation can find.
        trade = store.find_trade(sandbox.account, value, now=time.time())
        found = [] if trade is None or trade.channel != CHANNEL or not has_intent(trade) \
            or _extra(trade).get("metadata", {}).get(name) != value \
            else [intent_json(trade, public_url=sandbox.public_url())]
        return jsonify(object="search_result", data=found, has_more=False, next_page=None,
                       url="/v1/payment_intents/search")

    @bp.get("/payment_intents/<intent>")
    def retrieve_intent(intent: str):
        _params(("client_secret",))
        return jsonify(intent_json(sandbox.trade(intent), public_url=sandbox.public_url()))

    @bp.post("/payment_intents/<intent>/cancel")
    def cancel_intent(intent: str):
        params = _params(("cancellation_reason",))
        reason = _text(params, "cancellation_reason", max_length=40)
        if reason is not None and reason not in ("duplicate", "fraudulent", "requested_by_customer", "abandoned"):
            raise StripeApiError(400, f"Invalid cancellation_reason: {reason}", code="parameter_invalid",
                                 param="cancellation_reason")
        trade = sandbox.trade(intent)
        if trade.status in (TradeStatus.SUCCESS, TradeStatus.CLOSED):
            status = INTENT_STATUSES[TradeStatus(trade.status)]
            raise StripeApiError(
                400, f"You cannot cancel this PaymentIntent because it has a status of {status}. Only a "
                     "PaymentIntent with one of the following statuses may be canceled: requires_payment_method, "
                     "requires_capture, requires_confirmation, requires_action, processing.",
                code="payment_intent_unexpected_state",
                payment_intent=intent_json(trade, public_url=sandbox.public_url()))
        if trade.status == TradeStatus.DECLINED:
            # The store's decline is final, so nothing can pay this trade any more: answered as Stripe would.
            return jsonify(intent_json(trade, public_url=sandbox.public_url(), status="canceled"))
        closed = store.close_trade(sandbox.account, trade.out_trade_no, now=time.time())
        if closed is not None and closed.status == TradeStatus.SUCCESS:  # paid at this very moment
            raise StripeApiError(400, "You cannot cancel this PaymentIntent because it has a status of succeeded.",
                                 code="payment_intent_unexpected_state")
        return jsonify(intent_json(closed or trade, public_url=sandbox.public_url()))

    # -- checkout sessions -------------------------------------------------------------------------

    @bp.post("/checkout/sessions")
    def create_session():
        params = _params(SESSION_PARAMS)
        if params.get("mode") != "payment":
            raise StripeApiError(400, "The sandbox imitates Checkout in payment mode only.", code="parameter_invalid",
                                 param="mode")
        if params.get("payment_method_types", ["card"]) != ["card"]:
            raise StripeApiError(400, "The sandbox takes cards only.", code="parameter_invalid",
                                 param="payment_method_types")
        amount, currency, names = _line_items(params)
        now = time.time()
        least, most = SESSION_LIFETIME
        expires_at = _integer(params, "expires_at", required=False, low=0, high=2**40) or int(now) + most
        if not now + least <= expires_at <= now + most:
            raise StripeApiError(400, "The `expires_at` timestamp must be between 30 minutes and 24 hours from "
                                      "Checkout Session creation.", code="parameter_invalid", param="expires_at")
        intent_data = params.get("payment_intent_data", {})
        if not isinstance(intent_data, dict) or set(intent_data) - {"metadata", "description"}:
            raise StripeApiError(400, "The sandbox takes payment_intent_data[metadata] and [description] only.",
                                 code="parameter_invalid", param="payment_intent_data")
        success_url = _http_url(params, "success_url", required=True)
        facts = {"success_url": success_url, "cancel_url": _http_url(params, "cancel_url", required=False),
                 "client_reference_id": _text(params, "client_reference_id", max_length=200),
                 "metadata": _metadata(params), "expires_at": expires_at}
        intent_metadata = _metadata(intent_data)
        description = _text(intent_data, "description", max_length=1000)
        out_trade_no = _idempotency_key() or GENERATED + secrets.token_hex(12)
        try:
            trade, created = store.create_trade(
                sandbox.account, out_trade_no=out_trade_no, amount=amount, currency=currency.upper(), subject=names,
                notify_url=sandbox.webhook_url, return_url=facts["cancel_url"] or success_url,
                expires_at=float(expires_at), now=now, channel=CHANNEL,
                extra={"secret": secrets.token_hex(12), "metadata": intent_metadata, "description": description,
                       "checkout": facts})
        except GatewayError as exc:
            if exc.code == "out_trade_no_conflict":
                raise _idempotency_error(out_trade_no) from None
            raise StripeApiError(400, exc.message, code=exc.code) from None
        extra = _extra(trade)
        if not created and (trade.channel != CHANNEL or extra.get("checkout") != facts
                            or extra.get("metadata") != intent_metadata or extra.get("description") != description):
            raise _idempotency_error(out_trade_no)
        response = jsonify(session_json(trade, public_url=sandbox.public_url()))
        if not created:
            response.headers["Idempotent-Replayed"] = "true"
        return response

    @bp.get("/checkout/sessions")
    def list_sessions():
        params = _params(("status", "created", "payment_intent", "limit", "starting_after", "ending_before"))
        wanted = _text(params, "status", max_length=20)
        if wanted not in (None, "open", "complete", "expired"):
            raise StripeApiError(400, f"Invalid status: {wanted[:20]}", code="parameter_invalid", param="status")
        intent = _text(params, "payment_intent", max_length=255)
        start, end = _created_range(params)
        sessions = [session_json(t, public_url=sandbox.public_url())
                    for t in store.trades_since(sandbox.account, channel=CHANNEL, start=start, now=time.time())
                    if _checkout(t) is not None and t.created_at < end]
        sessions = [s for s in sessions if (wanted is None or s["status"] == wanted)
                    and (intent is None or s["payment_intent"] == intent)]
        return jsonify(_page(sessions, params, "/v1/checkout/sessions"))

    @bp.get("/checkout/sessions/<session_id>")
    def retrieve_session(session_id: str):
        _params(())
        return jsonify(session_json(sandbox.session(session_id), public_url=sandbox.public_url()))

    @bp.post("/checkout/sessions/<session_id>/expire")
    def expire_session(session_id: str):
        _params(())
        trade = sandbox.session(session_id)
        if trade.status == TradeStatus.DECLINED:
            # The store's decline is final, so nothing can pay this session any more: answered as Stripe would.
            return jsonify(session_json(trade, public_url=sandbox.public_url(), status="expired"))
        if trade.status == TradeStatus.WAIT_BUYER_PAY:
            trade = store.close_trade(sandbox.account, trade.out_trade_no, now=time.time()) or trade
            if trade.status == TradeStatus.CLOSED:
                return jsonify(session_json(trade, public_url=sandbox.public_url()))
        # Already expired, or complete (perhaps paid at this very moment).
        raise StripeApiError(400, 'Only Checkout Sessions with a status in ["open"] can be expired. This Checkout '
                                  f"Session has a status of `{SESSION_STATUSES[TradeStatus(trade.status)]}`.")

    # -- refunds -----------------------------------------------------------------------------------

    @bp.post("/refunds")
    def create_refund():
        params = _params(("payment_intent", "charge", "amount", "metadata", "reason"))
        intent = _text(params, "payment_intent", max_length=255)
        charge = _text(params, "charge", max_length=255)
        if intent is None and charge is None:
            raise StripeApiError(400, "One of the following params should be provided for this request: "
                                      "payment_intent or charge.", code="parameter_missing", param="payment_intent")
        trade = (sandbox.trade(intent, param="payment_intent") if intent
                 else sandbox.trade("pi_" + charge[3:] if charge.startswith("ch_") else "", param="charge"))
        amount = _integer(params, "amount", required=False)
        metadata = _metadata(params)
        reason = _text(params, "reason", max_length=40)
        if reason is not None and reason not in REFUND_REASONS:
            raise StripeApiError(400, f"Invalid reason: must be one of {', '.join(REFUND_REASONS)}",
                                 code="parameter_invalid", param="reason")
        key = _idempotency_key()
        if key is not None:
            found = store.find_refund(sandbox.account, key, now=time.time())
            if found is not None:
                refund, refunded = found
                if refunded.trade_no != trade.trade_no or (amount is not None and amount != refund.amount) \
                        or _refund_extra(refund).get("metadata") != metadata:
                    raise _idempotency_error(key)
                response = jsonify(refund_json(refund, refunded, public_url=sandbox.public_url()))
                response.headers["Idempotent-Replayed"] = "true"
                return response
        charge_id = f"ch_{trade.trade_no}"
        if trade.status != TradeStatus.SUCCESS:
            raise StripeApiError(400, f"This PaymentIntent ({'pi_' + trade.trade_no}) does not have a successful "
                                      "charge to refund.", code="charge_not_refundable", param="payment_intent")
        left = trade.amount - trade.amount_refunded
        if left == 0:
            raise StripeApiError(400, f"Charge {charge_id} has already been refunded.",
                                 code="charge_already_refunded")
        if amount is not None and amount > left:
            raise _too_large(amount, left)
        try:
            refund, trade, _ = store.create_refund(
                sandbox.account, out_trade_no=trade.out_trade_no, out_refund_no=key or GENERATED + secrets.token_hex(12),
                amount=left if amount is None else amount,
                reason=json.dumps({"metadata": metadata, "reason": reason}), notify_url=sandbox.webhook_url,
                now=time.time())
        except GatewayError as exc:  # another refund of the same charge got in first
            if exc.code == "refund_exceeds_trade":
                latest = sandbox.trade(f"pi_{trade.trade_no}")
                raise _too_large(amount or left, latest.amount - latest.amount_refunded) from None
            if exc.code == "out_refund_no_conflict":
                raise _idempotency_error(key or "") from None
            raise StripeApiError(400, exc.message, code=exc.code) from None
        sandbox.gateway.notifier.wake()
        return jsonify(refund_json(refund, trade, public_url=sandbox.public_url()))

    @bp.get("/refunds/<refund_id>")
    def retrieve_refund(refund_id: str):
        _params(())
        for refund, trade in sandbox.refunds_of(None):
            if f"re_{refund.refund_no}" == refund_id:
                return jsonify(refund_json(refund, trade, public_url=sandbox.public_url()))
        raise _missing("refund", refund_id, "refund")

    @bp.get("/refunds")
    def list_refunds():
        params = _params(("payment_intent", "charge", "limit", "starting_after", "ending_before", "created"))
        intent = _text(params, "payment_intent", max_length=255)
        charge = _text(params, "charge", max_length=255)
        trade = None
        if intent is not None:
            trade = sandbox.trade(intent, param="payment_intent")
        elif charge is not None:
            trade = sandbox.trade("pi_" + charge[3:] if charge.startswith("ch_") else "", param="charge")
        expand_intent = "data.payment_intent" in _expand(params)
        refunds = [refund_json(r, t, public_url=sandbox.public_url(), expand_intent=expand_intent)
                   for r, t in sandbox.refunds_of(trade)]
        return jsonify(_page(refunds, params, "/v1/refunds"))

    # -- balance transactions ----------------------------------------------------------------------

    @bp.get("/balance_transactions")
    def list_balance_transactions():
        params = _params(("created", "limit", "starting_after", "ending_before", "type"))
        start, end = _created_range(params)
        wanted = _text(params, "type", max_length=40)
        expand = _expand(params)
        entries = [e for e in store.bill(sandbox.account, start=start, end=end, now=time.time())
                   if e.trade.channel == CHANNEL]
        transactions = [balance_transaction_json(e, public_url=sandbox.public_url(), expand=expand,
                                                 fee_bps=sandbox.fee_bps)
                        for e in entries]
        transactions = [t for t in transactions if wanted is None or t["type"] == wanted]
        transactions.sort(key=lambda t: (t["created"], t["id"]), reverse=True)
        return jsonify(_page(transactions, params, "/v1/balance_transactions"))

    @bp.route("/<path:rest>", methods=["GET", "POST", "DELETE"])
    def unrecognized(rest: str):
        raise StripeApiError(404, f"Unrecognized request URL ({request.method}: /v1/{rest[:200]}).")

    return bp
