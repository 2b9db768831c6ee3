"""Alipay's open platform imitated inside the sandbox gateway: `gateway.do` speaking RSA2, and its bills.

`/alipay/gateway.do` (POST, or GET as browsers and some SDKs send it) checks the app's RSA2 signature with
the app's public key and answers in Alipay's JSON shape, signed with the sandbox's own "Alipay" private
key; page and wap payments send the buyer on to the shared pay page. Trades live in the shared store with
channel "alipay"; `AlipayFormat` renders their notifications as Alipay's signed form. `demo_env()` makes
the keys and variables that let KnowPay and the sandbox talk.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import logging
import os
import re
import secrets
import time
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, Response, redirect, render_template, request, url_for

from knowpay.channels.alipay import (
    ALIPAY_TZ,
    BILL_COLUMNS,
    CURRENCY,
    FORM_CONTENT_TYPE,
    INSTALLMENTS,
    MAX_YUAN_AMOUNT,
    REDIRECT_METHODS,
    TIME_FORMAT,
    load_private_key,
    load_public_key,
    notification_content,
    request_content,
    response_key,
    rsa2_sign,
    rsa2_verify,
    to_yuan,
)
from knowpay.config import Settings
from knowpay.domain.errors import InvalidRequest
from knowpay.domain.money import parse_major
from knowpay.sandbox import DEFAULT_URL
from knowpay.sandbox.keys import demo_key_pair, keys_folder
from knowpay.sandbox.notifier import ACKNOWLEDGED_BODY
from knowpay.sandbox.store import Delivery, GatewayError, SandboxStore, Trade, TradeStatus

if TYPE_CHECKING:
    from knowpay.sandbox.app import Gateway

log = logging.getLogger(__name__)

DEMO_APP_ID = "9021000100000001"
DEMO_SELLER_ID = "2088721000000001"
PAGE_METHODS = frozenset(REDIRECT_METHODS.values())
API_METHODS = ("alipay.trade.precreate", "alipay.trade.query", "alipay.trade.close", "alipay.trade.refund",
               "alipay.trade.fastpay.refund.query", "alipay.data.dataservice.bill.downloadurl.query")
DEFAULT_TIMEOUT = timedelta(hours=2)  # when a request names neither time_expire nor timeout_express
BILL_LINK_SECONDS = 30  # Alipay: a bill link not used within 30 seconds expires
BILL_ACCOUNT_SUFFIX = "0156"  # Alipay names bills by the account: seller id + "0156"
_TIMEOUT_EXPRESS = re.compile(r"^(\d{1,4})([mhd])$")
_BILL_NAME = re.compile(r"^(\d{1,32})_(\d{8})$")


@dataclass(frozen=True)
class AlipaySide:
    """Alipay's side of the keys: its own private key, the app's public key, the app and seller it serves."""

    app_id: str
    seller_id: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    app_public_key: rsa.RSAPublicKey = field(repr=False)

    @property
    def merchant_id(self) -> str:
        return f"alipay-{self.app_id}"

    @property
    def account(self) -> str:
        return self.seller_id + BILL_ACCOUNT_SUFFIX

    @classmethod
    def from_settings(cls, settings: Settings) -> AlipaySide | None:
        """None when a key or id is absent (no Alipay here); ConfigError when one cannot be read."""
        env = settings.channel
        names = ("sandbox_alipay_private_key", "sandbox_alipay_app_public_key", "alipay_app_id", "alipay_seller_id")
        if not all(env.get(name, "").strip() for name in names):
            return None
        return cls(app_id=env["alipay_app_id"].strip(), seller_id=env["alipay_seller_id"].strip(),
                   private_key=load_private_key(env["sandbox_alipay_private_key"],
                                                "KNOWPAY_SANDBOX_ALIPAY_PRIVATE_KEY"),
                   app_public_key=load_public_key(env["sandbox_alipay_app_public_key"],
                                                  "KNOWPAY_SANDBOX_ALIPAY_APP_PUBLIC_KEY"))


class Refusal(Exception):
    """An answer other than success, in Alipay's terms; `signed` is False for refusals at the door
    (before the caller proved who it is), which Alipay leaves unsigned."""

    def __init__(self, code: str, sub_code: str, sub_msg: str, *, signed: bool = True) -> None:
        super().__init__(sub_msg)
        self.code, self.sub_code, self.sub_msg, self.signed = code, sub_code, sub_msg, signed

    @property
    def content(self) -> dict:
        msg = {"40001": "Missing Required Arguments", "40002": "Invalid Arguments",
               "40004": "Business Failed", "20000": "Service Currently Unavailable"}.get(self.code, "Failed")
        return {"code": self.code, "msg": msg, "sub_code": self.sub_code, "sub_msg": self.sub_msg}


def _business(sub_code: str, sub_msg: str) -> Refusal:
    return Refusal("40004", sub_code, sub_msg)


def _wire_time(moment: float | None) -> str | None:
    return None if moment is None else datetime.fromtimestamp(moment, ALIPAY_TZ).strftime(TIME_FORMAT)


def _extra(trade: Trade) -> dict:
    try:
        extra = json.loads(trade.extra or "{}")
    except ValueError:
        return {}
    return extra if isinstance(extra, dict) else {}


def _alipay_status(trade: Trade) -> str:
    """The store's status in Alipay's words; a trade refunded in full is closed, as Alipay shows it."""
    if trade.status == TradeStatus.SUCCESS:
        return "TRADE_CLOSED" if trade.amount_refunded >= trade.amount else "TRADE_SUCCESS"
    if trade.status == TradeStatus.WAIT_BUYER_PAY:
        return "WAIT_BUYER_PAY"
    return "TRADE_CLOSED"


# -- notifications --------------------------------------------------------------------------------------

class AlipayFormat:
    """Alipay's asynchronous notification: a form signed RSA2 with Alipay's key, acknowledged by `success`."""

    def __init__(self, side: AlipaySide | None, store: SandboxStore) -> None:
        self._side = side
        self._store = store

    def render(self, delivery: Delivery, now: float) -> tuple[bytes, dict[str, str]]:
        side = self._side
        if side is None:
            raise LookupError("the sandbox has no Alipay keys: set KNOWPAY_SANDBOX_ALIPAY_PRIVATE_KEY, "
                              "KNOWPAY_SANDBOX_ALIPAY_APP_PUBLIC_KEY, KNOWPAY_ALIPAY_APP_ID and KNOWPAY_ALIPAY_SELLER_ID")
        if delivery.merchant_id != side.merchant_id:
            raise LookupError(f"trade {delivery.trade_no} belongs to {delivery.merchant_id!r}, not this app")
        trade = self._store.trade(delivery.trade_no, now=now)
        if trade is None:
            raise LookupError(f"no trade {delivery.trade_no}")
        facts = json.loads(delivery.body)
        fields = self.fields(side, trade, facts, now)
        fields["sign_type"] = "RSA2"
        fields["sign"] = rsa2_sign(side.private_key, notification_content(fields))
        return urlencode(fields).encode("ascii"), {"Content-Type": FORM_CONTENT_TYPE}

    @staticmethod
    def fields(side: AlipaySide, trade: Trade, facts: dict, now: float) -> dict[str, str]:
        extra = _extra(trade)
        paid = trade.paid_at is not None
        fields = {
            "notify_time": _wire_time(now), "notify_type": "trade_status_sync", "notify_id": facts["notify_id"],
            "charset": "utf-8", "version": "1.0", "app_id": side.app_id, "auth_app_id": side.app_id,
            "seller_id": side.seller_id, "out_trade_no": trade.out_trade_no, "trade_no": trade.trade_no,
            "subject": trade.subject, "total_amount": to_yuan(trade.amount), "gmt_create": _wire_time(trade.created_at),
            "buyer_id": extra.get("buyer_id", ""), "buyer_logon_id": extra.get("buyer_logon_id", ""),
        }
        if paid:
            pays_with = "PCREDIT" if extra.get("extend_params") else "ALIPAYACCOUNT"  # Huabei, or the balance
            fields.update(receipt_amount=to_yuan(trade.amount), invoice_amount=to_yuan(trade.amount),
                          buyer_pay_amount=to_yuan(trade.amount), point_amount="0.00",
                          gmt_payment=_wire_time(trade.paid_at),
                          fund_bill_list=json.dumps([{"amount": to_yuan(trade.amount), "fundChannel": pays_with}],
                                                    separators=(",", ":")))
        if facts.get("type") == "refund":
            refunded_at = facts.get("refunded_at")
            moment = datetime.fromisoformat(refunded_at) if refunded_at else None
            fields.update(trade_status=_alipay_status(trade), out_biz_no=facts["out_refund_no"],
                          # Alipay reports the trade's refunded total here, not this refund's amount.
                          refund_fee=to_yuan(trade.amount_refunded),
                          gmt_refund=moment.astimezone(ALIPAY_TZ).strftime(TIME_FORMAT + ".%f")[:-3]
                          if moment else _wire_time(now))
            if trade.amount_refunded >= trade.amount:
                fields["gmt_close"] = fields["gmt_refund"][:19]
        elif facts.get("status") == TradeStatus.SUCCESS:
            fields["trade_status"] = "TRADE_SUCCESS"
        else:  # the buyer declined on the pay page: Alipay closes the trade
            fields.update(trade_status="TRADE_CLOSED", gmt_close=_wire_time(trade.decided_at) or _wire_time(now))
        return {k: v for k, v in fields.items() if v not in (None, "")}

    def acknowledged(self, status: int, text: str) -> bool:
        return status == 200 and text == ACKNOWLEDGED_BODY


# -- install -----------------------------------------------------------------------------------------

def install(app: Flask, gateway: Gateway, settings: Settings) -> AlipayFormat:
    """Add Alipay's endpoints when its keys are configured; the wire format is returned either way."""
    side = AlipaySide.from_settings(settings)
    wire = AlipayFormat(side, gateway.store)
    if side is None:
        log.info("sandbox: no Alipay keys configured, /alipay/gateway.do is off")
        return wire
    _AlipayGateway(gateway, side).register(app)
    return wire


class _AlipayGateway:
    """The routes, and what Alipay does for each method."""

    def __init__(self, gateway: Gateway, side: AlipaySide) -> None:
        self.gateway = gateway
        self.store: SandboxStore = gateway.store
        self.side = side

    def register(self, app: Flask) -> None:
        app.add_url_rule("/alipay/gateway.do", "alipay_gateway", self.serve, methods=["GET", "POST"])
        app.add_url_rule("/alipay/bills/<name>.zip", "alipay_bill", self.bill_file, methods=["GET"])

    # -- the door ----------------------------------------------------------------------------------

    def serve(self):
        method = ""
        try:
            params = self._params()
            method = params.get("method", "")
            self._authenticate(params, method)
            biz = self._biz(params)
            if method in PAGE_METHODS:
                trade = self._open_trade(method, params, biz)
                # The buyer's browser goes on to the cashier, the shared pay page (303: a posted form becomes a GET).
                return redirect(url_for("pay_page", trade_no=trade.trade_no),
                                code=302 if request.method == "GET" else 303)
            handler = getattr(self, "_" + method.replace(".", "_"))
            content = {"code": "10000", "msg": "Success", **handler(params, biz)}
            return self._answer(method, content, signed=True)
        except Refusal as refusal:
            if method in PAGE_METHODS:
                return render_template("error.html", message=f"{refusal.sub_code}: {refusal.sub_msg}"), 400
            key = response_key(method) if method in API_METHODS else "error_response"
            return self._answer(method, refusal.content, signed=refusal.signed, key=key)

    def _params(self) -> dict[str, str]:
        params: dict[str, str] = {}
        for source in (request.args, request.form):
            for name in source:
                values = source.getlist(name)
                if len(values) > 1 or name in params:
                    raise Refusal("40002", "isv.invalid-parameter", f"参数 {name} 重复", signed=False)
                params[name] = values[0]
        return params

    def _authenticate(self, params: dict[str, str], method: str) -> None:
        """Alipay's checks at the door, in its order; a refusal here is unsigned."""
        for name in ("app_id", "method", "sign_type", "sign", "timestamp", "version"):
            if not params.get(name):
                raise Refusal("40001", f"isv.missing-{name.replace('_', '-')}", f"缺少必选参数 {name}",
                              signed=False)
        if method not in API_METHODS and method not in PAGE_METHODS:
            raise Refusal("40002", "isv.invalid-method", "不存在的方法名", signed=False)
        if params["app_id"] != self.side.app_id:
            raise Refusal("40002", "isv.invalid-app-id", "无效的AppID参数", signed=False)
        if params.get("charset", "utf-8").lower() != "utf-8":
            raise Refusal("40002", "isv.invalid-charset", "字符集错误 (the sandbox speaks utf-8)", signed=False)
        if params["sign_type"] != "RSA2":
            raise Refusal("40002", "isv.invalid-signature-type", "无效的签名类型", signed=False)
        try:
            datetime.strptime(params["timestamp"], TIME_FORMAT)
        except ValueError:
            raise Refusal("40002", "isv.invalid-timestamp", "非法的时间戳参数", signed=False) from None
        if not rsa2_verify(self.side.app_public_key, request_content(params), params["sign"]):
            raise Refusal("40002", "isv.invalid-signature",
                          "验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配", signed=False)

    @staticmethod
    def _biz(params: dict[str, str]) -> dict:
        try:
            biz = json.loads(params.get("biz_content") or "{}")
        except (ValueError, RecursionError):
            raise Refusal("40002", "isv.invalid-parameter", "biz_content 不是 JSON") from None
        if not isinstance(biz, dict):
            raise Refusal("40002", "isv.invalid-parameter", "biz_content 必须是 JSON 对象")
        return biz

    def _answer(self, method: str, content: dict, *, signed: bool, key: str | None = None) -> Response:
        """Alipay's answer shape: {"<method>_response": {...}, "sign": "..."}, signing the member's exact text."""
        text = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
        name = key or response_key(method)
        body = f'{{"{name}":{text}'
        if signed:
            body += f',"sign":"{rsa2_sign(self.side.private_key, text)}"'
        return Response(body + "}", content_type="application/json;charset=utf-8")

    # -- trades ------------------------------------------------------------------------------------

    def _open_trade(self, method: str, params: dict[str, str], biz: dict) -> Trade:
        now = time.time()
        out_trade_no = _text(biz, "out_trade_no", 64)
        amount = _amount(biz, "total_amount")
        subject = _text(biz, "subject", 256)
        notify_url = params.get("notify_url", "")
        if not notify_url.startswith(("http://", "https://")):
            raise _business("ACQ.INVALID_PARAMETER", "notify_url 必须是 http(s) 地址 (the sandbox needs one)")
        extra = {"method": method, "product_code": biz.get("product_code"), "seller_id": self.side.seller_id,
                 # The buyer who will scan or log in; Alipay's user ids are 16 digits from 2088.
                 "buyer_id": "2088" + "".join(secrets.choice("0123456789") for _ in range(12)),
                 "buyer_logon_id": "buy***@sandbox.example"}
        installments = _extend_params(biz)
        if installments:
            extra["extend_params"] = installments
        try:
            trade, created = self.store.create_trade(
                self.side.merchant_id, out_trade_no=out_trade_no, amount=amount, currency=CURRENCY.upper(),
                subject=subject, notify_url=notify_url, return_url=params.get("return_url", ""),
                expires_at=_expires_at(biz, now), now=now, channel="alipay", extra=extra)
        except GatewayError as exc:
            raise _business("ACQ.CONTEXT_INCONSISTENT", f"交易信息被篡改 ({exc.message})") from None
        if not created and trade.status == TradeStatus.SUCCESS:
            raise _business("ACQ.TRADE_HAS_SUCCESS", "交易已被支付")
        if not created and trade.status != TradeStatus.WAIT_BUYER_PAY:
            raise _business("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
        return trade

    def _find_trade(self, biz: dict) -> Trade:
        now = time.time()
        if biz.get("out_trade_no"):
            trade = self.store.find_trade(self.side.merchant_id, _text(biz, "out_trade_no", 64), now=now)
        elif biz.get("trade_no"):
            trade = self.store.trade(_text(biz, "trade_no", 64), now=now)
        else:
            raise Refusal("40002", "isv.missing-parameter", "out_trade_no 和 trade_no 不能同时为空")
        if trade is None or trade.merchant_id != self.side.merchant_id or trade.channel != "alipay":
            raise _business("ACQ.TRADE_NOT_EXIST", "交易不存在")
        return trade

    def _trade_view(self, trade: Trade) -> dict:
        extra = _extra(trade)
        view = {"trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no,
                "buyer_logon_id": extra.get("buyer_logon_id", ""), "trade_status": _alipay_status(trade),
                "total_amount": to_yuan(trade.amount)}
        if trade.paid_at is not None:
            view.update(buyer_user_id=extra.get("buyer_id", ""), send_pay_date=_wire_time(trade.paid_at),
                        receipt_amount=to_yuan(trade.amount), buyer_pay_amount=to_yuan(trade.amount),
                        invoice_amount=to_yuan(trade.amount), point_amount="0.00")
        return view

    def _public_url(self) -> str:
        config = self.gateway.config
        return config.url if config.url_is_set else request.host_url.rstrip("/")

    def _alipay_trade_precreate(self, params: dict[str, str], biz: dict) -> dict:
        trade = self._open_trade("alipay.trade.precreate", params, biz)
        return {"out_trade_no": trade.out_trade_no, "qr_code": f"{self._public_url()}/pay/{trade.trade_no}"}

    def _alipay_trade_query(self, params: dict[str, str], biz: dict) -> dict:
        return self._trade_view(self._find_trade(biz))

    def _alipay_trade_close(self, params: dict[str, str], biz: dict) -> dict:
        trade = self._find_trade(biz)
        if trade.status == TradeStatus.WAIT_BUYER_PAY:
            trade = self.store.close_trade(self.side.merchant_id, trade.out_trade_no, now=time.time()) or trade
            if trade.status == TradeStatus.CLOSED:
                return {"trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no}
        # Paid (or closed already): Alipay will not close it.
        raise _business("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")

    # -- refunds -----------------------------------------------------------------------------------

    def _alipay_trade_refund(self, params: dict[str, str], biz: dict) -> dict:
        trade = self._find_trade(biz)
        amount = _amount(biz, "refund_amount")
        # Without out_request_no Alipay takes the out_trade_no: one full refund per trade.
        out_request_no = _text(biz, "out_request_no", 64) if biz.get("out_request_no") else trade.out_trade_no
        reason = biz.get("refund_reason")
        try:
            refund, trade, created = self.store.create_refund(
                self.side.merchant_id, out_trade_no=trade.out_trade_no, out_refund_no=out_request_no,
                amount=amount, reason=reason[:256] if isinstance(reason, str) and reason else None,
                notify_url=None, now=time.time())
        except GatewayError as exc:
            sub = {"trade_not_found": ("ACQ.TRADE_NOT_EXIST", "交易不存在"),
                   "trade_not_paid": ("ACQ.TRADE_STATUS_ERROR", "交易状态不合法"),
                   "refund_exceeds_trade": ("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限"),
                   "out_refund_no_conflict": ("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改")}.get(exc.code)
            if sub is None:
                raise
            raise _business(*sub) from None
        self.gateway.notifier.wake()
        extra = _extra(trade)
        # fund_change "N": this out_request_no was refunded before; no money moved this time.
        return {"trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no,
                "buyer_logon_id": extra.get("buyer_logon_id", ""), "buyer_user_id": extra.get("buyer_id", ""),
                "fund_change": "Y" if created else "N", "refund_fee": to_yuan(trade.amount_refunded),
                "gmt_refund_pay": _wire_time(refund.refunded_at)}

    def _alipay_trade_fastpay_refund_query(self, params: dict[str, str], biz: dict) -> dict:
        trade = self._find_trade(biz)
        out_request_no = _text(biz, "out_request_no", 64)
        found = self.store.find_refund(self.side.merchant_id, out_request_no, now=time.time())
        if found is None or found[1].trade_no != trade.trade_no:
            # Alipay's way of saying "no such refund": success with nothing in it.
            return {"trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no}
        refund, _ = found
        return {"trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no, "out_request_no": out_request_no,
                "total_amount": to_yuan(trade.amount), "refund_amount": to_yuan(refund.amount),
                "refund_status": "REFUND_SUCCESS", "gmt_refund_pay": _wire_time(refund.refunded_at)}

    # -- bills -------------------------------------------------------------------------------------

    def _alipay_data_dataservice_bill_downloadurl_query(self, params: dict[str, str], biz: dict) -> dict:
        if biz.get("bill_type") != "trade":
            raise Refusal("40002", "isv.invalid-parameter", "bill_type 只支持 trade")
        day = _bill_day(biz.get("bill_date"))
        if day > datetime.now(ALIPAY_TZ).date():
            raise _business("isp.bill_not_exist", "账单不存在")
        name = f"{self.side.account}_{day:%Y%m%d}"
        expires = str(int(time.time()) + BILL_LINK_SECONDS)
        query = urlencode({"expires": expires, "token": self._bill_token(name, expires)})
        return {"bill_download_url": f"{self._public_url()}/alipay/bills/{name}.zip?{query}"}

    def _bill_token(self, name: str, expires: str) -> str:
        message = f"alipay-bill|{self.side.merchant_id}|{name}|{expires}".encode()
        return hmac.new(self.gateway.config.secret.encode("utf-8"), message, hashlib.sha256).hexdigest()

    def bill_file(self, name: str):
        expires, token = request.args.get("expires", ""), request.args.get("token", "")
        match = _BILL_NAME.match(name)
        if not match or match.group(1) != self.side.account:
            return Response("no such bill", status=404, content_type="text/plain")
        if not (expires.isascii() and expires.isdigit()) or int(expires) < time.time() or \
                not hmac.compare_digest(self._bill_token(name, expires), token):
            return Response("this bill link is invalid or has expired", status=403, content_type="text/plain")
        day = datetime.strptime(match.group(2), "%Y%m%d").date()
        return Response(self._bill_zip(day), content_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv.zip"'})

    def _bill_zip(self, day: date) -> bytes:
        """Alipay's trade bill of one Beijing day: a zip of the 业务明细 CSV and its 汇总 summary, in GBK."""
        start = datetime(day.year, day.month, day.day, tzinfo=ALIPAY_TZ)
        end = start + timedelta(days=1)
        entries = self.store.bill(self.side.merchant_id, start=start.timestamp(), end=end.timestamp(),
                                  now=time.time())
        entries = [e for e in entries if e.trade.channel == "alipay"]
        detail, totals = io.StringIO(), {"payment": [0, 0, 0], "refund": [0, 0, 0]}
        writer = csv.writer(detail, lineterminator="\r\n")
        detail.write("#支付宝业务明细查询\r\n")
        detail.write(f"#账号：[{self.side.account}]\r\n")
        detail.write(f"#起始日期：[{start:%Y年%m月%d日 %H:%M:%S}]   终止日期：[{end:%Y年%m月%d日 %H:%M:%S}]\r\n")
        detail.write("#-----------------------------------------业务明细列表----------------------------------------\r\n")
        writer.writerow(BILL_COLUMNS)
        for entry in entries:
            trade, refund = entry.trade, entry.refund
            sign = -1 if entry.kind == "refund" else 1  # refunds are money out; their fee comes back
            totals[entry.kind][0] += 1
            totals[entry.kind][1] += entry.amount
            totals[entry.kind][2] += entry.fee
            # Alipay ends number-like cells with a tab so spreadsheets keep every digit.
            writer.writerow([
                trade.trade_no + "\t", trade.out_trade_no + "\t", "退款" if refund else "交易", trade.subject,
                _wire_time(trade.created_at), _wire_time(entry.occurred_at), "", "", "", "",
                _extra(trade).get("buyer_logon_id", ""), to_yuan(sign * entry.amount), to_yuan(sign * entry.amount),
                "0.00", "0.00", "0.00", "0.00", "0.00", "", "0.00", "0.00",
                refund.out_refund_no + "\t" if refund else "", to_yuan(-sign * entry.fee), "0.00", ""])
        detail.write("#-----------------------------------------业务明细列表结束------------------------------------\r\n")
        paid, refunded = totals["payment"], totals["refund"]
        detail.write(f"#交易合计：{paid[0]}笔，商家实收：￥{to_yuan(paid[1])}元，商家优惠：￥0.00元\r\n")
        detail.write(f"#退款合计：{refunded[0]}笔，商家实收：-￥{to_yuan(refunded[1])}元，商家优惠：￥0.00元\r\n")
        detail.write(f"#导出时间：[{datetime.now(ALIPAY_TZ):%Y年%m月%d日 %H:%M:%S}]\r\n")
        summary = io.StringIO()
        summary_writer = csv.writer(summary, lineterminator="\r\n")
        summary.write("#支付宝业务汇总查询\r\n")
        summary.write(f"#账号：[{self.side.account}]\r\n")
        summary_writer.writerow(["门店编号", "门店名称", "交易订单总笔数", "退款订单总笔数", "订单金额（元）",
                                 "商家实收（元）", "服务费（元）", "实收净额（元）"])
        net = paid[1] - refunded[1]
        summary_writer.writerow(["", "合计", paid[0], refunded[0], to_yuan(net), to_yuan(net),
                                 to_yuan(refunded[2] - paid[2]), to_yuan(net - paid[2] + refunded[2])])
        out = io.BytesIO()
        stem = f"{self.side.account}_{day:%Y%m%d}"
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(f"{stem}_业务明细.csv", detail.getvalue().encode("gbk", "replace"))
            archive.writestr(f"{stem}_业务明细(汇总).csv", summary.getvalue().encode("gbk", "replace"))
        return out.getvalue()


# -- reading biz_content -------------------------------------------------------------------------------

def _text(biz: dict, name: str, max_length: int) -> str:
    value = biz.get(name)
    if not isinstance(value, str) or not value.strip():
        raise Refusal("40002", "isv.invalid-parameter" if name in biz else "isv.missing-parameter",
                      f"{name} 必须是非空字符串")
    if len(value) > max_length:
        raise Refusal("40002", "isv.invalid-parameter", f"{name} 超过 {max_length} 个字符")
    return value


def _amount(biz: dict, name: str) -> int:
    value = biz.get(name)
    try:
        # A string of yuan with at most two decimals; Alipay also takes a JSON number, read exactly as written.
        amount = parse_major(value if isinstance(value, str) else json.dumps(value), CURRENCY)
    except (InvalidRequest, TypeError):
        raise Refusal("40002", "isv.invalid-parameter", f"{name} 必须是以元为单位、最多两位小数的金额") from None
    if not 0 < amount <= MAX_YUAN_AMOUNT:
        raise Refusal("40002", "isv.invalid-parameter", f"{name} 取值范围 [0.01,100000000]")
    return amount


def _extend_params(biz: dict) -> dict | None:
    extend = biz.get("extend_params")
    if extend is None:
        return None
    if not isinstance(extend, dict):
        raise Refusal("40002", "isv.invalid-parameter", "extend_params 必须是 JSON 对象")
    if "hb_fq_num" not in extend:
        return None
    if extend.get("hb_fq_num") not in [str(n) for n in INSTALLMENTS]:
        raise _business("ACQ.INVALID_PARAMETER", "hb_fq_num 只能是 3、6 或 12")
    if str(extend.get("hb_fq_seller_percent", "0")) not in ("0", "100"):
        raise _business("ACQ.INVALID_PARAMETER", "hb_fq_seller_percent 只能是 0 或 100")
    return {"hb_fq_num": extend["hb_fq_num"], "hb_fq_seller_percent": str(extend.get("hb_fq_seller_percent", "0"))}


def _expires_at(biz: dict, now: float) -> float:
    if biz.get("time_expire"):
        try:
            local = datetime.strptime(str(biz["time_expire"]), TIME_FORMAT).replace(tzinfo=ALIPAY_TZ)
        except ValueError:
            raise Refusal("40002", "isv.invalid-parameter", "time_expire 格式为 yyyy-MM-dd HH:mm:ss") from None
        return local.timestamp()
    express = str(biz.get("timeout_express") or "")
    if express == "1c":  # closes at midnight, Beijing time
        tomorrow = datetime.fromtimestamp(now, ALIPAY_TZ).date() + timedelta(days=1)
        return datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=ALIPAY_TZ).timestamp()
    match = _TIMEOUT_EXPRESS.match(express)
    if express and not match:
        raise Refusal("40002", "isv.invalid-parameter", "timeout_express 取值范围 1m～15d")
    if not match:
        return now + DEFAULT_TIMEOUT.total_seconds()
    unit = {"m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return now + min(int(match.group(1)) * unit, 15 * 86400)


def _bill_day(value: object) -> date:
    try:
        return datetime.strptime(str(value), "%Y-%m-%d").date()
    except ValueError:
        raise Refusal("40002", "isv.invalid-parameter", "bill_date 格式为 yyyy-MM-dd（日账单）") from None


# -- the demo ----------------------------------------------------------------------------------------

def demo_env(instance_path: Path, sandbox_url: str | None = None) -> dict[str, str]:
    """Every KNOWPAY_ALIPAY_* and KNOWPAY_SANDBOX_ALIPAY_* variable that lets KnowPay and the sandbox talk,
    with key pairs made once in the instance folder ("alipay-app" is ours, "alipay-platform" Alipay's)."""
    folder = keys_folder(Path(instance_path))
    app_private, app_public = demo_key_pair(folder, "alipay-app")
    platform_private, platform_public = demo_key_pair(folder, "alipay-platform")
    base = (sandbox_url or os.environ.get("KNOWPAY_SANDBOX_URL") or DEFAULT_URL).rstrip("/")
    return {
        "KNOWPAY_ALIPAY_APP_ID": DEMO_APP_ID,
        "KNOWPAY_ALIPAY_SELLER_ID": DEMO_SELLER_ID,
        "KNOWPAY_ALIPAY_PRIVATE_KEY": str(app_private),
        "KNOWPAY_ALIPAY_PUBLIC_KEY": str(platform_public),
        "KNOWPAY_ALIPAY_GATEWAY": f"{base}/alipay/gateway.do",
        "KNOWPAY_SANDBOX_ALIPAY_PRIVATE_KEY": str(platform_private),
        "KNOWPAY_SANDBOX_ALIPAY_APP_PUBLIC_KEY": str(app_public),
    }
