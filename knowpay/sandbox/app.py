"""The sandbox gateway as a Flask app: the signed merchant API, the buyer's pay page, and the daily bill.

It stands in for a real payment channel on a developer's machine (`knowpay sandbox`): KnowPay opens
trades, a person presses Pay or Decline at the trade's URL, and the gateway notifies KnowPay.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from flask import Flask, Response, abort, g, jsonify, redirect, render_template, request, url_for

from knowpay.config import ConfigError, Settings
from knowpay.domain.money import EXPONENTS, MAX_AMOUNT, SYMBOLS, format_major
from knowpay.sandbox import SandboxConfig, SignatureError, isoformat, parse_isoformat, verify_signature
from knowpay.sandbox.gateways import gateway_plugins
from knowpay.sandbox.notifier import Notifier, SandboxFormat, WireFormat
from knowpay.sandbox.store import GatewayError, Refund, SandboxStore, Trade, TradeStatus

BILL_COLUMNS = ("kind", "out_trade_no", "trade_no", "out_refund_no", "amount", "currency", "status",
                "occurred_at", "fee")
MAX_BODY = 64 * 1024
SECURITY_HEADERS = {
    # The pay page is plain HTML and a form: no script anywhere, styles only from the page itself.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


@dataclass
class Gateway:
    """What the running gateway holds; `app.extensions["sandbox"]`."""

    config: SandboxConfig
    store: SandboxStore
    notifier: Notifier
    timezone: ZoneInfo

    @property
    def secrets(self) -> dict[str, str]:
        return {self.config.merchant_id: self.config.secret}


def create_sandbox_app(settings: Settings, *, notify_sync: bool = False) -> Flask:
    """The gateway app. Notifications are sent by a background thread, or — with `notify_sync` — only
    when the caller runs `app.extensions["sandbox"].notifier.deliver_due()` (tests)."""
    if settings.is_production:
        raise ConfigError("the sandbox gateway runs only outside production")
    config = SandboxConfig.from_settings(settings)
    store = SandboxStore(settings.instance_path / "sandbox.sqlite3", fee_bps=config.fee_bps)
    formats: dict[str, WireFormat] = {"sandbox": SandboxFormat({config.merchant_id: config.secret})}
    notifier = Notifier(store, formats)
    gateway = Gateway(config, store, notifier, ZoneInfo(settings.timezone))

    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.extensions["sandbox"] = gateway
    _register(app, gateway)
    # Each real channel's imitation (Alipay's gateway.do, WeChat Pay v3, Stripe /v1) plugs in here.
    for name, plugin in gateway_plugins().items():
        formats[name] = plugin.install(app, gateway, settings)
    if not notify_sync:
        notifier.start()
    return app


# -- reading requests -----------------------------------------------------------------------------

def _authenticate(gateway: Gateway) -> str:
    """The signing merchant of this API request; a POST signs its body, a GET its query string."""
    message = request.get_data(cache=True) if request.method == "POST" else request.query_string
    try:
        return verify_signature(dict(request.headers), message, gateway.secrets, now=time.time())
    except SignatureError as exc:
        raise GatewayError(401, exc.code, exc.message) from None


def _json_body() -> dict:
    try:
        data = json.loads(request.get_data(cache=True) or b"null")
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise GatewayError(400, "invalid_json", "the body is not JSON") from None
    if not isinstance(data, dict):
        raise GatewayError(400, "invalid_json", "the body must be a JSON object")
    return data


def _text(data: dict, name: str, *, max_length: int = 64) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise GatewayError(400, "invalid_parameter", f"`{name}` must be a non-empty string")
    if len(value) > max_length:
        raise GatewayError(400, "invalid_parameter", f"`{name}` is longer than {max_length} characters")
    return value


def _optional_text(data: dict, name: str, *, max_length: int) -> str | None:
    return None if data.get(name) is None else _text(data, name, max_length=max_length)


def _amount(data: dict) -> int:
    value = data.get("amount")
    # Integer minor units only: a float (even 9900.0) or a string is refused, never rounded.
    if isinstance(value, bool) or not isinstance(value, int):
        raise GatewayError(400, "invalid_amount", "`amount` must be an integer number of minor units")
    if not 0 < value <= MAX_AMOUNT:
        raise GatewayError(400, "invalid_amount", "`amount` must be positive and not absurdly large")
    return value


def _currency(data: dict) -> str:
    value = _text(data, "currency", max_length=3)
    if value.lower() not in EXPONENTS or value.lower() == "coin":
        raise GatewayError(400, "invalid_currency", f"unsupported currency {value!r}")
    return value.upper()


def _url(data: dict, name: str) -> str:
    value = _text(data, name, max_length=2048)
    if not value.startswith(("http://", "https://")):
        raise GatewayError(400, "invalid_parameter", f"`{name}` must be an http(s) URL")
    return value


def _optional_url(data: dict, name: str) -> str | None:
    return None if data.get(name) is None else _url(data, name)


def _moment(data: dict, name: str) -> float:
    value = _text(data, name, max_length=40)
    try:
        return parse_isoformat(value).timestamp()
    except ValueError:
        raise GatewayError(400, "invalid_parameter", f"`{name}` must be an ISO 8601 time") from None


# -- writing answers --------------------------------------------------------------------------------

def _public_url(gateway: Gateway) -> str:
    # KNOWPAY_SANDBOX_URL when set (a phone on the LAN must reach the pay page), else how we were called.
    return gateway.config.url if gateway.config.url_is_set else request.host_url.rstrip("/")


def _trade_json(gateway: Gateway, trade: Trade) -> dict:
    pay_url = f"{_public_url(gateway)}/pay/{trade.trade_no}"
    return {"trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no, "status": trade.status,
            "amount": trade.amount, "currency": trade.currency, "amount_refunded": trade.amount_refunded,
            "paid_at": isoformat(trade.paid_at), "expires_at": isoformat(trade.expires_at),
            "pay_url": pay_url, "code_url": pay_url}


def _refund_json(refund: Refund, trade: Trade) -> dict:
    return {"refund_no": refund.refund_no, "out_refund_no": refund.out_refund_no, "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no, "status": refund.status, "amount": refund.amount,
            "currency": trade.currency, "refunded_at": isoformat(refund.refunded_at)}


def _display_amount(trade: Trade) -> str:
    currency = trade.currency.lower()
    return SYMBOLS.get(currency, trade.currency + " ") + format_major(trade.amount, currency)


def _bill_day(text: str | None) -> date:
    try:
        return date.fromisoformat(text or "")
    except ValueError:
        raise GatewayError(400, "invalid_parameter", "`date` must look like YYYY-MM-DD") from None


def _bill_csv(gateway: Gateway, merchant_id: str, day: date) -> str:
    tz = gateway.timezone
    start = datetime(day.year, day.month, day.day, tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=tz)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(BILL_COLUMNS)
    entries = gateway.store.bill(merchant_id, start=start.timestamp(), end=end.timestamp(), now=time.time())
    for entry in entries:
        occurred_at = datetime.fromtimestamp(entry.occurred_at, tz).isoformat(timespec="seconds")
        writer.writerow([entry.kind, entry.trade.out_trade_no, entry.trade.trade_no,
                         entry.refund.out_refund_no if entry.refund else "", entry.amount,
                         entry.trade.currency, entry.status, occurred_at, entry.fee])
    return out.getvalue()


_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-]+(:\d{1,5})?$")


def _redirect_url() -> str | None:
    """The `redirect_url` a merchant appended to an H5 cashier link, when it is a plain http(s) address
    (its origin goes into the page's CSP, so nothing but a host and port is let through there)."""
    url = request.args.get("redirect_url", "")
    if len(url) > 2048:
        return None
    parts = urlsplit(url)
    return url if _ORIGIN.match(f"{parts.scheme}://{parts.netloc}") else None


# -- routes -----------------------------------------------------------------------------------------

def _register(app: Flask, gateway: Gateway) -> None:
    store, notifier = gateway.store, gateway.notifier

    @app.errorhandler(GatewayError)
    def _refused(exc: GatewayError):
        if request.path.startswith("/pay/"):
            return render_template("error.html", message=exc.message), exc.status
        return jsonify(code=exc.code, message=exc.message), exc.status

    @app.after_request
    def _harden(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.before_request
    def _sign_check():
        if request.path.startswith("/api/"):
            g.merchant_id = _authenticate(gateway)

    @app.get("/healthz")
    def healthz():
        return "ok", 200, {"Content-Type": "text/plain"}

    @app.post("/api/trades")
    def create_trade():
        data = _json_body()
        expires_at = _moment(data, "expires_at")
        trade, created = store.create_trade(
            g.merchant_id, out_trade_no=_text(data, "out_trade_no"), amount=_amount(data),
            currency=_currency(data), subject=_text(data, "subject", max_length=256),
            notify_url=_url(data, "notify_url"), return_url=_url(data, "return_url"),
            expires_at=expires_at, now=time.time())
        return jsonify(_trade_json(gateway, trade)), 201 if created else 200

    @app.post("/api/trades/query")
    def query_trade():
        out_trade_no = _text(_json_body(), "out_trade_no")
        trade = store.find_trade(g.merchant_id, out_trade_no, now=time.time())
        if trade is None:
            return jsonify(status="NOT_FOUND", out_trade_no=out_trade_no)
        return jsonify(_trade_json(gateway, trade))

    @app.post("/api/trades/close")
    def close_trade():
        out_trade_no = _text(_json_body(), "out_trade_no")
        trade = store.close_trade(g.merchant_id, out_trade_no, now=time.time())
        if trade is None:
            return jsonify(status="NOT_FOUND", out_trade_no=out_trade_no)
        return jsonify(_trade_json(gateway, trade))

    @app.post("/api/trades/<trade_no>/simulate")
    def simulate(trade_no: str):
        result = _json_body().get("result")
        if result not in ("pay", "decline"):
            raise GatewayError(400, "invalid_parameter", '`result` must be "pay" or "decline"')
        trade = store.decide(trade_no, result, now=time.time(), merchant_id=g.merchant_id)
        notifier.wake()
        return jsonify(_trade_json(gateway, trade))

    @app.post("/api/refunds")
    def create_refund():
        data = _json_body()
        refund, trade, created = store.create_refund(
            g.merchant_id, out_trade_no=_text(data, "out_trade_no"),
            out_refund_no=_text(data, "out_refund_no"), amount=_amount(data),
            reason=_optional_text(data, "reason", max_length=256),
            notify_url=_optional_url(data, "notify_url"), now=time.time())
        notifier.wake()
        return jsonify(_refund_json(refund, trade)), 201 if created else 200

    @app.post("/api/refunds/query")
    def query_refund():
        out_refund_no = _text(_json_body(), "out_refund_no")
        found = store.find_refund(g.merchant_id, out_refund_no, now=time.time())
        if found is None:
            return jsonify(status="NOT_FOUND", out_refund_no=out_refund_no)
        return jsonify(_refund_json(*found))

    @app.get("/api/bills")
    def bill():
        day = _bill_day(request.args.get("date"))
        return Response(_bill_csv(gateway, g.merchant_id, day).encode("utf-8"),
                        content_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="sandbox-bill-{day}.csv"'})

    @app.get("/pay/<trade_no>")
    def pay_page(trade_no: str):
        trade = store.trade(trade_no, now=time.time())
        if trade is None:
            abort(404)
        back = _redirect_url()
        page = Response(render_template(
            "pay.html", trade=trade, amount=_display_amount(trade),
            payable=trade.status == TradeStatus.WAIT_BUYER_PAY, redirect_url=back,
            back_url=back or trade.return_url,
            expires_at=datetime.fromtimestamp(trade.expires_at, gateway.timezone)))
        if back:  # the Pay button's answer goes on to the merchant: form-action must allow its origin
            target = urlsplit(back)
            page.headers["Content-Security-Policy"] = SECURITY_HEADERS["Content-Security-Policy"].replace(
                "form-action 'self'", f"form-action 'self' {target.scheme}://{target.netloc}")
        return page

    @app.post("/pay/<trade_no>/<any(pay, decline):result>")
    def decide(trade_no: str, result: str):
        try:
            store.decide(trade_no, result, now=time.time())
        except GatewayError as exc:
            if exc.status != 409:  # already decided, closed or expired: the page says which
                raise
        notifier.wake()
        back = _redirect_url()
        if back:  # WeChat Pay's H5 cashier returns the buyer to the merchant's redirect_url when done
            return redirect(back, code=303)
        # Post/redirect/get: reloading the result page does not press the button again.
        return redirect(url_for("pay_page", trade_no=trade_no), code=303)

    @app.errorhandler(404)
    def _missing(_exc):
        if request.path.startswith("/api/"):
            return jsonify(code="not_found", message="no such endpoint"), 404
        return render_template("error.html", message="没有这笔交易 · No such trade"), 404
