"""The `alipay` channel: Alipay's open platform (public-key mode, RSA2) for QR, page and wap payments.

Requests are form-encoded and signed SHA256withRSA with our app private key; every answer and every
notification is verified with Alipay's public key before it is believed. Amounts on the wire are yuan
strings ("99.00") and times are Beijing time. Alipay's statuses are mapped to ours here, in one place.
The wire functions (signing, verifying, times, bill columns) are shared with the sandbox's imitation.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import logging
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit
from zoneinfo import ZoneInfo

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

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
from knowpay.channels.http import DEFAULT_TIMEOUT, HttpAnswer, OutgoingRequest, SignedHttp
from knowpay.config import ConfigError, Settings
from knowpay.domain.errors import ChannelUnavailable, InvalidRequest, NotFound
from knowpay.domain.money import check_amount, format_major, parse_major

log = logging.getLogger(__name__)

# Every time on Alipay's wire — request timestamps, time_expire, gmt_payment, bill rows — is Beijing time.
ALIPAY_TZ = ZoneInfo("Asia/Shanghai")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
CURRENCY = "cny"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded;charset=utf-8"
SUCCESS_CODE = "10000"
DEFAULT_FEE_BPS = 60
INSTALLMENTS = (3, 6, 12)
HB_SELLER_PERCENTS = ("0", "100")  # who pays the Huabei installment fee: 0 the buyer, 100 the seller
MAX_YUAN_AMOUNT = 100_000_000_00  # Alipay's ceiling for total_amount, 100 000 000.00 yuan, in fen

QR_METHOD = "alipay.trade.precreate"
REDIRECT_METHODS = {"page": "alipay.trade.page.pay", "wap": "alipay.trade.wap.pay"}
PRODUCT_CODES = {QR_METHOD: "FACE_TO_FACE_PAYMENT", "alipay.trade.page.pay": "FAST_INSTANT_TRADE_PAY",
                 "alipay.trade.wap.pay": "QUICK_WAP_WAY"}

# Alipay's trade statuses → ours: for a query/close answer, and for an asynchronous notification.
QUERIED_STATUSES = {"WAIT_BUYER_PAY": "pending", "TRADE_SUCCESS": "succeeded", "TRADE_FINISHED": "succeeded",
                    "TRADE_CLOSED": "closed"}
NOTIFIED_STATUSES = {"WAIT_BUYER_PAY": "pending", "TRADE_SUCCESS": "succeeded", "TRADE_FINISHED": "succeeded",
                     "TRADE_CLOSED": "failed"}
REFUND_SUCCESS = "REFUND_SUCCESS"
# Refusals that say "not now" rather than "no": the same call may succeed later.
RETRYABLE_SUB_CODES = {"ACQ.SYSTEM_ERROR", "ACQ.SELLER_BALANCE_NOT_ENOUGH", "aop.ACQ.SYSTEM_ERROR",
                       "isp.unknow-error", "isp.unknown-error"}
RETRYABLE_CODES = {"20000"}
REFUND_FAILURES = {"ACQ.REFUND_AMT_NOT_EQUAL_TOTAL": "refund_exceeds_payment",
                   "ACQ.TRADE_NOT_EXIST": "trade_not_found",
                   "ACQ.TRADE_STATUS_ERROR": "trade_not_refundable",
                   "ACQ.TRADE_HAS_FINISHED": "trade_not_refundable",
                   "ACQ.TRADE_HAS_CLOSE": "trade_not_refundable",
                   "ACQ.TRADE_NOT_ALLOW_REFUND": "trade_not_refundable",
                   "ACQ.CONTEXT_INCONSISTENT": "refund_request_conflict"}
CONFIG_HINTS = {"isv.invalid-signature": "check KNOWPAY_ALIPAY_PRIVATE_KEY (Alipay must hold its public key)",
                "isv.invalid-app-id": "check KNOWPAY_ALIPAY_APP_ID",
                "isv.invalid-signature-type": "the app must be set up for RSA2"}

# The trade bill (bill_type "trade"): a zip holding a GBK CSV "<account>_<yyyymmdd>_业务明细.csv".
BILL_COLUMNS = ("支付宝交易号", "商户订单号", "业务类型", "商品名称", "创建时间", "完成时间", "门店编号", "门店名称",
                "操作员", "终端号", "对方账户", "订单金额（元）", "商家实收（元）", "支付宝红包（元）", "集分宝（元）",
                "支付宝优惠（元）", "商家优惠（元）", "券核销金额（元）", "券名称", "商家红包消费金额（元）",
                "卡消费金额（元）", "退款批次号/请求号", "服务费（元）", "分润（元）", "备注")
BILL_KINDS = {"交易": "payment", "退款": "refund"}
BILL_REQUIRED = ("支付宝交易号", "商户订单号", "业务类型", "完成时间", "订单金额（元）", "退款批次号/请求号", "服务费（元）")
MAX_BILL_MEMBER = 64 * 1024 * 1024
MAX_NOTIFICATION_FIELDS = 200


# -- the wire: keys, signatures, times, amounts ----------------------------------------------------------

def _key_bytes(value: str, variable: str) -> tuple[bytes, bool]:
    """The key material named by a setting → (bytes, is_pem): PEM text, a PEM file's path, or bare base64."""
    text = value.strip()
    if text.startswith("-----BEGIN"):
        return text.encode("ascii", "replace"), True
    try:
        path = Path(text).expanduser()
        is_file = "\n" not in text and path.is_file()
    except (OSError, ValueError):  # a long base64 string is not a usable file name
        is_file = False
    if is_file:
        try:
            return path.read_bytes(), True
        except OSError as exc:
            raise ConfigError(f"{variable}: cannot read the key file {path}: {exc.strerror}") from None
    # Alipay's key tool prints keys as bare base64 of the DER bytes, without PEM armour.
    try:
        return base64.b64decode("".join(text.split()), validate=True), False
    except (binascii.Error, ValueError):
        pass
    if "/" in text or text.endswith(".pem"):
        raise ConfigError(f"{variable}: no key file at {text}")
    raise ConfigError(f"{variable} is neither PEM text, the path of a PEM file, nor base64 of a DER key")


def load_private_key(value: str, variable: str) -> rsa.RSAPrivateKey:
    """An RSA private key (2048 bits or more, as RSA2 needs) from a setting; ConfigError says why not."""
    data, is_pem = _key_bytes(value, variable)
    try:
        key = (serialization.load_pem_private_key(data, password=None) if is_pem
               else serialization.load_der_private_key(data, password=None))
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        reason = "it is encrypted" if isinstance(exc, TypeError) else "it does not parse"
        raise ConfigError(f"{variable} is not a readable unencrypted private key ({reason})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"{variable} must be an RSA private key")
    if key.key_size < 2048:
        raise ConfigError(f"{variable} has {key.key_size} bits; RSA2 needs 2048 or more")
    return key


def load_public_key(value: str, variable: str) -> rsa.RSAPublicKey:
    """An RSA public key from a setting (PEM text, PEM file path, or base64 DER); ConfigError says why not."""
    data, is_pem = _key_bytes(value, variable)
    try:
        key = serialization.load_pem_public_key(data) if is_pem else serialization.load_der_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{variable} is not a readable public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigError(f"{variable} must be an RSA public key")
    return key


def request_content(params: Mapping[str, str]) -> str:
    """What a request's `sign` signs: every parameter but `sign` and the empty ones, sorted, `k=v` joined by `&`,
    with the raw (not URL-encoded) values. `sign_type` is included."""
    return "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "sign" and v != "")


def notification_content(params: Mapping[str, str]) -> str:
    """What a notification's `sign` signs: every field but `sign` and `sign_type`, sorted, `k=v` joined by `&`,
    with the decoded values."""
    return "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in ("sign", "sign_type"))


def rsa2_sign(key: rsa.RSAPrivateKey, content: str) -> str:
    """SHA256withRSA (PKCS#1 v1.5) over the UTF-8 bytes, base64 on one line."""
    return base64.b64encode(key.sign(content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())).decode("ascii")


def rsa2_verify(key: rsa.RSAPublicKey, content: str, signature: str) -> bool:
    try:
        raw = base64.b64decode("".join(signature.split()), validate=True)
        key.verify(raw, content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def response_key(method: str) -> str:
    """alipay.trade.query → alipay_trade_query_response: where the answer sits in the JSON."""
    return method.replace(".", "_") + "_response"


_JSON_SPACE = " \t\n\r"


def response_members(text: str) -> dict[str, tuple[object, str]]:
    """The top-level members of an answer → (value, its exact text). Alipay signs the `*_response` member
    as the very characters it sent, so it is cut out of the body rather than re-serialised. Raises ValueError."""
    decoder = json.JSONDecoder()

    def skip(i: int) -> int:
        while i < len(text) and text[i] in _JSON_SPACE:
            i += 1
        return i

    members: dict[str, tuple[object, str]] = {}
    i = skip(0)
    if text[i:i + 1] != "{":
        raise ValueError("not a JSON object")
    i = skip(i + 1)
    if text[i:i + 1] == "}":
        return members
    while True:
        if text[i:i + 1] != '"':
            raise ValueError("expected a member name")
        name, i = decoder.raw_decode(text, i)
        i = skip(i)
        if text[i:i + 1] != ":":
            raise ValueError("expected ':'")
        start = skip(i + 1)
        value, i = decoder.raw_decode(text, start)
        if name in members:
            raise ValueError(f"member {name!r} appears twice")
        members[name] = (value, text[start:i])
        i = skip(i)
        if text[i:i + 1] == ",":
            i = skip(i + 1)
            continue
        if text[i:i + 1] == "}" and not text[skip(i + 1):]:
            return members
        raise ValueError("expected ',' or '}'")


def to_wire_time(moment: datetime) -> str:
    """Our time (naive UTC, or aware) → Alipay's `yyyy-MM-dd HH:mm:ss` in Beijing time."""
    aware = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    return aware.astimezone(ALIPAY_TZ).strftime(TIME_FORMAT)


def from_wire_time(text: str) -> datetime:
    """Alipay's Beijing `yyyy-MM-dd HH:mm:ss[.S]` → naive UTC, as KnowPay stores times. Raises ValueError."""
    main, _, fraction = text.strip().partition(".")
    if fraction and not (fraction.isascii() and fraction.isdigit()):
        raise ValueError(f"bad fraction in {text!r}")
    local = datetime.strptime(main, TIME_FORMAT).replace(tzinfo=ALIPAY_TZ)
    return local.astimezone(UTC).replace(tzinfo=None)


def to_yuan(amount: int) -> str:
    """9900 fen → "99.00"."""
    return format_major(amount, CURRENCY)


def from_yuan(text: object) -> int:
    """"99.00" → 9900 fen, exactly; refuses "99.001", floats, signs and nonsense with InvalidRequest."""
    if not isinstance(text, str) or not text or text.strip() != text or text.startswith(("-", "+")):
        raise InvalidRequest(f"{text!r} is not an amount in yuan.", code="invalid_amount", param="amount")
    return parse_major(text, CURRENCY)


# -- configuration -----------------------------------------------------------------------------------

REQUIRED_SETTINGS = ("alipay_app_id", "alipay_seller_id", "alipay_private_key", "alipay_public_key",
                     "alipay_gateway")


def _env_name(key: str) -> str:
    return "KNOWPAY_" + key.upper()


@dataclass(frozen=True)
class AlipayConfig:
    """The `KNOWPAY_ALIPAY_*` variables, read and checked once."""

    app_id: str
    seller_id: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    alipay_public_key: rsa.RSAPublicKey = field(repr=False)
    gateway: str
    fee_bps: int = DEFAULT_FEE_BPS
    hb_seller_percent: str = "0"

    @classmethod
    def from_settings(cls, settings: Settings) -> AlipayConfig | None:
        """None when a required variable is missing (the channel is off); ConfigError when one is wrong."""
        env = settings.channel
        missing = [_env_name(k) for k in REQUIRED_SETTINGS if not env.get(k, "").strip()]
        if missing:
            if len(missing) < len(REQUIRED_SETTINGS):
                log.warning("Alipay is off: %s not set", ", ".join(missing))
            return None
        gateway = env["alipay_gateway"].strip()
        parts = urlsplit(gateway)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("KNOWPAY_ALIPAY_GATEWAY must be a full URL like https://openapi.alipay.com/gateway.do")
        if settings.is_production and parts.scheme != "https":
            raise ConfigError("KNOWPAY_ALIPAY_GATEWAY must use https in production")
        raw_fee = env.get("alipay_fee_bps") or str(DEFAULT_FEE_BPS)
        if not (raw_fee.isascii() and raw_fee.isdigit()) or int(raw_fee) > 10_000:
            raise ConfigError(f"KNOWPAY_ALIPAY_FEE_BPS must be a whole number from 0 to 10000, got {raw_fee!r}")
        percent = env.get("alipay_hb_seller_percent") or "0"
        if percent not in HB_SELLER_PERCENTS:
            raise ConfigError(f"KNOWPAY_ALIPAY_HB_SELLER_PERCENT must be 0 (the buyer pays the Huabei fee) "
                              f"or 100 (we pay it), got {percent!r}")
        return cls(app_id=env["alipay_app_id"].strip(), seller_id=env["alipay_seller_id"].strip(),
                   private_key=load_private_key(env["alipay_private_key"], "KNOWPAY_ALIPAY_PRIVATE_KEY"),
                   alipay_public_key=load_public_key(env["alipay_public_key"], "KNOWPAY_ALIPAY_PUBLIC_KEY"),
                   gateway=gateway, fee_bps=int(raw_fee), hb_seller_percent=percent)


def from_settings(settings: Settings) -> AlipayChannel | None:
    config = AlipayConfig.from_settings(settings)
    return None if config is None else AlipayChannel(config)


# -- transport ---------------------------------------------------------------------------------------

class AlipayTransport(Protocol):
    """How the channel reaches Alipay: signed forms to the gateway, and bill downloads."""

    def post_form(self, body: bytes) -> HttpAnswer: ...

    def download(self, url: str) -> HttpAnswer: ...


def _no_headers(_outgoing: OutgoingRequest) -> dict[str, str]:
    return {}  # Alipay's signature travels inside the form, not in headers


def _is_local(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


class AlipayHttp:
    """The real transport: pooled `requests` with timeouts; no answer, a 5xx or 429 raise ChannelUnavailable."""

    def __init__(self, gateway: str, *, timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> None:
        self._timeout = timeout
        # A gateway on this machine (the sandbox) is reached directly, never through an environment proxy.
        self._gateway = SignedHttp(gateway, channel="Alipay", sign=_no_headers, timeout=timeout,
                                   trust_env=not _is_local(gateway))

    def post_form(self, body: bytes) -> HttpAnswer:
        return self._gateway.send(OutgoingRequest("POST", "", "", body), content_type=FORM_CONTENT_TYPE)

    def download(self, url: str) -> HttpAnswer:
        http = SignedHttp(url, channel="Alipay's bill download", sign=_no_headers, timeout=self._timeout,
                          trust_env=not _is_local(url))
        try:
            return http.send(OutgoingRequest("GET", "", "", b""))
        finally:
            http.close()


# -- the channel -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AlipayAnswer:
    """One verified answer: Alipay's code (10000 is success), its sub-code, and the rest of the content."""

    method: str
    code: str
    msg: str
    sub_code: str
    sub_msg: str
    data: dict

    @property
    def ok(self) -> bool:
        return self.code == SUCCESS_CODE

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES or self.sub_code in RETRYABLE_SUB_CODES

    def describe(self) -> str:
        return " ".join(filter(None, (self.code, self.sub_code, self.sub_msg or self.msg)))


class AlipayChannel:
    """Talks to Alipay's gateway (`config.gateway`) as app `config.app_id` of seller `config.seller_id`."""

    name = "alipay"

    def __init__(self, config: AlipayConfig, *, http: AlipayTransport | None = None,
                 clock: Callable[[], float] = time.time, timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> None:
        self.fee_bps = config.fee_bps
        self._config = config
        self._clock = clock
        self._http = http or AlipayHttp(config.gateway, timeout=timeout)

    # -- payments ----------------------------------------------------------------------------------

    def create(self, request: PaymentRequest) -> Created:
        check_amount(request.amount)
        if request.currency != CURRENCY:
            raise InvalidRequest("Alipay takes payments in cny only.", code="invalid_currency", param="currency")
        method = request.method or "qr"
        if method != "qr" and method not in REDIRECT_METHODS:
            raise InvalidRequest("method for alipay must be qr, page or wap.", code="invalid_method",
                                 param="method")
        if request.installments is not None and request.installments not in INSTALLMENTS:
            raise InvalidRequest("installments must be 3, 6 or 12.", code="invalid_installments",
                                 param="installments")
        api = QR_METHOD if method == "qr" else REDIRECT_METHODS[method]
        biz: dict = {"out_trade_no": request.payment_id, "total_amount": to_yuan(request.amount),
                     "subject": (request.subject or request.payment_id)[:256], "product_code": PRODUCT_CODES[api],
                     "time_expire": to_wire_time(request.expires_at)}
        if request.installments is not None:
            biz["extend_params"] = {"hb_fq_num": str(request.installments),
                                    "hb_fq_seller_percent": self._config.hb_seller_percent}
        if api == QR_METHOD:
            answer = self._call(api, biz, notify_url=request.notify_url)
            if not answer.ok:
                raise self._unavailable(answer)
            qr_code = answer.data.get("qr_code")
            if not isinstance(qr_code, str) or not qr_code or answer.data.get("out_trade_no") != request.payment_id:
                raise ChannelUnavailable("Alipay answered precreate without a qr_code for this out_trade_no.")
            return Created(Action("qr_code", {"code_url": qr_code}), extra={"method": api})
        # Page and wap payments are not called but visited: the buyer's browser carries the signed request.
        params = self._signed(api, biz, notify_url=request.notify_url, return_url=request.return_url)
        joiner = "&" if "?" in self._config.gateway else "?"
        return Created(Action("redirect", {"url": self._config.gateway + joiner + urlencode(params)}),
                       extra={"method": api})

    def query(self, payment_id: str) -> ChannelStatus:
        answer = self._call("alipay.trade.query", {"out_trade_no": payment_id})
        if answer.ok:
            return self._trade_status(answer.data)
        if answer.sub_code == "ACQ.TRADE_NOT_EXIST":
            # A precreated QR code becomes a trade only when scanned: not found is "nobody paid yet".
            return ChannelStatus("not_found")
        raise self._unavailable(answer)

    def close(self, payment_id: str) -> ChannelStatus:
        """Close the trade if nobody paid it; the answer says what it is now (a paid trade stays paid)."""
        answer = self._call("alipay.trade.close", {"out_trade_no": payment_id})
        if answer.ok:
            return ChannelStatus("closed", channel_trade_no=answer.data.get("trade_no") or None)
        if answer.sub_code == "ACQ.TRADE_NOT_EXIST":
            return ChannelStatus("not_found")
        if answer.retryable:
            raise self._unavailable(answer)
        # Refused because the trade no longer waits for the buyer — most often, it was just paid.
        return self.query(payment_id)

    def _trade_status(self, data: dict) -> ChannelStatus:
        status = QUERIED_STATUSES.get(str(data.get("trade_status")))
        if status is None:
            raise ChannelUnavailable(f"Alipay answered an unknown trade_status {data.get('trade_status')!r}.")
        try:
            amount = from_yuan(data["total_amount"]) if data.get("total_amount") is not None else None
            paid_at = (from_wire_time(data["send_pay_date"])
                       if status == "succeeded" and data.get("send_pay_date") else None)
        except (InvalidRequest, ValueError, TypeError):
            raise ChannelUnavailable("Alipay answered an unreadable total_amount or send_pay_date.") from None
        return ChannelStatus(status, channel_trade_no=data.get("trade_no") or None, amount=amount,
                             currency=CURRENCY, paid_at=paid_at)

    # -- notifications -----------------------------------------------------------------------------

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> Notification:
        """Verify an asynchronous notification (signature, app_id, seller_id) and read it; else NotificationRejected.

        Amounts are reported as sent; comparing them with our payment is the caller's job.
        """
        fields = _form_fields(body)
        sign, sign_type = fields.get("sign", ""), fields.get("sign_type", "")
        if not sign:
            raise NotificationRejected("alipay notification refused: no sign")
        if sign_type != "RSA2":
            raise NotificationRejected(f"alipay notification refused: sign_type {sign_type[:16]!r} is not RSA2")
        if not rsa2_verify(self._config.alipay_public_key, notification_content(fields), sign):
            raise NotificationRejected("alipay notification refused: the signature does not verify with "
                                       "Alipay's public key")
        if fields.get("app_id") != self._config.app_id:
            raise NotificationRejected(f"alipay notification refused: app_id {fields.get('app_id', '')[:32]!r} "
                                       "is not ours")
        if fields.get("seller_id") and fields["seller_id"] != self._config.seller_id:
            raise NotificationRejected(f"alipay notification refused: seller_id {fields['seller_id'][:32]!r} "
                                       "is not ours")
        if fields.get("notify_type", "trade_status_sync") != "trade_status_sync":
            raise NotificationRejected(f"alipay notification refused: notify_type {fields['notify_type'][:40]!r} "
                                       "is not trade_status_sync")
        for name in ("notify_id", "out_trade_no", "trade_no", "trade_status"):
            if not fields.get(name):
                raise NotificationRejected(f"alipay notification refused: `{name}` is missing")
        # A refund leaves the trade TRADE_SUCCESS (partial) or TRADE_CLOSED (full) and names our refund
        # in out_biz_no: read it as a refund, never as the payment failing.
        if fields.get("out_biz_no") and (fields.get("refund_fee") or fields.get("gmt_refund")):
            return self._refund_notification(fields)
        return self._payment_notification(fields)

    def _payment_notification(self, fields: dict[str, str]) -> Notification:
        status = NOTIFIED_STATUSES.get(fields["trade_status"])
        if status is None:
            raise NotificationRejected(f"alipay notification refused: unknown trade_status "
                                       f"{fields['trade_status'][:32]!r}")
        amount = _notified_amount(fields, "total_amount")
        moment_field = {"succeeded": "gmt_payment", "failed": "gmt_close"}.get(status)
        occurred_at = _notified_time(fields, moment_field) if moment_field else None
        details = {"app_id": fields["app_id"], "seller_id": fields.get("seller_id"),
                   "trade_status": fields["trade_status"], "buyer_id": fields.get("buyer_id")}
        if status == "failed":
            details.update(code="trade_closed", message="Alipay closed the trade unpaid.")
        return Notification(kind="payment", payment_id=fields["out_trade_no"], status=status, amount=amount,
                            currency=CURRENCY, channel_trade_no=fields["trade_no"], event_id=fields["notify_id"],
                            occurred_at=occurred_at, details={k: v for k, v in details.items() if v is not None})

    def _refund_notification(self, fields: dict[str, str]) -> Notification:
        out_trade_no, refund_id = fields["out_trade_no"], fields["out_biz_no"]
        refund_total = _notified_amount(fields, "refund_fee") if fields.get("refund_fee") else None
        # refund_fee is the trade's refunded total, not this refund's amount: Alipay's signed refund query
        # says what this refund (our out_request_no) was.
        try:
            record = self._refund_record(out_trade_no, refund_id)
        except ChannelUnavailable as exc:
            raise NotificationRejected(f"alipay refund notification not confirmed yet ({exc.message}); "
                                       "Alipay will send it again") from None
        if record is None:
            raise NotificationRejected(f"alipay refund notification refused: Alipay knows no refund "
                                       f"{refund_id[:64]!r} of {out_trade_no[:64]!r}")
        try:
            amount = from_yuan(record.get("refund_amount"))
        except InvalidRequest:
            raise NotificationRejected("alipay refund notification refused: unreadable refund_amount") from None
        details: dict = {"app_id": fields["app_id"], "trade_status": fields["trade_status"]}
        if refund_total is not None:
            details["refund_total"] = refund_total
        return Notification(kind="refund", payment_id=out_trade_no, status="succeeded", amount=amount,
                            currency=CURRENCY, channel_trade_no=fields["trade_no"], refund_id=refund_id,
                            event_id=fields["notify_id"], occurred_at=_notified_time(fields, "gmt_refund"),
                            details=details)

    def acknowledge(self, ok: bool, message: str = "") -> Acknowledgement:
        # Alipay stops resending only when it reads exactly `success`; anything else is retried for 25 hours.
        return Acknowledgement(200, "success" if ok else "failure", "text/plain")

    # -- refunds -----------------------------------------------------------------------------------

    def refund(self, request: RefundRequest) -> ChannelRefund:
        """Refund once per our refund id: it is Alipay's out_request_no, so a retry never refunds twice."""
        check_amount(request.amount)
        biz = {"out_trade_no": request.payment_id, "refund_amount": to_yuan(request.amount),
               "out_request_no": request.refund_id}
        if request.reason:
            biz["refund_reason"] = request.reason[:256]
        answer = self._call("alipay.trade.refund", biz)
        if answer.ok:
            if answer.data.get("fund_change") == "Y":
                return ChannelRefund("succeeded")
            # "N": this out_request_no was refunded before (we are retrying) or is still in progress.
            return self.query_refund(request)
        if answer.retryable:
            raise self._unavailable(answer)
        if answer.sub_code in REFUND_FAILURES or answer.code == "40004":
            return ChannelRefund("failed", failure_code=_failure_code(answer.sub_code))
        raise self._unavailable(answer)

    def query_refund(self, request: RefundRequest) -> ChannelRefund:
        record = self._refund_record(request.payment_id, request.refund_id)
        if record is None:
            # Never reached Alipay (or not yet): not a failure, since sending it again is safe.
            return ChannelRefund("pending", failure_code="refund_not_found")
        try:
            amount = from_yuan(record.get("refund_amount"))
        except InvalidRequest:
            raise ChannelUnavailable("Alipay answered an unreadable refund_amount.") from None
        if amount != request.amount:
            raise ChannelUnavailable(f"Alipay holds refund {request.refund_id} as {amount} fen, "
                                     f"not {request.amount}: reconcile by hand.")
        return ChannelRefund("succeeded")

    def _refund_record(self, out_trade_no: str, out_request_no: str) -> dict | None:
        """Alipay's record of one finished refund, or None when it has none (not received, or failed)."""
        answer = self._call("alipay.trade.fastpay.refund.query", {
            "out_trade_no": out_trade_no, "out_request_no": out_request_no, "query_options": ["gmt_refund_pay"]})
        if not answer.ok:
            if answer.sub_code == "ACQ.TRADE_NOT_EXIST":
                return None
            raise self._unavailable(answer)
        data = answer.data
        if not data.get("refund_amount") or data.get("out_request_no") not in (None, out_request_no):
            return None
        if data.get("refund_status") not in (None, "", REFUND_SUCCESS):
            return None
        return data

    # -- bills -------------------------------------------------------------------------------------

    def fetch_bill(self, day: str) -> bytes:
        """The zipped trade bill of one day (YYYY-MM-DD, Beijing time), as Alipay serves it."""
        try:
            date.fromisoformat(day)
        except (TypeError, ValueError):
            raise InvalidRequest("day must look like YYYY-MM-DD.", code="invalid_date", param="date") from None
        answer = self._call("alipay.data.dataservice.bill.downloadurl.query",
                            {"bill_type": "trade", "bill_date": day})
        if not answer.ok:
            if answer.sub_code == "isp.bill_not_exist":
                raise NotFound(f"Alipay has no bill for {day} (yet).", code="bill_not_found")
            raise self._unavailable(answer)
        url = answer.data.get("bill_download_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ChannelUnavailable("Alipay answered without a bill_download_url.")
        download = self._http.download(url)
        if not download.ok:
            raise ChannelUnavailable(f"Alipay's bill download answered HTTP {download.status}.")
        return download.body

    def parse_bill(self, data: bytes) -> list[BillLine]:
        """The 交易 and 退款 rows of Alipay's 业务明细 CSV (GBK, `#` comment lines) inside the zip."""
        rows = _bill_rows(data)
        header = [_column_name(cell) for cell in rows[0]]
        missing = [name for name in BILL_REQUIRED if name not in header]
        if missing:
            raise InvalidRequest(f"The Alipay bill lacks the columns {', '.join(missing)}.", code="invalid_bill")
        at = {name: header.index(name) for name in BILL_REQUIRED}
        lines = []
        for number, row in enumerate(rows[1:], start=2):
            cells = [cell.strip() for cell in row]
            if len(cells) < len(header):
                raise InvalidRequest(f"Row {number} of the Alipay bill is short.", code="invalid_bill")
            kind = BILL_KINDS.get(cells[at["业务类型"]])
            if kind is None:
                continue  # other business types (freezes, fees) are not our payments or refunds
            try:
                amount = abs(parse_major(cells[at["订单金额（元）"]], CURRENCY))
                fee_cell = cells[at["服务费（元）"]]
                fee = abs(parse_major(fee_cell, CURRENCY)) if fee_cell else 0
                finished = cells[at["完成时间"]]
                occurred_at = from_wire_time(finished) if finished else None
            except (InvalidRequest, ValueError):
                raise InvalidRequest(f"Row {number} of the Alipay bill has a bad amount or time.",
                                     code="invalid_bill") from None
            refund_id = cells[at["退款批次号/请求号"]] or None
            lines.append(BillLine(kind=kind, payment_id=cells[at["商户订单号"]],
                                  channel_trade_no=cells[at["支付宝交易号"]] or None, amount=amount,
                                  currency=CURRENCY, status="succeeded", occurred_at=occurred_at,
                                  refund_id=refund_id if kind == "refund" else None, fee=fee))
        return lines

    # -- calling the gateway -----------------------------------------------------------------------

    def _signed(self, method: str, biz: dict, **common: str) -> dict[str, str]:
        """The full parameter set of one call, signed with our app private key."""
        params = {"app_id": self._config.app_id, "method": method, "format": "JSON", "charset": "utf-8",
                  "sign_type": "RSA2", "version": "1.0",
                  "timestamp": datetime.fromtimestamp(self._clock(), ALIPAY_TZ).strftime(TIME_FORMAT),
                  "biz_content": json.dumps(biz, ensure_ascii=False, separators=(",", ":")),
                  **{k: v for k, v in common.items() if v}}
        params["sign"] = rsa2_sign(self._config.private_key, request_content(params))
        return params

    def _call(self, method: str, biz: dict, **common: str) -> AlipayAnswer:
        body = urlencode(self._signed(method, biz, **common)).encode("ascii")
        answer = self._http.post_form(body)
        if answer.status != 200:
            raise ChannelUnavailable(f"Alipay answered HTTP {answer.status} to {method}; "
                                     "check KNOWPAY_ALIPAY_GATEWAY.")
        return self._verified(method, answer.body)

    def _verified(self, method: str, body: bytes) -> AlipayAnswer:
        """The answer's content, after checking Alipay's signature over its exact text."""
        try:
            members = response_members(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ChannelUnavailable(f"Alipay answered {method} with something other than a JSON object.") from None
        member = members.get(response_key(method)) or members.get("error_response")
        content, text = member if member is not None else (None, "")
        if not isinstance(content, dict):
            raise ChannelUnavailable(f"Alipay's answer to {method} lacks {response_key(method)}.")
        answer = AlipayAnswer(method=method, code=str(content.get("code", "")), msg=str(content.get("msg", "")),
                              sub_code=str(content.get("sub_code", "")), sub_msg=str(content.get("sub_msg", "")),
                              data=content)
        sign = members.get("sign", (None, ""))[0]
        if not isinstance(sign, str) or not sign:
            # Alipay leaves refusals at its door (bad signature, unknown app) unsigned: believed for nothing.
            raise self._unavailable(answer, signed=False)
        if not rsa2_verify(self._config.alipay_public_key, text, sign):
            raise ChannelUnavailable(f"Alipay's answer to {method} fails signature verification; "
                                     "check KNOWPAY_ALIPAY_PUBLIC_KEY.")
        return answer

    @staticmethod
    def _unavailable(answer: AlipayAnswer, *, signed: bool = True) -> ChannelUnavailable:
        hint = CONFIG_HINTS.get(answer.sub_code)
        return ChannelUnavailable(f"Alipay refused {answer.method}: {answer.describe() or 'no reason given'}"
                                  + ("" if signed else " (unsigned answer)") + (f"; {hint}" if hint else "") + ".")


# -- reading what Alipay sends ------------------------------------------------------------------------

def _form_fields(body: bytes) -> dict[str, str]:
    """A form-encoded notification → its fields; any ambiguity (a field twice, bad encoding) is refused."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True,
                          encoding="utf-8", errors="strict", max_num_fields=MAX_NOTIFICATION_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise NotificationRejected("alipay notification refused: the body is not a UTF-8 form") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise NotificationRejected(f"alipay notification refused: `{name[:40]}` appears twice")
        fields[name] = value
    return fields


def _notified_amount(fields: dict[str, str], name: str) -> int:
    try:
        amount = from_yuan(fields.get(name))
    except InvalidRequest:
        raise NotificationRejected(f"alipay notification refused: {name} {fields.get(name, '')[:20]!r} is not "
                                   "an amount in yuan") from None
    if amount <= 0:
        raise NotificationRejected(f"alipay notification refused: {name} must be positive")
    return amount


def _notified_time(fields: dict[str, str], name: str) -> datetime | None:
    if not fields.get(name):
        return None
    try:
        return from_wire_time(fields[name])
    except ValueError:
        raise NotificationRejected(f"alipay notification refused: {name} is not a time") from None


def _failure_code(sub_code: str) -> str:
    known = REFUND_FAILURES.get(sub_code)
    if known:
        return known
    tail = sub_code.rsplit(".", 1)[-1].lower().replace("-", "_")
    return f"alipay_{tail}" if tail else "alipay_refused"


def _column_name(cell: str) -> str:
    # Some exports write half-width parentheses; the documented header uses full-width ones.
    return cell.strip().lstrip("\ufeff").replace("(", "（").replace(")", "）")


def _bill_rows(data: bytes) -> list[list[str]]:
    """The header and data rows of the 业务明细 CSV in Alipay's zip (the 汇总 summary beside it is skipped)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError):
        raise InvalidRequest("The Alipay bill is not a zip file.", code="invalid_bill") from None
    with archive:
        for info in archive.infolist():
            if info.is_dir() or info.file_size > MAX_BILL_MEMBER:
                continue
            try:
                # GB18030 reads every GBK byte sequence, and names GBK cannot spell too.
                text = archive.read(info).decode("gb18030")
            except (zipfile.BadZipFile, UnicodeDecodeError, RuntimeError, OSError):
                continue
            # Alipay's zip names are GBK without the UTF-8 flag, so the detail file is found by its header.
            rows = [row for row in csv.reader(line for line in text.splitlines()
                                               if line.strip() and not line.lstrip().startswith("#"))]
            if rows and _column_name(rows[0][0]) == BILL_COLUMNS[0]:
                return rows
    raise InvalidRequest("The Alipay bill holds no 业务明细 CSV.", code="invalid_bill")

