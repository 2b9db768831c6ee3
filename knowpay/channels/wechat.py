"""The `wechat` channel: WeChat Pay API v3 for a direct merchant, in WeChat Pay public-key mode.

Requests are signed WECHATPAY2-SHA256-RSA2048 with our merchant key; every answer and callback is checked
against the WeChat Pay public key named by `Wechatpay-Serial`; callback resources are AES-256-GCM with the
APIv3 key. Amounts are integer fen on the wire. WeChat Pay's statuses are mapped to ours here, in one place.
The wire functions at the top are shared with the sandbox's imitation (`knowpay.sandbox.gateways.wechat`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlencode, urlsplit
from zoneinfo import ZoneInfo

import requests
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

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
from knowpay.channels.http import DEFAULT_TIMEOUT, encode_json
from knowpay.config import ConfigError, Settings
from knowpay.domain.errors import ChannelUnavailable, Conflict, InvalidRequest, KnowPayError, NotFound
from knowpay.domain.money import check_amount, parse_major

# -- the wire: signatures, AES-256-GCM resources, times (shared with the sandbox's imitation) ---------------

SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
SIGNTEST_PREFIX = "WECHATPAY/SIGNTEST/"
FRESHNESS_SECONDS = 300
AES_ALGORITHM = "AEAD_AES_256_GCM"
BEIJING = ZoneInfo("Asia/Shanghai")  # WeChat Pay writes every time, and cuts every bill day, in Beijing time
REQUIRED_SETTINGS = ("mch_id", "app_id", "apiv3_key", "private_key", "cert_serial", "public_key",
                     "public_key_id", "gateway")
DEFAULT_FEE_BPS = 60


class WireError(Exception):
    """A signature, timestamp or ciphertext that does not check out; the message says which and why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _pem_bytes(value: str, variable: str) -> bytes:
    """PEM text, or a path to a PEM file (API.md)."""
    if "-----BEGIN" in value:
        # An environment file may carry the PEM on one line with literal "\n"s.
        text = value.replace("\\n", "\n") if "\n" not in value.strip() else value
        return text.strip().encode("ascii", "replace")
    try:
        return Path(value).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"{variable} is neither PEM text nor a readable PEM file ({exc.strerror})") \
            from None


def load_private_key(value: str, variable: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(_pem_bytes(value, variable), password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{variable} is not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
        raise ConfigError(f"{variable} must be an RSA key of at least 2048 bits")
    return key


def load_public_key(value: str, variable: str) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_pem_public_key(_pem_bytes(value, variable))
    except (ValueError, TypeError):
        raise ConfigError(f"{variable} is not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < 2048:
        raise ConfigError(f"{variable} must be an RSA key of at least 2048 bits")
    return key


def new_nonce() -> str:
    return secrets.token_hex(16).upper()


def request_message(method: str, url: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    """What a request's signature covers: method, path with query, timestamp, nonce and body, one per line."""
    return f"{method}\n{url}\n{timestamp}\n{nonce}\n".encode() + body + b"\n"


def answer_message(timestamp: str, nonce: str, body: bytes) -> bytes:
    """What the signature of an answer or a callback covers (an empty body still ends with a newline)."""
    return f"{timestamp}\n{nonce}\n".encode() + body + b"\n"


def sign(key: rsa.RSAPrivateKey, message: bytes) -> str:
    """SHA256withRSA (PKCS#1 v1.5), base64."""
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode("ascii")


def verify(key: rsa.RSAPublicKey, message: bytes, signature: str) -> bool:
    try:
        raw = base64.b64decode(signature.encode("ascii"), validate=True)
        key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, UnicodeEncodeError, ValueError):
        return False
    return True


def authorization(*, mch_id: str, serial_no: str, key: rsa.RSAPrivateKey, method: str, url: str, body: bytes,
                  timestamp: str, nonce: str) -> str:
    """The `Authorization` header of one request (`url` is the path with its query, as sent)."""
    signature = sign(key, request_message(method, url, timestamp, nonce, body))
    return (f'{SIGNATURE_TYPE} mchid="{mch_id}",nonce_str="{nonce}",signature="{signature}",'
            f'timestamp="{timestamp}",serial_no="{serial_no}"')


_AUTH_PAIR = re.compile(r'\s*([a-z_]+)="([^"]*)"\s*(?:,|$)')


def parse_authorization(header: str) -> dict[str, str] | None:
    """`WECHATPAY2-SHA256-RSA2048 k="v",...` → its fields, or None when it is not that shape."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme != SIGNATURE_TYPE:
        return None
    fields: dict[str, str] = {}
    position = 0
    while position < len(rest):
        match = _AUTH_PAIR.match(rest, position)
        if match is None:
            return None
        fields[match.group(1)] = match.group(2)
        position = match.end()
    return fields


def signature_headers(key: rsa.RSAPrivateKey, serial: str, body: bytes, *, now: float) -> dict[str, str]:
    """The `Wechatpay-*` headers that sign an answer or a callback at `now`."""
    timestamp, nonce = str(int(now)), new_nonce()
    return {"Wechatpay-Timestamp": timestamp, "Wechatpay-Nonce": nonce, "Wechatpay-Serial": serial,
            "Wechatpay-Signature": sign(key, answer_message(timestamp, nonce, body)),
            "Wechatpay-Signature-Type": SIGNATURE_TYPE}


def check_fresh(timestamp: str, now: float, what: str) -> None:
    if not (timestamp.isascii() and timestamp.isdigit()):
        raise WireError(f"{what} is not unix seconds")
    drift = int(timestamp) - now
    if abs(drift) > FRESHNESS_SECONDS:
        when = "in the future" if drift > 0 else "old"
        raise WireError(f"{what} is {abs(int(drift))} s {when} (more than {FRESHNESS_SECONDS} s from now)")


def check_signed(headers: Mapping[str, str], body: bytes, public_keys: Mapping[str, rsa.RSAPublicKey], *,
                 now: float) -> str:
    """Verify the `Wechatpay-*` headers of an answer or callback → the serial that signed it; else WireError.

    Refuses WeChat Pay's `WECHATPAY/SIGNTEST/` probes, timestamps more than 5 minutes away either way
    (wechatpayv3 and many clients skip this), and any serial that is not a key we were configured with.
    """
    lower = {name.lower(): value for name, value in headers.items()}
    values = {}
    for name in ("Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Signature", "Wechatpay-Serial"):
        values[name] = lower.get(name.lower(), "").strip()
        if not values[name]:
            raise WireError(f"the {name} header is missing")
    signature = values["Wechatpay-Signature"]
    if signature.upper().startswith(SIGNTEST_PREFIX):
        raise WireError(f"a {SIGNTEST_PREFIX} signature probe is never accepted")
    kind = lower.get("wechatpay-signature-type", SIGNATURE_TYPE).strip()
    if kind != SIGNATURE_TYPE:
        raise WireError(f"unsupported Wechatpay-Signature-Type {kind[:40]!r}")
    check_fresh(values["Wechatpay-Timestamp"], now, "Wechatpay-Timestamp")
    serial = values["Wechatpay-Serial"]
    key = public_keys.get(serial)
    if key is None:
        raise WireError(f"Wechatpay-Serial {serial[:64]!r} is not the WeChat Pay public key we know")
    message = answer_message(values["Wechatpay-Timestamp"], values["Wechatpay-Nonce"], body)
    if not verify(key, message, signature):
        raise WireError("Wechatpay-Signature does not verify with the WeChat Pay public key")
    return serial


def encrypt_resource(key: bytes, plaintext: bytes, *, associated_data: str, nonce: str) -> str:
    return base64.b64encode(AESGCM(key).encrypt(nonce.encode(), plaintext, associated_data.encode())).decode()


def decrypt_resource(key: bytes, ciphertext: str, *, associated_data: str, nonce: str) -> bytes:
    """AEAD_AES_256_GCM with the APIv3 key; WireError when ciphertext, nonce or associated data changed."""
    try:
        raw = base64.b64decode(ciphertext.encode("ascii"), validate=True)
        return AESGCM(key).decrypt(nonce.encode("utf-8"), raw, associated_data.encode("utf-8"))
    except (InvalidTag, binascii.Error, UnicodeEncodeError, ValueError):
        raise WireError("the resource does not decrypt with our APIv3 key (altered, or another key)") \
            from None


def rfc3339(moment: datetime | float) -> str:
    """A time as WeChat Pay writes it: `2026-11-25T12:00:00+08:00` (naive datetimes are UTC, as ours are)."""
    if isinstance(moment, datetime):
        aware = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    else:
        aware = datetime.fromtimestamp(moment, UTC)
    return aware.astimezone(BEIJING).isoformat(timespec="seconds")


def parse_time(text: str) -> datetime:
    """An RFC 3339 time → naive UTC, as KnowPay stores times. Raises ValueError."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no offset")
    return moment.astimezone(UTC).replace(tzinfo=None)


# -- statuses: WeChat Pay's words → ours ----------------------------------------------------------------

TRADE_STATES = {"SUCCESS": "succeeded", "REFUND": "succeeded",  # REFUND: paid, then (partly) refunded
                "NOTPAY": "pending", "USERPAYING": "pending", "ACCEPT": "pending",
                "CLOSED": "closed", "REVOKED": "closed", "PAYERROR": "failed"}
NOTIFIED_TRADE_STATES = {"SUCCESS": "succeeded", "CLOSED": "failed", "PAYERROR": "failed",
                         "REVOKED": "failed", "NOTPAY": "pending", "USERPAYING": "pending"}
REFUND_STATUSES = {"SUCCESS": "succeeded", "PROCESSING": "pending", "ABNORMAL": "failed", "CLOSED": "failed"}
NOTIFIED_REFUND_STATUSES = {"SUCCESS": "succeeded", "ABNORMAL": "failed", "CLOSED": "failed"}
# Refusals that say WeChat Pay is busy or our balance is short, not that this request is wrong: retry later.
RETRY_LATER = {"SYSTEM_ERROR", "SYSTEMERROR", "FREQUENCY_LIMITED", "NOT_ENOUGH", "BANK_ERROR",
               "STATEMENT_CREATING", "ACCOUNT_ERROR"}
MISCONFIGURED = {"SIGN_ERROR", "NO_AUTH", "MCH_NOT_EXISTS", "APPID_MCHID_NOT_MATCH", "INVALID_REQUEST_SIGN"}
CONFLICTS = {"OUT_TRADE_NO_USED", "ORDER_CLOSED", "ORDERPAID", "ORDER_PAID", "TRADE_ERROR"}
METHODS = {None: "native", "native": "native", "jsapi": "jsapi", "h5": "h5"}

# The trade bill: every field starts with a backtick (so spreadsheets keep long numbers), a summary follows.
BILL_SUMMARY_HEAD = "总交易单数"
BILL_COLUMNS = ("交易时间", "微信订单号", "商户订单号", "交易状态", "货币种类", "应结订单金额", "商户退款单号",
                "退款金额", "退款状态", "手续费")
BILL_REFUND_STATUSES = {"SUCCESS": "succeeded", "PROCESSING": "pending", "CHANGE": "failed",
                        "REFUNDCLOSE": "failed", "ABNORMAL": "failed", "CLOSED": "failed"}
_FEE = re.compile(r"^-?\d+(\.\d{1,8})?$")


@dataclass(frozen=True)
class WeChatPayConfig:
    """The `KNOWPAY_WECHAT_*` variables, keys loaded."""

    mch_id: str
    app_id: str
    apiv3_key: bytes
    private_key: rsa.RSAPrivateKey
    cert_serial: str
    public_key: rsa.RSAPublicKey
    public_key_id: str
    gateway: str
    fee_bps: int = DEFAULT_FEE_BPS

    @classmethod
    def from_settings(cls, settings: Settings) -> WeChatPayConfig | None:
        """None when any required variable is unset (the channel is off); ConfigError when one is unusable."""
        env = {name: (settings.channel.get(f"wechat_{name}") or "").strip() for name in REQUIRED_SETTINGS}
        if not all(env.values()):
            return None
        apiv3_key = env["apiv3_key"].encode("utf-8")
        if len(apiv3_key) != 32:
            raise ConfigError(f"KNOWPAY_WECHAT_APIV3_KEY must be 32 bytes, not {len(apiv3_key)}")
        gateway = env["gateway"].rstrip("/")
        parts = urlsplit(gateway)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
            raise ConfigError("KNOWPAY_WECHAT_GATEWAY must be a base URL like https://api.mch.weixin.qq.com")
        if settings.is_production and parts.scheme != "https":
            raise ConfigError("KNOWPAY_WECHAT_GATEWAY must be https in production")
        raw_fee = (settings.channel.get("wechat_fee_bps") or str(DEFAULT_FEE_BPS)).strip()
        if not raw_fee.isdigit() or int(raw_fee) > 10_000:
            raise ConfigError(
                f"KNOWPAY_WECHAT_FEE_BPS must be a whole number from 0 to 10000, got {raw_fee!r}")
        return cls(mch_id=env["mch_id"], app_id=env["app_id"], apiv3_key=apiv3_key,
                   private_key=load_private_key(env["private_key"], "KNOWPAY_WECHAT_PRIVATE_KEY"),
                   cert_serial=env["cert_serial"],
                   public_key=load_public_key(env["public_key"], "KNOWPAY_WECHAT_PUBLIC_KEY"),
                   public_key_id=env["public_key_id"], gateway=gateway, fee_bps=int(raw_fee))


def from_settings(settings: Settings) -> WeChatPayChannel | None:
    config = WeChatPayConfig.from_settings(settings)
    return None if config is None else WeChatPayChannel(config)


# -- HTTP --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WireAnswer:
    status: int
    headers: Mapping[str, str]  # names in lower case
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Transport(Protocol):
    """Sends one request exactly as given; raises ChannelUnavailable when no answer comes back."""

    def __call__(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> WireAnswer: ...


class RequestsTransport:
    """A pooled `requests` session with (connect, read) timeouts on every call."""

    def __init__(self, *, timeout: tuple[float, float] = DEFAULT_TIMEOUT, trust_env: bool = True) -> None:
        self._timeout = timeout
        self._session = requests.Session()
        # False for a gateway on this machine (the sandbox), which an environment proxy would not reach.
        self._session.trust_env = trust_env

    def __call__(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> WireAnswer:
        try:
            response = self._session.request(method, url, data=body or None, headers=dict(headers),
                                             timeout=self._timeout, allow_redirects=False)
        except requests.Timeout:
            raise ChannelUnavailable("WeChat Pay did not answer in time.") from None
        except requests.RequestException as exc:
            raise ChannelUnavailable(f"WeChat Pay could not be reached ({exc.__class__.__name__}).") from None
        return WireAnswer(response.status_code, {k.lower(): v for k, v in response.headers.items()},
                          response.content)


def _is_loopback(base_url: str) -> bool:
    host = urlsplit(base_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- the adapter -------------------------------------------------------------------------------------------

def _is_fen(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _mapping(data: Mapping, name: str) -> dict:
    value = data.get(name)
    return value if isinstance(value, dict) else {}


def _text(data: Mapping, name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) and value else None


class WeChatPayChannel:
    """Talks to WeChat Pay API v3 at `config.gateway` as merchant `config.mch_id`."""

    name = "wechat"

    def __init__(self, config: WeChatPayConfig, *, clock: Callable[[], float] = time.time,
                 transport: Transport | None = None, timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> None:
        self.fee_bps = config.fee_bps
        self._config = config
        self._clock = clock
        self._public_keys = {config.public_key_id: config.public_key}
        self._transport = transport or RequestsTransport(timeout=timeout,
                                                         trust_env=not _is_loopback(config.gateway))

    # -- payments ----------------------------------------------------------------------------------

    def create(self, request: PaymentRequest) -> Created:
        check_amount(request.amount)
        if request.currency.lower() != "cny":
            raise InvalidRequest("WeChat Pay takes CNY only.", code="invalid_currency", param="currency")
        if request.method not in METHODS:
            raise InvalidRequest("method for wechat must be native, jsapi or h5.", code="invalid_method",
                                 param="method")
        method = METHODS[request.method]
        payload: dict = {
            "appid": self._config.app_id, "mchid": self._config.mch_id,
            "description": (request.subject or request.payment_id)[:127], "out_trade_no": request.payment_id,
            "time_expire": rfc3339(request.expires_at), "notify_url": request.notify_url,
            "amount": {"total": request.amount, "currency": "CNY"}}
        if method == "jsapi":
            if not request.openid:
                raise InvalidRequest("A JSAPI payment needs the buyer's openid.", code="parameter_missing",
                                     param="openid")
            payload["payer"] = {"openid": request.openid}
        if method == "h5":
            if not request.client_ip:
                raise InvalidRequest("An H5 payment needs the buyer's IP address.", code="parameter_missing",
                                     param="client_ip")
            # WeChat Pay opens H5 payments only for the address the buyer's phone calls from.
            payload["scene_info"] = {"payer_client_ip": request.client_ip, "h5_info": {"type": "Wap"}}
        elif request.client_ip:
            payload["scene_info"] = {"payer_client_ip": request.client_ip}
        data = self._expect(self._call("POST", f"/v3/pay/transactions/{method}", payload=payload))
        if method == "h5":
            h5_url = _text(data, "h5_url")
            if h5_url is None:
                raise ChannelUnavailable("WeChat Pay answered an H5 order without h5_url.")
            # The cashier sends the buyer back to redirect_url when done (or gone back); the page there waits.
            joiner = "&" if "?" in h5_url else "?"
            url = f"{h5_url}{joiner}redirect_url={quote(request.return_url, safe='')}"
            return Created(action=Action("redirect", {"url": url}), extra={"h5_url": h5_url})
        if method == "jsapi":
            prepay_id = _text(data, "prepay_id")
            if prepay_id is None:
                raise ChannelUnavailable("WeChat Pay answered a JSAPI order without prepay_id.")
            return Created(action=Action("jsapi", {"params": self.jsapi_params(prepay_id)}),
                           extra={"prepay_id": prepay_id})
        code_url = _text(data, "code_url")
        if code_url is None:
            raise ChannelUnavailable("WeChat Pay answered a Native order without code_url.")
        # The transaction_id exists only once the buyer pays; the callback or a query brings it.
        return Created(action=Action("qr_code", {"code_url": code_url}), extra={"code_url": code_url})

    def jsapi_params(self, prepay_id: str) -> dict[str, str]:
        """What the front end hands to WeixinJSBridge `getBrandWCPayRequest` / `wx.requestPayment`."""
        timestamp, nonce, package = str(int(self._clock())), new_nonce(), f"prepay_id={prepay_id}"
        message = f"{self._config.app_id}\n{timestamp}\n{nonce}\n{package}\n".encode()
        return {"appId": self._config.app_id, "timeStamp": timestamp, "nonceStr": nonce, "package": package,
                "signType": "RSA", "paySign": sign(self._config.private_key, message)}

    def query(self, payment_id: str) -> ChannelStatus:
        answer = self._call("GET", f"/v3/pay/transactions/out-trade-no/{quote(payment_id, safe='')}",
                            query={"mchid": self._config.mch_id})
        if answer.status == 404:
            return ChannelStatus("not_found")
        data = self._expect(answer)
        state = str(data.get("trade_state"))
        status = TRADE_STATES.get(state)
        if status is None:
            raise ChannelUnavailable(f"WeChat Pay answered an unknown trade_state {state[:40]!r}.")
        mch_id = data.get("mchid", self._config.mch_id)
        if data.get("out_trade_no") != payment_id or mch_id != self._config.mch_id:
            raise ChannelUnavailable("WeChat Pay answered about another trade than the one asked for.")
        amount = _mapping(data, "amount")
        try:
            paid_at = parse_time(data["success_time"]) if status == "succeeded" and data.get("success_time") \
                else None
        except (TypeError, ValueError):
            raise ChannelUnavailable("WeChat Pay answered an unreadable success_time.") from None
        currency = amount.get("currency")
        return ChannelStatus(status, channel_trade_no=_text(data, "transaction_id"),
                             amount=amount.get("total") if _is_fen(amount.get("total")) else None,
                             currency=currency.lower() if isinstance(currency, str) else None,
                             paid_at=paid_at)

    def close(self, payment_id: str) -> ChannelStatus:
        """Close the trade if nobody paid it; then say what it is now (a paid trade stays paid)."""
        self._call("POST", f"/v3/pay/transactions/out-trade-no/{quote(payment_id, safe='')}/close",
                   payload={"mchid": self._config.mch_id})
        # Success is 204; a refusal (already paid, no such trade) is read from the query that follows.
        return self.query(payment_id)

    # -- notifications -----------------------------------------------------------------------------

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> Notification:
        """Verify a callback (signature, serial, freshness, AES-GCM, merchant and app) and read it; else
        NotificationRejected. Amounts are reported as sent; comparing them with ours is the caller's job."""
        try:
            check_signed(headers, body, self._public_keys, now=self._clock())
        except WireError as exc:
            raise NotificationRejected(f"wechat callback refused: {exc.message}") from None
        envelope = self._json_object(body, "the body")
        resource = envelope.get("resource")
        if envelope.get("resource_type") != "encrypt-resource" or not isinstance(resource, dict):
            raise self._malformed("no encrypt-resource")
        if resource.get("algorithm") != AES_ALGORITHM:
            raise self._malformed(f"unsupported algorithm {str(resource.get('algorithm'))[:40]!r}")
        ciphertext, nonce = _text(resource, "ciphertext"), _text(resource, "nonce")
        associated_data = resource.get("associated_data") or ""
        if ciphertext is None or nonce is None or not isinstance(associated_data, str):
            raise self._malformed("resource lacks ciphertext or nonce")
        try:
            plaintext = decrypt_resource(self._config.apiv3_key, ciphertext, associated_data=associated_data,
                                         nonce=nonce)
        except WireError as exc:
            raise NotificationRejected(f"wechat callback refused: {exc.message}") from None
        data = self._json_object(plaintext, "the decrypted resource")
        event_id, event_type = _text(envelope, "id"), str(envelope.get("event_type") or "")
        if event_id is None:
            raise self._malformed("`id` is missing")
        if data.get("mchid") != self._config.mch_id:
            raise NotificationRejected("wechat callback refused: mchid in the resource is not ours")
        if event_type.startswith("TRANSACTION."):
            return self._payment_notification(event_id, data)
        if event_type.startswith("REFUND."):
            return self._refund_notification(event_id, event_type, data)
        raise self._malformed(f"unknown event_type {event_type[:40]!r}")

    def _payment_notification(self, event_id: str, data: dict) -> Notification:
        if data.get("appid") != self._config.app_id:
            raise NotificationRejected("wechat callback refused: appid in the resource is not ours")
        state = str(data.get("trade_state"))
        status = NOTIFIED_TRADE_STATES.get(state)
        if status is None:
            raise self._malformed(f"unknown trade_state {state[:40]!r}")
        amount = _mapping(data, "amount")
        out_trade_no, transaction_id = _text(data, "out_trade_no"), _text(data, "transaction_id")
        currency = _text(amount, "currency")
        if out_trade_no is None or currency is None or (status == "succeeded" and transaction_id is None):
            raise self._malformed("out_trade_no, transaction_id or amount.currency is missing")
        if not _is_fen(amount.get("total")):
            raise self._malformed("amount.total must be a positive integer of fen")
        try:
            occurred_at = parse_time(data["success_time"]) if data.get("success_time") else None
        except (TypeError, ValueError):
            raise self._malformed("success_time is not an RFC 3339 time") from None
        details = {"mchid": data["mchid"], "appid": data["appid"], "channel_status": state,
                   "trade_type": data.get("trade_type")}
        if status == "failed":
            reported = data.get("trade_state_desc") or f"WeChat Pay reports the trade {state}."
            details.update(code=f"wechat_{state.lower()}", message=str(reported))
        return Notification(kind="payment", payment_id=out_trade_no, status=status, amount=amount["total"],
                            currency=currency.lower(), channel_trade_no=transaction_id, event_id=event_id,
                            occurred_at=occurred_at, details=details)

    def _refund_notification(self, event_id: str, event_type: str, data: dict) -> Notification:
        refund_status = str(data.get("refund_status"))
        status = NOTIFIED_REFUND_STATUSES.get(refund_status)
        if status is None or event_type != f"REFUND.{refund_status}":
            raise self._malformed(f"{event_type[:40]} with refund_status {refund_status[:40]!r}")
        amount = _mapping(data, "amount")
        names = ("out_trade_no", "out_refund_no", "refund_id")
        if any(_text(data, name) is None for name in names):
            raise self._malformed("out_trade_no, out_refund_no or refund_id is missing")
        if not _is_fen(amount.get("refund")):
            raise self._malformed("amount.refund must be a positive integer of fen")
        try:
            occurred_at = parse_time(data["success_time"]) if data.get("success_time") else None
        except (TypeError, ValueError):
            raise self._malformed("success_time is not an RFC 3339 time") from None
        details = {"mchid": data["mchid"], "channel_status": refund_status, "refund_no": data["refund_id"]}
        if status == "failed":
            details["code"] = f"refund_{refund_status.lower()}"
        # A refund callback states no currency: WeChat Pay refunds only CNY.
        currency = _text(amount, "currency") or "CNY"
        return Notification(kind="refund", payment_id=data["out_trade_no"], status=status,
                            amount=amount["refund"], currency=currency.lower(),
                            channel_trade_no=_text(data, "transaction_id"),
                            refund_id=data["out_refund_no"], event_id=event_id, occurred_at=occurred_at,
                            details=details)

    def acknowledge(self, ok: bool, message: str = "") -> Acknowledgement:
        # WeChat Pay resends until it gets a 2xx; any other answer carries {"code": "FAIL", ...}.
        if ok:
            return Acknowledgement(204, "")
        body = json.dumps({"code": "FAIL", "message": (message or "rejected")[:256]}, ensure_ascii=False)
        return Acknowledgement(400, body, "application/json")

    @staticmethod
    def _malformed(why: str) -> NotificationRejected:
        return NotificationRejected(f"wechat callback refused: malformed, {why}")

    @classmethod
    def _json_object(cls, raw: bytes, what: str) -> dict:
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            raise cls._malformed(f"{what} is not JSON") from None
        if not isinstance(data, dict):
            raise cls._malformed(f"{what} is not a JSON object")
        return data

    # -- refunds -----------------------------------------------------------------------------------

    def refund(self, request: RefundRequest) -> ChannelRefund:
        """Ask for a refund; `out_refund_no` is our refund id, so sending it again never refunds twice."""
        check_amount(request.amount)
        amount = {"refund": request.amount, "total": request.payment_amount, "currency": "CNY"}
        payload: dict = {"out_trade_no": request.payment_id, "out_refund_no": request.refund_id,
                         "notify_url": request.notify_url, "amount": amount}
        if request.reason:
            payload["reason"] = request.reason[:80]
        return self._refund_result(self._call("POST", "/v3/refund/domestic/refunds", payload=payload))

    def query_refund(self, request: RefundRequest) -> ChannelRefund:
        answer = self._call("GET", f"/v3/refund/domestic/refunds/{quote(request.refund_id, safe='')}")
        if answer.status == 404:
            # Never reached WeChat Pay (or not yet): not a failure, since asking again is safe.
            return ChannelRefund("pending", failure_code="refund_not_found")
        return self._refund_result(answer)

    def _refund_result(self, answer: WireAnswer) -> ChannelRefund:
        if not answer.ok:
            error = self._refusal(answer)
            if isinstance(error, ChannelUnavailable):
                raise error
            return ChannelRefund("failed", failure_code=error.code)  # WeChat Pay refused: a result
        data = self._object(answer)
        state = str(data.get("status"))
        status = REFUND_STATUSES.get(state)
        if status is None:
            raise ChannelUnavailable(f"WeChat Pay answered an unknown refund status {state[:40]!r}.")
        return ChannelRefund(status, channel_refund_no=_text(data, "refund_id"),
                             failure_code=f"refund_{state.lower()}" if status == "failed" else None)

    # -- bills -------------------------------------------------------------------------------------

    def fetch_bill(self, day: str) -> bytes:
        """The trade bill (all trades) of one Beijing day, YYYY-MM-DD, checked against its SHA1."""
        try:
            date.fromisoformat(day)
        except (TypeError, ValueError):
            raise InvalidRequest("day must look like YYYY-MM-DD.", code="invalid_date", param="date") \
                from None
        query = {"bill_date": day, "bill_type": "ALL"}
        data = self._expect(self._call("GET", "/v3/bill/tradebill", query=query))
        url, hash_type, hash_value = (_text(data, k) for k in ("download_url", "hash_type", "hash_value"))
        if url is None or hash_value is None or (hash_type or "SHA1").upper() != "SHA1":
            raise ChannelUnavailable("WeChat Pay answered a bill without download_url or a SHA1 hash.")
        target = urlsplit(url)
        # Only to WeChat Pay itself: a download_url elsewhere must not receive our signed Authorization.
        if (target.scheme, target.netloc) != self._origin and not (
                target.scheme == "https" and (target.hostname or "").endswith(".mch.weixin.qq.com")):
            raise ChannelUnavailable("WeChat Pay answered a download_url outside its own domain.")
        path = target.path + (f"?{target.query}" if target.query else "")
        # The file itself is not signed; its SHA1, from the signed answer above, vouches for it.
        download = self._send("GET", f"{target.scheme}://{target.netloc}", path, b"", verify_answer=False)
        if not download.ok:
            raise self._refusal(download)
        if not hmac.compare_digest(hashlib.sha1(download.body, usedforsecurity=False).hexdigest(), hash_value.lower()):
            raise ChannelUnavailable("The downloaded WeChat Pay bill does not match its SHA1; try again.")
        return download.body

    def parse_bill(self, data: bytes) -> list[BillLine]:
        """WeChat Pay's trade bill: a header, detail lines whose every field starts with a backtick, then
        a summary (总交易单数, ...) whose count must agree. SUCCESS rows are payments, REFUND rows refunds."""
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidRequest("The WeChat Pay bill is not UTF-8.", code="invalid_bill") from None
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines:
            raise InvalidRequest("The WeChat Pay bill is empty.", code="invalid_bill")
        header = [name.strip() for name in lines[0].split(",")]
        missing = set(BILL_COLUMNS) - set(header)
        if missing:
            raise InvalidRequest(f"The WeChat Pay bill lacks the columns {', '.join(sorted(missing))}.",
                                 code="invalid_bill")
        result: list[BillLine] = []
        for number, line in enumerate(lines[1:], start=2):
            if line.startswith(BILL_SUMMARY_HEAD):
                self._check_summary(lines[number - 1:], count=number - 2)
                return result
            row = dict(zip(header, self._bill_cells(line, number, len(header)), strict=True))
            bill_line = self._bill_line(row, number)
            if bill_line is not None:
                result.append(bill_line)
        raise InvalidRequest("The WeChat Pay bill has no summary (总交易单数): it may be cut short.",
                             code="invalid_bill")

    @staticmethod
    def _bill_cells(line: str, number: int, width: int) -> list[str]:
        # Split on ",`" rather than with a CSV reader: a product name may itself hold commas.
        cells = line[1:].split(",`") if line.startswith("`") else []
        if len(cells) != width:
            raise InvalidRequest(
                f"Line {number} of the WeChat Pay bill does not have {width} `-prefixed fields.",
                code="invalid_bill")
        return [cell.strip() for cell in cells]

    @staticmethod
    def _check_summary(block: list[str], *, count: int) -> None:
        if len(block) < 2:
            raise InvalidRequest("The WeChat Pay bill's summary has no totals line.", code="invalid_bill")
        names = [name.strip() for name in block[0].split(",")]
        values = [value.strip().lstrip("`") for value in block[1].split(",")]
        totals = dict(zip(names, values, strict=False))
        stated = totals.get(BILL_SUMMARY_HEAD, "")
        if not stated.isdigit() or int(stated) != count:
            raise InvalidRequest(f"The WeChat Pay bill states {stated or 'no'} trades but lists {count}.",
                                 code="invalid_bill")

    def _bill_line(self, row: dict[str, str], number: int) -> BillLine | None:
        state = row["交易状态"]
        if state not in ("SUCCESS", "REFUND"):
            return None  # REVOKED and the like moved no money
        currency = row["货币种类"].lower() or "cny"
        try:
            occurred_at = datetime.strptime(row["交易时间"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING)
            fee = self._fee_fen(row["手续费"])
            if state == "SUCCESS":
                # 订单金额 is what we asked for (amount.total); 应结订单金额 omits WeChat-funded coupons.
                amount = parse_major(row.get("订单金额") or row["应结订单金额"], currency)
            else:
                amount = parse_major(row.get("申请退款金额") or row["退款金额"], currency)
        except (ValueError, KnowPayError):
            raise InvalidRequest(f"Line {number} of the WeChat Pay bill cannot be read.",
                                 code="invalid_bill") from None
        when = occurred_at.astimezone(UTC).replace(tzinfo=None)
        if state == "SUCCESS":
            return BillLine(kind="payment", payment_id=row["商户订单号"], channel_trade_no=row["微信订单号"] or None,
                            amount=amount, currency=currency, status="succeeded", occurred_at=when, fee=fee)
        status = BILL_REFUND_STATUSES.get(row["退款状态"], "failed")
        return BillLine(kind="refund", payment_id=row["商户订单号"], channel_trade_no=row["微信订单号"] or None,
                        amount=amount, currency=currency, status=status, occurred_at=when,
                        refund_id=row["商户退款单号"] or None, fee=fee)

    @staticmethod
    def _fee_fen(text: str) -> int:
        """`0.59400` yuan (5 places; negative on refund rows) → fen, half up, as a positive amount."""
        if not _FEE.match(text):
            raise ValueError(text)
        return int((abs(Decimal(text)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))

    # -- calls -------------------------------------------------------------------------------------

    @property
    def _origin(self) -> tuple[str, str]:
        parts = urlsplit(self._config.gateway)
        return parts.scheme, parts.netloc

    def _call(self, method: str, path: str, *, query: Mapping[str, str] | None = None,
              payload: object = None) -> WireAnswer:
        url = path + (f"?{urlencode(query)}" if query else "")
        body = encode_json(payload) if payload is not None else b""
        answer = self._send(method, self._config.gateway, url, body)
        if not answer.ok:
            error = self._refusal(answer)
            if isinstance(error, ChannelUnavailable):  # our settings, or WeChat Pay busy: never a result
                raise error
        return answer

    def _send(self, method: str, base: str, url: str, body: bytes, *,
              verify_answer: bool = True) -> WireAnswer:
        """Sign and send one request (`url` is the path with query); check the answer's signature."""
        timestamp, nonce = str(int(self._clock())), new_nonce()
        headers = {
            "Authorization": authorization(mch_id=self._config.mch_id, serial_no=self._config.cert_serial,
                                           key=self._config.private_key, method=method, url=url, body=body,
                                           timestamp=timestamp, nonce=nonce),
            "Accept": "application/json", "User-Agent": "KnowPay (WeChat Pay API v3)",
            "Wechatpay-Serial": self._config.public_key_id}
        if body:
            headers["Content-Type"] = "application/json"
        answer = self._transport(method, base + url, headers, body)
        if answer.status >= 500 or answer.status == 429:
            raise ChannelUnavailable(f"WeChat Pay answered HTTP {answer.status}; try again later.")
        # Every 2xx must be signed; a refusal is checked too when it carries a signature.
        if verify_answer and (answer.ok or "wechatpay-signature" in answer.headers):
            try:
                check_signed(answer.headers, answer.body, self._public_keys, now=self._clock())
            except WireError as exc:
                raise ChannelUnavailable(f"WeChat Pay's answer failed verification: {exc.message}.") from None
        return answer

    def _expect(self, answer: WireAnswer) -> dict:
        """The JSON object of a 2xx answer; a refusal raised as the error the caller reacts to."""
        if not answer.ok:
            raise self._refusal(answer)
        return self._object(answer)

    @staticmethod
    def _object(answer: WireAnswer) -> dict:
        try:
            data = json.loads(answer.body)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            raise ChannelUnavailable(
                f"WeChat Pay answered HTTP {answer.status} with a body that is not JSON.") from None
        if not isinstance(data, dict):
            raise ChannelUnavailable("WeChat Pay answered something other than a JSON object.")
        return data

    @staticmethod
    def _refusal(answer: WireAnswer) -> KnowPayError:
        """A 4xx from WeChat Pay, as the error the caller would react to."""
        try:
            data = json.loads(answer.body)
        except (ValueError, RecursionError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        code = str(data.get("code") or f"HTTP_{answer.status}")[:64]
        message = f"WeChat Pay refused: {str(data.get('message') or f'HTTP {answer.status}')[:200]} ({code})."
        ours = code.lower()
        if answer.status == 401 or code in MISCONFIGURED:
            return ChannelUnavailable(message + " Check the KNOWPAY_WECHAT_* settings.")
        if code in RETRY_LATER:
            return ChannelUnavailable(message)
        if answer.status == 404:
            return NotFound(message, code=ours)
        if code in CONFLICTS:
            return Conflict(message, code=ours)
        return InvalidRequest(message, code=ours)
