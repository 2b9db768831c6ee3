"""WeChat Pay API v3 inside the sandbox gateway: the merchant REST paths, signed answers, encrypted callbacks;
and the buyer's side of WeChat that JSAPI needs: the official account's web authorisation and the payment
the WeChat app makes when the buyer confirms in the cashier `getBrandWCPayRequest` opened.

Each request's WECHATPAY2-SHA256-RSA2048 `Authorization` is checked with the merchant's public key; answers
use WeChat Pay's JSON shapes and `{"code", "message"}` errors, signed with the sandbox's own "WeChat Pay
platform" key. Trades live in the shared store (channel `wechat`), so the shared pay page pays them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import string
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Blueprint, Flask, Response, g, redirect, render_template, request

from knowpay.channels.http import encode_json
from knowpay.channels.wechat import (
    AES_ALGORITHM,
    BEIJING,
    WireError,
    check_fresh,
    encrypt_resource,
    load_private_key,
    load_public_key,
    parse_authorization,
    parse_time,
    request_message,
    rfc3339,
    signature_headers,
    verify,
)
from knowpay.config import ConfigError, Settings
from knowpay.domain.money import MAX_AMOUNT, format_major
from knowpay.sandbox import DEFAULT_URL, parse_isoformat
from knowpay.sandbox.keys import demo_key_pair, keys_folder
from knowpay.sandbox.store import Delivery, GatewayError, Refund, SandboxStore, Trade, TradeStatus

log = logging.getLogger(__name__)

MERCHANT_PREFIX = "wechat:"  # the store's merchant_id for a WeChat Pay mchid
DEMO_MCH_ID = "1900000109"
DEMO_APP_ID = "wxd678efh567hg6787"
DEFAULT_TIME_TO_PAY = 2 * 3600
BILL_TOKEN_SECONDS = 300
BILLS_KEPT = 32
OUT_TRADE_NO = re.compile(r"^[0-9A-Za-z_\-|*]{6,32}$")
OUT_REFUND_NO = re.compile(r"^[0-9A-Za-z_\-|*@]{1,64}$")
TRADE_STATE_DESCS = {"SUCCESS": "支付成功", "REFUND": "转入退款", "NOTPAY": "未支付", "CLOSED": "已关闭",
                     "PAYERROR": "支付失败"}
# The store's refusals in WeChat Pay's words.
STORE_ERRORS = {"out_trade_no_conflict": (403, "OUT_TRADE_NO_USED"),
                "trade_not_found": (404, "ORDER_NOT_EXIST"),
                "trade_not_paid": (400, "INVALID_REQUEST"),
                "refund_exceeds_trade": (400, "INVALID_REQUEST"),
                "out_refund_no_conflict": (400, "INVALID_REQUEST"),
                "trade_not_payable": (400, "ORDER_CLOSED")}
BILL_HEADER = ("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,"
               "货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,"
               "商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注")
BILL_SUMMARY = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
OAUTH_CODE_SECONDS = 300  # as at WeChat: a code is used once, and expires unused after five minutes
OAUTH_CODES_KEPT = 1024  # used codes are remembered a while, to answer "code been used" as WeChat does
OAUTH_SCOPES = ("snsapi_base", "snsapi_userinfo")
OAUTH_STATE = re.compile(r"^[A-Za-z0-9]{0,128}$")
# The sandbox's stand-in for "the WeChat user of this browser": a random id in a cookie of the sandbox's.
WECHAT_USER_COOKIE = "sandbox_wechat_user"
WECHAT_USER = re.compile(r"^[0-9a-f]{32}$")
BRIDGE_OK, BRIDGE_CANCEL, BRIDGE_FAIL = ("get_brand_wcpay_request:ok", "get_brand_wcpay_request:cancel",
                                         "get_brand_wcpay_request:fail")


@dataclass(frozen=True)
class PlatformConfig:
    """The sandbox's side: its platform key pair's private half, the merchant's public key, and the ids."""

    mch_id: str
    app_id: str
    apiv3_key: bytes
    private_key: rsa.RSAPrivateKey
    public_key_id: str
    merchant_public_key: rsa.RSAPublicKey
    cert_serial: str | None  # checked against serial_no when set

    @classmethod
    def from_settings(cls, settings: Settings) -> PlatformConfig | None:
        env = settings.channel
        needed = ("sandbox_wechat_private_key", "sandbox_wechat_merchant_public_key", "wechat_mch_id",
                  "wechat_app_id", "wechat_apiv3_key", "wechat_public_key_id")
        if not all(env.get(name) for name in needed):
            return None
        apiv3_key = env["wechat_apiv3_key"].encode("utf-8")
        if len(apiv3_key) != 32:
            raise ConfigError(f"KNOWPAY_WECHAT_APIV3_KEY must be 32 bytes, not {len(apiv3_key)}")
        return cls(mch_id=env["wechat_mch_id"], app_id=env["wechat_app_id"], apiv3_key=apiv3_key,
                   private_key=load_private_key(env["sandbox_wechat_private_key"],
                                                "KNOWPAY_SANDBOX_WECHAT_PRIVATE_KEY"),
                   public_key_id=env["wechat_public_key_id"],
                   merchant_public_key=load_public_key(env["sandbox_wechat_merchant_public_key"],
                                                       "KNOWPAY_SANDBOX_WECHAT_MERCHANT_PUBLIC_KEY"),
                   cert_serial=env.get("wechat_cert_serial") or None)


@dataclass(frozen=True)
class OfficialAccount:
    """The official account whose web authorisation the sandbox plays (KNOWPAY_WECHAT_APP_ID, _APP_SECRET)."""

    app_id: str
    app_secret: str

    @classmethod
    def from_settings(cls, settings: Settings) -> OfficialAccount | None:
        app_id, secret = (settings.channel.get(name) or "" for name in ("wechat_app_id", "wechat_app_secret"))
        return cls(app_id, secret) if app_id and secret else None


class PrepayIds:
    """prepay_id → out_trade_no of the JSAPI trades opened here, for the WeChat app's confirmation. In
    memory: a restarted sandbox answers an older prepay_id as WeChat answers an expired one."""

    def __init__(self) -> None:
        self._trades: dict[str, str] = {}
        self._lock = threading.Lock()

    def remember(self, prepay_id: str, out_trade_no: str) -> None:
        with self._lock:
            self._trades[prepay_id] = out_trade_no

    def trade_of(self, prepay_id: str) -> str | None:
        with self._lock:
            return self._trades.get(prepay_id)


def install(app: Flask, gateway, settings: Settings) -> WeChatCallbacks:
    """Add the v3 paths and the JSAPI confirmation when keys are configured, and the web authorisation when
    the official account's secret is; without them the sandbox runs on and these callbacks wait."""
    try:
        config = PlatformConfig.from_settings(settings)
    except ConfigError as exc:
        log.error("the sandbox's WeChat Pay imitation is off: %s", exc)
        config = None
    if config is not None:
        prepays = PrepayIds()
        app.register_blueprint(_blueprint(gateway, config, prepays))
        app.register_blueprint(_jsapi_blueprint(gateway, config, prepays))
    account = OfficialAccount.from_settings(settings)
    if account is not None:
        app.register_blueprint(_oauth_blueprint(account))
    return WeChatCallbacks(gateway.store, config)


# -- callbacks ------------------------------------------------------------------------------------------

class WeChatCallbacks:
    """Notifications as WeChat Pay v3 callbacks: the transaction or refund JSON encrypted with the APIv3
    key, the envelope signed with the platform key, all rendered afresh at each attempt."""

    def __init__(self, store: SandboxStore, config: PlatformConfig | None) -> None:
        self._store = store
        self._config = config

    def render(self, delivery: Delivery, now: float) -> tuple[bytes, dict[str, str]]:
        config = self._config
        if config is None:
            raise LookupError(
                "the sandbox's WeChat Pay imitation is not configured (KNOWPAY_SANDBOX_WECHAT_*)")
        facts = json.loads(delivery.body)
        trade = self._store.trade(delivery.trade_no, now=now)
        if trade is None:
            raise LookupError(f"no trade {delivery.trade_no!r}")
        if facts["type"] == "refund":
            event_type, summary, original_type = "REFUND.SUCCESS", "退款成功", "refund"
            resource = _refund_callback(facts, trade)
        else:
            paid = facts["status"] == TradeStatus.SUCCESS
            # WeChat Pay itself calls back only on success; the sandbox also tells of a declined payment.
            state = "SUCCESS" if paid else "PAYERROR"
            event_type, summary = f"TRANSACTION.{state}", TRADE_STATE_DESCS[state]
            original_type = "transaction"
            resource = _transaction_json(trade, state=state)
        nonce = secrets.token_hex(6)
        envelope = {
            "id": facts["notify_id"], "create_time": rfc3339(delivery.created_at),
            "resource_type": "encrypt-resource", "event_type": event_type, "summary": summary,
            "resource": {"original_type": original_type, "algorithm": AES_ALGORITHM,
                         "ciphertext": encrypt_resource(config.apiv3_key, encode_json(resource),
                                                        associated_data=original_type, nonce=nonce),
                         "associated_data": original_type, "nonce": nonce}}
        body = encode_json(envelope)
        return body, {"Content-Type": "application/json",
                      **signature_headers(config.private_key, config.public_key_id, body, now=now)}

    def acknowledged(self, status: int, text: str) -> bool:
        return 200 <= status < 300


def _extra(trade: Trade) -> dict:
    return json.loads(trade.extra or "{}")


def _openid(trade: Trade, extra: dict) -> str:
    # A Native payer has an openid too, WeChat Pay's alone; the sandbox makes a stable one up.
    return extra.get("openid") or "o" + hashlib.sha256(trade.trade_no.encode()).hexdigest()[:27]


def _trade_state(trade: Trade) -> str:
    if trade.status == TradeStatus.SUCCESS:
        return "REFUND" if trade.amount_refunded else "SUCCESS"
    others: dict[str, str] = {TradeStatus.WAIT_BUYER_PAY: "NOTPAY", TradeStatus.DECLINED: "PAYERROR"}
    return others.get(trade.status, "CLOSED")


def _transaction_json(trade: Trade, *, state: str | None = None) -> dict:
    """A transaction as the query answers it and the TRANSACTION.* callback carries it."""
    extra = _extra(trade)
    state = state or _trade_state(trade)
    data: dict = {"appid": extra.get("appid"), "mchid": extra.get("mchid"),
                  "out_trade_no": trade.out_trade_no,
                  "trade_type": extra.get("trade_type"), "trade_state": state,
                  "trade_state_desc": TRADE_STATE_DESCS[state], "attach": "",
                  "amount": {"total": trade.amount, "currency": trade.currency,
                             "payer_currency": trade.currency}}
    if state in ("SUCCESS", "REFUND", "PAYERROR"):
        data.update(transaction_id=trade.trade_no, bank_type="OTHERS",
                    payer={"openid": _openid(trade, extra)})
    if state in ("SUCCESS", "REFUND") and trade.paid_at is not None:
        data["success_time"] = rfc3339(trade.paid_at)
        data["amount"]["payer_total"] = trade.amount
    return data


def _refund_callback(facts: dict, trade: Trade) -> dict:
    refunded_at = rfc3339(parse_isoformat(facts["refunded_at"]))
    return {"mchid": _extra(trade).get("mchid"), "transaction_id": facts["trade_no"],
            "out_trade_no": facts["out_trade_no"], "refund_id": facts["refund_no"],
            "out_refund_no": facts["out_refund_no"], "refund_status": "SUCCESS", "success_time": refunded_at,
            "user_received_account": "支付用户零钱",
            "amount": {"total": trade.amount, "refund": facts["amount"], "payer_total": trade.amount,
                       "payer_refund": facts["amount"]}}


def _refund_json(refund: Refund, trade: Trade, *, status: str) -> dict:
    data = {"refund_id": refund.refund_no, "out_refund_no": refund.out_refund_no,
            "transaction_id": trade.trade_no, "out_trade_no": trade.out_trade_no, "channel": "ORIGINAL",
            "user_received_account": "支付用户零钱",
            "create_time": rfc3339(refund.refunded_at), "status": status, "funds_account": "AVAILABLE",
            "amount": {"total": trade.amount, "refund": refund.amount, "from": [],
                       "payer_total": trade.amount, "payer_refund": refund.amount,
                       "settlement_refund": refund.amount,
                       "settlement_total": trade.amount, "discount_refund": 0, "currency": trade.currency,
                       "refund_fee": refund.fee},
            "promotion_detail": []}
    if status == "SUCCESS":
        data["success_time"] = rfc3339(refund.refunded_at)
    return data


# -- the merchant API -----------------------------------------------------------------------------------

def _answer(data: dict | None, status: int = 200) -> Response:
    if data is None:
        return Response(b"", status=status)
    return Response(encode_json(data), status=status, content_type="application/json; charset=utf-8")


def _body() -> dict:
    try:
        data = json.loads(request.get_data(cache=True) or b"null")
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise GatewayError(400, "PARAM_ERROR", "请求体不是 JSON · the body is not JSON") from None
    if not isinstance(data, dict):
        raise GatewayError(400, "PARAM_ERROR", "请求体须为 JSON 对象 · the body must be a JSON object")
    return data


def _string(data: dict, name: str, *, max_length: int) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise GatewayError(400, "PARAM_ERROR", f"{name} 为必填项 · `{name}` is required, a non-empty string")
    if len(value) > max_length:
        raise GatewayError(400, "PARAM_ERROR", f"`{name}` is longer than {max_length} characters")
    return value


def _optional_string(data: dict, name: str, *, max_length: int) -> str | None:
    return None if data.get(name) is None else _string(data, name, max_length=max_length)


def _url(data: dict, name: str) -> str:
    value = _string(data, name, max_length=256)
    if not value.startswith(("http://", "https://")):
        # WeChat Pay demands https; the sandbox also takes http so a laptop's KnowPay can be notified.
        raise GatewayError(400, "PARAM_ERROR", f"`{name}` must be an http(s) URL")
    return value


def _optional_url(data: dict, name: str) -> str | None:
    return None if data.get(name) is None else _url(data, name)


def _fen(data: dict, name: str) -> int:
    value = data.get(name)
    # Integer fen only: a float (even 9900.0) or a string is refused, never rounded.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_AMOUNT:
        raise GatewayError(400, "PARAM_ERROR", f"`amount.{name}` must be a positive integer of fen")
    return value


def _amount(data: dict) -> dict:
    amount = data.get("amount")
    if not isinstance(amount, dict):
        raise GatewayError(400, "PARAM_ERROR", "`amount` is required")
    if amount.get("currency", "CNY") != "CNY":
        raise GatewayError(400, "PARAM_ERROR", "`amount.currency` must be CNY")
    return amount


def _signed_url() -> str:
    """The path and query exactly as the client sent them, which is what its signature covers."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if raw:
        return raw
    query = request.query_string.decode("latin-1")
    return quote(request.path) + (f"?{query}" if query else "")


def _authenticate(config: PlatformConfig) -> None:
    fields = parse_authorization(request.headers.get("Authorization", ""))

    def refuse(why: str) -> GatewayError:
        return GatewayError(401, "SIGN_ERROR", f"签名错误 · {why}")

    if fields is None or not all(fields.get(k) for k in ("mchid", "nonce_str", "signature", "timestamp",
                                                            "serial_no")):
        raise refuse('Authorization must be WECHATPAY2-SHA256-RSA2048 mchid="...",nonce_str="...",'
                     'signature="...",timestamp="...",serial_no="..."')
    if fields["mchid"] != config.mch_id:
        raise refuse(f"unknown mchid {fields['mchid'][:32]!r}")
    if config.cert_serial and fields["serial_no"].upper() != config.cert_serial.upper():
        raise refuse("serial_no is not the merchant certificate's serial")
    try:
        check_fresh(fields["timestamp"], time.time(), "timestamp")
    except WireError as exc:
        raise refuse(exc.message) from None
    message = request_message(request.method, _signed_url(), fields["timestamp"], fields["nonce_str"],
                              request.get_data(cache=True))
    if not verify(config.merchant_public_key, message, fields["signature"]):
        raise refuse("the signature does not verify with the merchant's public key")


def _blueprint(gateway, config: PlatformConfig, prepays: PrepayIds) -> Blueprint:
    bp = Blueprint("wechat_v3", __name__)
    store, notifier = gateway.store, gateway.notifier
    merchant_id = MERCHANT_PREFIX + config.mch_id
    bills: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
    bills_lock = threading.Lock()

    def public_url() -> str:
        # KNOWPAY_SANDBOX_URL when set (a phone on the LAN must reach the pay page), else how we were called.
        return gateway.config.url if gateway.config.url_is_set else request.host_url.rstrip("/")

    def check_mchid(value: object) -> None:
        if value != config.mch_id:
            raise GatewayError(400, "MCH_NOT_EXISTS", "商户号不存在 · mchid is not this merchant")

    @bp.before_request
    def _verify():
        g.wechat_unsigned = False
        _authenticate(config)

    @bp.after_request
    def _sign(response: Response) -> Response:
        if not g.get("wechat_unsigned"):
            response.headers.update(signature_headers(config.private_key, config.public_key_id,
                                                      response.get_data(), now=time.time()))
        response.headers["Request-ID"] = secrets.token_hex(16)
        return response

    @bp.errorhandler(GatewayError)
    def _refused(exc: GatewayError):
        status, code = STORE_ERRORS.get(exc.code, (exc.status, exc.code))
        return _answer({"code": code, "message": exc.message}, status)

    def create(trade_type: str) -> Response:
        data = _body()
        if data.get("appid") != config.app_id:
            raise GatewayError(400, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配 · appid is not this merchant's")
        check_mchid(data.get("mchid"))
        out_trade_no = _string(data, "out_trade_no", max_length=32)
        if not OUT_TRADE_NO.match(out_trade_no):
            raise GatewayError(400, "PARAM_ERROR", "out_trade_no: 6-32 of digits, letters, _ - | *")
        description = _string(data, "description", max_length=127)
        notify_url = _url(data, "notify_url")
        amount = _amount(data)
        total = _fen(amount, "total")
        now = time.time()
        expires_at = now + DEFAULT_TIME_TO_PAY
        if data.get("time_expire") is not None:
            try:
                moment = parse_time(_string(data, "time_expire", max_length=40))
            except ValueError:
                raise GatewayError(400, "PARAM_ERROR", "time_expire must be RFC 3339, like "
                                                       "2026-11-25T12:00:00+08:00") from None
            expires_at = moment.replace(tzinfo=UTC).timestamp()
        openid = None
        if trade_type == "JSAPI":
            payer = data.get("payer")
            openid = _string(payer if isinstance(payer, dict) else {}, "openid", max_length=128)
        if trade_type == "MWEB":
            scene = data.get("scene_info")
            scene = scene if isinstance(scene, dict) else {}
            _string(scene, "payer_client_ip", max_length=45)
            h5_info = scene.get("h5_info")
            if not isinstance(h5_info, dict) or h5_info.get("type") not in ("Wap", "iOS", "Android"):
                raise GatewayError(400, "PARAM_ERROR", "scene_info.h5_info.type must be Wap, iOS or Android")
        extra = {"appid": config.app_id, "mchid": config.mch_id, "trade_type": trade_type, "openid": openid,
                 "prepay_id": f"wx{datetime.now(BEIJING):%d%H%M%S}{secrets.token_hex(12)}"}
        target = urlsplit(notify_url)
        trade, created = store.create_trade(
            merchant_id, out_trade_no=out_trade_no, amount=total, currency="CNY", subject=description,
            notify_url=notify_url, return_url=f"{target.scheme}://{target.netloc}/", expires_at=expires_at,
            now=now, channel="wechat", extra=extra)
        if not created:
            # The same order again gets the same answer; the number reused otherwise is refused.
            if _extra(trade).get("trade_type") != trade_type:
                raise GatewayError(403, "OUT_TRADE_NO_USED", "商户订单号重复 · out_trade_no is another order")
            if trade.status == TradeStatus.SUCCESS:
                raise GatewayError(400, "ORDERPAID", "该订单已支付 · the order is paid")
            if trade.status != TradeStatus.WAIT_BUYER_PAY:
                raise GatewayError(400, "ORDER_CLOSED", "订单已关闭 · the order is closed")
        if trade_type == "JSAPI":
            prepay_id = _extra(trade)["prepay_id"]
            prepays.remember(prepay_id, trade.out_trade_no)
            return _answer({"prepay_id": prepay_id})
        if trade_type == "MWEB":
            # WeChat's cashier page; the merchant appends redirect_url, where the pay page returns the buyer.
            prepay_id = _extra(trade)["prepay_id"]
            return _answer({"h5_url": f"{public_url()}/pay/{trade.trade_no}?prepay_id={prepay_id}"})
        return _answer({"code_url": f"{public_url()}/pay/{trade.trade_no}"})

    @bp.post("/v3/pay/transactions/native")
    def create_native():
        return create("NATIVE")

    @bp.post("/v3/pay/transactions/jsapi")
    def create_jsapi():
        return create("JSAPI")

    @bp.post("/v3/pay/transactions/h5")
    def create_h5():
        return create("MWEB")

    def find(out_trade_no: str) -> Trade:
        trade = store.find_trade(merchant_id, out_trade_no, now=time.time())
        if trade is None:
            raise GatewayError(404, "ORDER_NOT_EXIST", "订单不存在 · no such order")
        return trade

    @bp.get("/v3/pay/transactions/out-trade-no/<out_trade_no>")
    def query(out_trade_no: str):
        check_mchid(request.args.get("mchid"))
        return _answer(_transaction_json(find(out_trade_no)))

    @bp.post("/v3/pay/transactions/out-trade-no/<out_trade_no>/close")
    def close(out_trade_no: str):
        check_mchid(_body().get("mchid"))
        find(out_trade_no)
        trade = store.close_trade(merchant_id, out_trade_no, now=time.time())
        if trade is not None and trade.status == TradeStatus.SUCCESS:
            raise GatewayError(400, "ORDERPAID", "该订单已支付 · the order is paid and cannot be closed")
        return _answer(None, 204)

    @bp.post("/v3/refund/domestic/refunds")
    def refund():
        data = _body()
        out_refund_no = _string(data, "out_refund_no", max_length=64)
        if not OUT_REFUND_NO.match(out_refund_no):
            raise GatewayError(400, "PARAM_ERROR", "out_refund_no: 1-64 of digits, letters, _ - | * @")
        transaction_id = _optional_string(data, "transaction_id", max_length=32)
        if transaction_id is not None:
            paid = store.trade(transaction_id, now=time.time())
            if paid is None or paid.merchant_id != merchant_id:
                raise GatewayError(404, "RESOURCE_NOT_EXISTS", "订单不存在 · no such transaction_id")
            out_trade_no = paid.out_trade_no
        else:
            out_trade_no = _string(data, "out_trade_no", max_length=32)
        amount = _amount(data)
        wanted, total = _fen(amount, "refund"), _fen(amount, "total")
        trade = store.find_trade(merchant_id, out_trade_no, now=time.time())
        if trade is None:
            raise GatewayError(404, "RESOURCE_NOT_EXISTS", "订单不存在 · no such order")
        if total != trade.amount:
            raise GatewayError(400, "INVALID_REQUEST", "订单金额与实际不符 · amount.total is not the order's")
        refund_row, trade, created = store.create_refund(
            merchant_id, out_trade_no=out_trade_no, out_refund_no=out_refund_no, amount=wanted,
            reason=_optional_string(data, "reason", max_length=80),
            notify_url=_optional_url(data, "notify_url"), now=time.time())
        notifier.wake()
        # Like WeChat Pay: a new refund is PROCESSING; asking again (or querying) finds it done.
        return _answer(_refund_json(refund_row, trade, status="PROCESSING" if created else "SUCCESS"))

    @bp.get("/v3/refund/domestic/refunds/<out_refund_no>")
    def query_refund(out_refund_no: str):
        found = store.find_refund(merchant_id, out_refund_no, now=time.time())
        if found is None:
            raise GatewayError(404, "RESOURCE_NOT_EXISTS", "退款单不存在 · no such refund")
        return _answer(_refund_json(*found, status="SUCCESS"))

    @bp.get("/v3/bill/tradebill")
    def trade_bill():
        try:
            day = date.fromisoformat(request.args.get("bill_date") or "")
        except ValueError:
            raise GatewayError(400, "PARAM_ERROR", "bill_date must look like 2026-11-25") from None
        bill_type = request.args.get("bill_type") or "ALL"
        if bill_type not in ("ALL", "SUCCESS", "REFUND"):
            raise GatewayError(400, "PARAM_ERROR", "bill_type must be ALL, SUCCESS or REFUND")
        if request.args.get("tar_type"):
            raise GatewayError(400, "PARAM_ERROR", "the sandbox serves bills uncompressed only")
        if day > datetime.now(BEIJING).date():
            raise GatewayError(400, "NO_STATEMENT_EXIST", "账单文件不存在 · no bill for a future day")
        # WeChat Pay bills yesterday from 10:00; the sandbox also bills today so far, for tests and demos.
        content = _bill(store, merchant_id, day, bill_type, fee_bps=store.fee_bps)
        token = secrets.token_urlsafe(24)
        now = time.time()
        with bills_lock:
            bills[token] = (now + BILL_TOKEN_SECONDS, content)
            while len(bills) > BILLS_KEPT:
                bills.popitem(last=False)
        return _answer({"hash_type": "SHA1", "hash_value": hashlib.sha1(content, usedforsecurity=False).hexdigest(),
                        "download_url": f"{public_url()}/v3/billdownload/file?token={token}"})

    @bp.get("/v3/billdownload/file")
    def download_bill():
        with bills_lock:
            expires_at, content = bills.get(request.args.get("token", ""), (0.0, b""))
        if expires_at < time.time():
            raise GatewayError(400, "INVALID_REQUEST", "下载链接已失效 · the download token is unknown or expired")
        g.wechat_unsigned = True  # as at WeChat Pay: the file is vouched for by the hash, not a signature
        return Response(content, content_type="application/octet-stream")

    return bp


# -- the buyer's side: the official account's web authorisation ------------------------------------------

def _sandbox_openid(app_id: str, wechat_user: str) -> str:
    """An openid shaped like WeChat's (28 characters from "o"), stable for one user under one app id."""
    digest = hashlib.sha256(f"{app_id}:{wechat_user}".encode()).digest()
    return "o" + base64.urlsafe_b64encode(digest).decode("ascii")[:27]


def _oauth_blueprint(account: OfficialAccount) -> Blueprint:
    """open.weixin.qq.com's authorisation page and api.weixin.qq.com's code exchange, on the sandbox's
    address. Scope snsapi_base is silent: the page sends the browser straight back with a code."""
    bp = Blueprint("wechat_oauth", __name__)
    # code → (openid, scope, expires_at, used)
    codes: OrderedDict[str, tuple[str, str, float, bool]] = OrderedDict()
    codes_lock = threading.Lock()

    def refuse_page(message: str) -> tuple[str, int]:
        # WeChat shows an error page in the browser rather than returning to a doubtful redirect_uri.
        return render_template("error.html", message=message), 400

    @bp.get("/connect/oauth2/authorize")
    def authorize():
        args = request.args
        if args.get("appid") != account.app_id:
            return refuse_page("appid 参数错误 · appid is not the official account's")
        if args.get("response_type") != "code":
            return refuse_page("response_type 须为 code · response_type must be code")
        scope = args.get("scope", "")
        if scope not in OAUTH_SCOPES:
            return refuse_page("scope 参数错误 · scope must be snsapi_base or snsapi_userinfo")
        state = args.get("state", "")
        if not OAUTH_STATE.match(state):
            return refuse_page("state 须为最多 128 个字母或数字 · state: at most 128 letters and digits")
        redirect_uri = args.get("redirect_uri", "")
        target = urlsplit(redirect_uri)
        if target.scheme not in ("http", "https") or not target.netloc or len(redirect_uri) > 1024:
            return refuse_page("redirect_uri 参数错误 · redirect_uri must be an http(s) URL")
        known = request.cookies.get(WECHAT_USER_COOKIE, "")
        wechat_user = known if WECHAT_USER.match(known) else secrets.token_hex(16)
        code = secrets.token_urlsafe(24)
        with codes_lock:
            codes[code] = (_sandbox_openid(account.app_id, wechat_user), scope,
                           time.time() + OAUTH_CODE_SECONDS, False)
            while len(codes) > OAUTH_CODES_KEPT:
                codes.popitem(last=False)
        joiner = "&" if target.query else "?"
        back = redirect(f"{redirect_uri}{joiner}{urlencode({'code': code, 'state': state})}", code=302)
        back.set_cookie(WECHAT_USER_COOKIE, wechat_user, max_age=365 * 24 * 3600, httponly=True,
                        samesite="Lax")
        return back

    @bp.get("/sns/oauth2/access_token")
    def access_token():
        args = request.args

        def refused(errcode: int, errmsg: str) -> Response:
            # Like WeChat: a refusal is HTTP 200 with errcode and errmsg.
            return _answer({"errcode": errcode, "errmsg": errmsg})

        if args.get("grant_type") != "authorization_code":
            return refused(40002, "invalid grant_type")
        if args.get("appid") != account.app_id:
            return refused(40013, "invalid appid")
        if not hmac.compare_digest(args.get("secret", "").encode(), account.app_secret.encode()):
            return refused(40125, "invalid appsecret")
        code = args.get("code", "")
        with codes_lock:
            found = codes.get(code)
            if found is None or found[2] < time.time():
                return refused(40029, "invalid code")
            openid, scope, expires_at, used = found
            if used:
                return refused(40163, "code been used")
            codes[code] = (openid, scope, expires_at, True)
        return _answer({"access_token": secrets.token_urlsafe(48), "expires_in": 7200,
                        "refresh_token": secrets.token_urlsafe(48), "openid": openid, "scope": scope})

    return bp


# -- the buyer's side: the WeChat app paying a JSAPI trade -----------------------------------------------

def _jsapi_blueprint(gateway, config: PlatformConfig, prepays: PrepayIds) -> Blueprint:
    """`POST /wechat/jsapi/confirm`: what the WeChat app does when the buyer confirms in the cashier that
    WeixinJSBridge's getBrandWCPayRequest opened. It checks the parameters as WeChat does (our appId, an
    RSA paySign by the merchant's key over appId, timeStamp, nonceStr and package, a live prepay_id, the
    payer's openid when given) and pays, declines (`result`) or leaves the trade (`cancel`), answering
    the bridge's `err_msg`. A test's stand-in bridge calls it; KnowPay's pages never do."""
    bp = Blueprint("wechat_jsapi", __name__)
    store, notifier = gateway.store, gateway.notifier
    merchant_id = MERCHANT_PREFIX + config.mch_id

    def answer(err_msg: str, why: str | None = None) -> Response:
        body = {"err_msg": err_msg, **({"err_desc": why} if why else {})}
        return _answer(body, 400 if err_msg == BRIDGE_FAIL else 200)

    @bp.post("/wechat/jsapi/confirm")
    def confirm():
        data = _body()
        params = {name: data.get(name) for name in ("appId", "timeStamp", "nonceStr", "package", "signType",
                                                       "paySign")}
        if not all(isinstance(value, str) and value for value in params.values()):
            return answer(BRIDGE_FAIL, "调用支付JSAPI缺少参数 · appId, timeStamp, nonceStr, package, signType, "
                                       "paySign are all needed, as strings")
        if params["appId"] != config.app_id:
            return answer(BRIDGE_FAIL, "appId 与商户号不匹配 · appId is not the merchant's")
        message = f"{params['appId']}\n{params['timeStamp']}\n{params['nonceStr']}\n{params['package']}\n"
        if params["signType"] != "RSA" or not verify(config.merchant_public_key, message.encode(),
                                                     params["paySign"]):
            return answer(BRIDGE_FAIL, "支付验证签名失败 · paySign does not verify with the merchant's key")
        prepay_id = params["package"].removeprefix("prepay_id=")
        out_trade_no = prepays.trade_of(prepay_id) if params["package"].startswith("prepay_id=") else None
        trade = store.find_trade(merchant_id, out_trade_no, now=time.time()) if out_trade_no else None
        if trade is None:
            return answer(BRIDGE_FAIL, "prepay_id 已失效 · no live trade has this prepay_id")
        payer = data.get("openid")
        if payer is not None and payer != _extra(trade).get("openid"):
            return answer(BRIDGE_FAIL, "当前用户与下单用户不一致 · the payer is not the openid the order was for")
        result = data.get("result", "pay")
        if result == "cancel":
            return answer(BRIDGE_CANCEL)
        if result not in ("pay", "decline"):
            return answer(BRIDGE_FAIL, '`result` must be "pay", "decline" or "cancel"')
        try:
            store.decide(trade.trade_no, result, now=time.time())
        except GatewayError as exc:
            return answer(BRIDGE_FAIL, exc.message)
        notifier.wake()
        return answer(BRIDGE_OK if result == "pay" else BRIDGE_FAIL,
                      None if result == "pay" else "支付失败 · the buyer's payment was declined")

    return bp


# -- the trade bill -------------------------------------------------------------------------------------

def _yuan(fen: int) -> str:
    return format_major(fen, "cny")


def _fee(fen: int) -> str:
    """Fees are written with 5 decimal places, negative when a refund gives them back."""
    return f"{'-' if fen < 0 else ''}{abs(fen) // 100}.{abs(fen) % 100:02d}000"


def _cell(text: str) -> str:
    return "`" + text.replace("`", "'").replace("\r", " ").replace("\n", " ")


def _bill(store: SandboxStore, merchant_id: str, day: date, bill_type: str, *, fee_bps: int) -> bytes:
    start = datetime(day.year, day.month, day.day, tzinfo=BEIJING)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=BEIJING)
    entries = store.bill(merchant_id, start=start.timestamp(), end=end.timestamp(), now=time.time())
    wanted = {"ALL": ("payment", "refund"), "SUCCESS": ("payment",), "REFUND": ("refund",)}[bill_type]
    rate = f"{fee_bps // 100}.{fee_bps % 100:02d}%"
    lines = [BILL_HEADER]
    settled = refunded = fees = ordered = applied = 0
    count = 0
    for entry in entries:
        if entry.kind not in wanted:
            continue
        trade, extra = entry.trade, _extra(entry.trade)
        when = datetime.fromtimestamp(entry.occurred_at, BEIJING).strftime("%Y-%m-%d %H:%M:%S")
        head = [when, extra.get("appid") or "", extra.get("mchid") or "", "0", "", trade.trade_no,
                trade.out_trade_no, _openid(trade, extra), extra.get("trade_type") or "NATIVE"]
        if entry.refund is None:
            cells = head + ["SUCCESS", "OTHERS", trade.currency, _yuan(entry.amount), "0.00", "0", "0",
                            "0.00", "0.00", "", "", trade.subject, "", _fee(entry.fee), rate,
                            _yuan(entry.amount), "0.00", ""]
            settled, fees, ordered = settled + entry.amount, fees + entry.fee, ordered + entry.amount
        else:
            cells = head + ["REFUND", "OTHERS", trade.currency, "0.00", "0.00", entry.refund.refund_no,
                            entry.refund.out_refund_no, _yuan(entry.amount), "0.00", "ORIGINAL", "SUCCESS",
                            trade.subject, "", _fee(-entry.fee), rate, _yuan(trade.amount),
                            _yuan(entry.amount), ""]
            refunded, fees = refunded + entry.amount, fees - entry.fee
            ordered, applied = ordered + trade.amount, applied + entry.amount
        lines.append(",".join(_cell(cell) for cell in cells))
        count += 1
    lines.append(BILL_SUMMARY)
    totals = (str(count), _yuan(settled), _yuan(refunded), "0.00", _fee(fees), _yuan(ordered), _yuan(applied))
    lines.append(",".join(_cell(cell) for cell in totals))
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


# -- the demo's keys ------------------------------------------------------------------------------------

def _kept_secret(path: Path, alphabet: str) -> str:
    """A random 32-character secret, made once and kept beside the key pairs (the APIv3 key, the
    official account's AppSecret)."""
    if path.exists():
        key = path.read_text("ascii").strip()
        if len(key) == 32:
            return key
    key = "".join(secrets.choice(alphabet) for _ in range(32))
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(key + "\n")
    return key


def _fingerprint(public_pem: Path) -> str:
    key = serialization.load_pem_public_key(public_pem.read_bytes())
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def demo_env(instance_path: Path, sandbox_url: str | None = None) -> dict[str, str]:
    """Every KNOWPAY_WECHAT_* and KNOWPAY_SANDBOX_WECHAT_* variable the demo's KnowPay and sandbox need,
    with key pairs, an APIv3 key and an AppSecret made once in the instance's sandbox-keys folder. The
    gateway, which also plays WeChat's web authorisation, is `sandbox_url`, else KNOWPAY_SANDBOX_URL,
    else the sandbox's default address."""
    folder = keys_folder(instance_path)
    merchant_private, merchant_public = demo_key_pair(folder, "wechat-merchant")
    platform_private, platform_public = demo_key_pair(folder, "wechat-platform")
    # Shaped like the real ones: a 40-hex certificate serial and PUB_KEY_ID_ followed by digits.
    cert_serial = _fingerprint(merchant_public)[:40].upper()
    public_key_id = "PUB_KEY_ID_" + str(int(_fingerprint(platform_public), 16))[:28]
    gateway = (sandbox_url or os.environ.get("KNOWPAY_SANDBOX_URL") or DEFAULT_URL).rstrip("/")
    return {
        "KNOWPAY_WECHAT_MCH_ID": DEMO_MCH_ID,
        "KNOWPAY_WECHAT_APP_ID": DEMO_APP_ID,
        "KNOWPAY_WECHAT_APIV3_KEY": _kept_secret(folder / "wechat-apiv3.key",
                                                 string.ascii_letters + string.digits),
        "KNOWPAY_WECHAT_APP_SECRET": _kept_secret(folder / "wechat-app-secret.key", string.hexdigits[:16]),
        "KNOWPAY_WECHAT_PRIVATE_KEY": str(merchant_private),
        "KNOWPAY_WECHAT_CERT_SERIAL": cert_serial,
        "KNOWPAY_WECHAT_PUBLIC_KEY": str(platform_public),
        "KNOWPAY_WECHAT_PUBLIC_KEY_ID": public_key_id,
        "KNOWPAY_WECHAT_GATEWAY": gateway,
        "KNOWPAY_WECHAT_OAUTH_BASE": gateway,
        "KNOWPAY_SANDBOX_WECHAT_PRIVATE_KEY": str(platform_private),
        "KNOWPAY_SANDBOX_WECHAT_MERCHANT_PUBLIC_KEY": str(merchant_public),
    }
