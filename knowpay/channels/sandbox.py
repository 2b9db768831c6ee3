"""The `sandbox` channel: KnowPay's side of the local sandbox gateway that `knowpay sandbox` runs.

Signed JSON both ways (the protocol is in `knowpay.sandbox`); amounts are integer minor units on
the wire. The gateway's statuses are mapped to ours here, in one place. On only outside production.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime

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
from knowpay.config import Settings
from knowpay.domain.errors import ChannelUnavailable, Conflict, InvalidRequest, KnowPayError, NotFound
from knowpay.domain.money import check_amount
from knowpay.sandbox import SandboxConfig, SignatureError, parse_isoformat, signed_headers, verify_signature

# The gateway's words → ours.
TRADE_STATUSES = {"WAIT_BUYER_PAY": "pending", "SUCCESS": "succeeded", "DECLINED": "failed",
                  "CLOSED": "closed", "NOT_FOUND": "not_found"}
NOTIFIED_STATUSES = {"payment": {"SUCCESS": "succeeded", "DECLINED": "failed"},
                     "refund": {"REFUND_SUCCESS": "succeeded"}}
BILL_STATUSES = {("payment", "SUCCESS"): "succeeded", ("refund", "REFUND_SUCCESS"): "succeeded"}
QR_METHODS = (None, "qr")
REDIRECT_METHODS = ("page", "wap")
BILL_COLUMNS = ("kind", "out_trade_no", "trade_no", "out_refund_no", "amount", "currency", "status",
                "occurred_at", "fee")


def from_settings(settings: Settings) -> SandboxChannel | None:
    if settings.is_production:
        return None
    return SandboxChannel(SandboxConfig.from_settings(settings))


def _wire_time(moment: datetime) -> str:
    """Our naive-UTC (or aware) datetime → ISO 8601 UTC with a `Z`."""
    aware = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return aware.isoformat(timespec="seconds").replace("+00:00", "Z")


def _our_time(text: str) -> datetime:
    """An ISO 8601 time from the gateway → naive UTC, as KnowPay stores times. Raises ValueError."""
    return parse_isoformat(text).astimezone(UTC).replace(tzinfo=None)


def _is_amount(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


class SandboxChannel:
    """Talks to the sandbox gateway at `config.url` as merchant `config.merchant_id`."""

    name = "sandbox"

    def __init__(self, config: SandboxConfig, *, clock: Callable[[], float] = time.time,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> None:
        self.fee_bps = config.fee_bps
        self._config = config
        self._clock = clock
        self._http = SignedHttp(config.url, channel="The sandbox gateway", sign=self._sign, timeout=timeout,
                                trust_env=False)

    def _sign(self, outgoing: OutgoingRequest) -> dict[str, str]:
        message = outgoing.body if outgoing.method == "POST" else outgoing.query.encode("ascii")
        return signed_headers(self._config.merchant_id, self._config.secret, message, now=self._clock())

    # -- payments ----------------------------------------------------------------------------------

    def create(self, request: PaymentRequest) -> Created:
        check_amount(request.amount)
        if request.method not in QR_METHODS + REDIRECT_METHODS:
            raise InvalidRequest("method for sandbox must be qr, page or wap.", code="invalid_method",
                                 param="method")
        trade = self._call("/api/trades", {
            "out_trade_no": request.payment_id, "amount": request.amount,
            "currency": request.currency.upper(), "subject": request.subject or request.payment_id,
            "notify_url": request.notify_url, "return_url": request.return_url,
            "expires_at": _wire_time(request.expires_at)})
        trade_no, pay_url, code_url = (trade.get(k) for k in ("trade_no", "pay_url", "code_url"))
        if not all(isinstance(v, str) and v for v in (trade_no, pay_url, code_url)):
            raise ChannelUnavailable(
                "The sandbox gateway answered a trade without trade_no, pay_url or code_url.")
        if request.method in REDIRECT_METHODS:
            action = Action("redirect", {"url": pay_url})
        else:
            action = Action("qr_code", {"code_url": code_url})
        return Created(action=action, channel_trade_no=trade_no, extra={"pay_url": pay_url})

    def query(self, payment_id: str) -> ChannelStatus:
        return self._trade_status(self._call("/api/trades/query", {"out_trade_no": payment_id}))

    def close(self, payment_id: str) -> ChannelStatus:
        """Close the trade if nobody paid it yet; the answer says what it is now (a paid trade stays paid)."""
        return self._trade_status(self._call("/api/trades/close", {"out_trade_no": payment_id}))

    def _trade_status(self, trade: dict) -> ChannelStatus:
        status = TRADE_STATUSES.get(str(trade.get("status")))
        if status is None:
            raise ChannelUnavailable(
                f"The sandbox gateway answered an unknown trade status {trade.get('status')!r}.")
        if status == "not_found":
            return ChannelStatus("not_found")
        try:
            paid_at = _our_time(trade["paid_at"]) if trade.get("paid_at") else None
        except (TypeError, ValueError):
            raise ChannelUnavailable("The sandbox gateway answered an unreadable paid_at.") from None
        amount = trade.get("amount")
        currency = trade.get("currency")
        return ChannelStatus(status, channel_trade_no=trade.get("trade_no"),
                             amount=amount if _is_amount(amount) else None,
                             currency=currency.lower() if isinstance(currency, str) else None,
                             paid_at=paid_at)

    # -- notifications -----------------------------------------------------------------------------

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> Notification:
        """Verify a notification's signature, merchant and freshness and read it; else NotificationRejected.

        Amounts are reported as sent; comparing them with our payment is the caller's job.
        """
        try:
            verify_signature(headers, body, {self._config.merchant_id: self._config.secret},
                             now=self._clock())
        except SignatureError as exc:
            raise NotificationRejected(f"sandbox notification refused: {exc.message}") from None
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            raise NotificationRejected("sandbox notification refused: the body is not JSON") from None
        if not isinstance(data, dict):
            raise NotificationRejected("sandbox notification refused: the body is not a JSON object")
        return self._notification(data)

    def _notification(self, data: dict) -> Notification:
        def malformed(why: str) -> NotificationRejected:
            return NotificationRejected(f"sandbox notification refused: malformed body, {why}")

        if data.get("merchant_id") != self._config.merchant_id:
            raise NotificationRejected("sandbox notification refused: merchant_id in the body is not ours")
        kind = data.get("type")
        if kind not in NOTIFIED_STATUSES:
            raise malformed(f"unknown type {kind!r}")
        status = NOTIFIED_STATUSES[kind].get(str(data.get("status")))
        if status is None:
            raise malformed(f"unknown {kind} status {data.get('status')!r}")
        texts = ["notify_id", "out_trade_no", "trade_no", "currency"] + (
            ["out_refund_no", "refund_no"] if kind == "refund" else [])
        for name in texts:
            if not isinstance(data.get(name), str) or not data[name]:
                raise malformed(f"`{name}` is missing")
        if not _is_amount(data.get("amount")):
            raise malformed("`amount` must be a positive integer of minor units")
        if kind == "refund":
            moment_field = "refunded_at"
        else:
            moment_field = "paid_at" if status == "succeeded" else "decided_at"
        try:
            occurred_at = _our_time(data[moment_field]) if data.get(moment_field) else None
        except (TypeError, ValueError):
            raise malformed(f"`{moment_field}` is not an ISO 8601 time") from None
        details = {"merchant_id": data["merchant_id"], "channel_status": data["status"]}
        if kind == "refund":
            details["refund_no"] = data["refund_no"]
        elif status == "failed":
            details.update(code="declined", message="The buyer declined the payment at the sandbox gateway.")
        return Notification(kind=kind, payment_id=data["out_trade_no"], status=status, amount=data["amount"],
                            currency=data["currency"].lower(), channel_trade_no=data["trade_no"],
                            refund_id=data.get("out_refund_no") if kind == "refund" else None,
                            event_id=data["notify_id"], occurred_at=occurred_at, details=details)

    def acknowledge(self, ok: bool, message: str = "") -> Acknowledgement:
        # The gateway retries until it reads exactly `success`; `failure` asks it to try again later.
        return Acknowledgement(200, "success") if ok else Acknowledgement(400, "failure")

    # -- refunds -----------------------------------------------------------------------------------

    def refund(self, request: RefundRequest) -> ChannelRefund:
        check_amount(request.amount)
        answer = self._http.post_json("/api/refunds", {
            "out_trade_no": request.payment_id, "out_refund_no": request.refund_id, "amount": request.amount,
            "reason": request.reason, "notify_url": request.notify_url})
        return self._refund_result(answer)

    def query_refund(self, request: RefundRequest) -> ChannelRefund:
        answer = self._http.post_json("/api/refunds/query", {"out_refund_no": request.refund_id})
        return self._refund_result(answer)

    def _refund_result(self, answer: HttpAnswer) -> ChannelRefund:
        if not answer.ok:
            error = self._refusal(answer)
            if isinstance(error, ChannelUnavailable):
                raise error
            return ChannelRefund("failed", failure_code=error.code)  # the gateway refused: a result
        data = self._object(answer)
        if data.get("status") == "REFUND_SUCCESS":
            return ChannelRefund("succeeded", channel_refund_no=data.get("refund_no"))
        if data.get("status") == "NOT_FOUND":
            # Never reached the gateway (or not yet): not a failure, since sending it again is safe.
            return ChannelRefund("pending", failure_code="refund_not_found")
        raise ChannelUnavailable(
            f"The sandbox gateway answered an unknown refund status {data.get('status')!r}.")

    # -- bills -------------------------------------------------------------------------------------

    def fetch_bill(self, day: str) -> bytes:
        """The CSV statement of one day (YYYY-MM-DD, in the gateway's time zone)."""
        try:
            date.fromisoformat(day)
        except (TypeError, ValueError):
            raise InvalidRequest("day must look like YYYY-MM-DD.", code="invalid_date",
                                 param="date") from None
        answer = self._http.get("/api/bills", {"date": day})
        if not answer.ok:
            raise self._refusal(answer)
        return answer.body

    def parse_bill(self, data: bytes) -> list[BillLine]:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidRequest("The sandbox bill is not UTF-8.", code="invalid_bill") from None
        reader = csv.DictReader(io.StringIO(text))
        missing = set(BILL_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise InvalidRequest(f"The sandbox bill lacks the columns {', '.join(sorted(missing))}.",
                                 code="invalid_bill")
        return [self._bill_line(row, number) for number, row in enumerate(reader, start=2)]

    def _bill_line(self, row: dict, number: int) -> BillLine:
        status = BILL_STATUSES.get((row["kind"], row["status"]))
        amount, fee = row["amount"], row["fee"]
        if status is None or not (amount.isascii() and amount.isdigit() and fee.isascii() and fee.isdigit()):
            raise InvalidRequest(f"Line {number} of the sandbox bill cannot be read.", code="invalid_bill")
        try:
            occurred_at = _our_time(row["occurred_at"]) if row["occurred_at"] else None
        except ValueError:
            raise InvalidRequest(f"Line {number} of the sandbox bill has a bad time.",
                                 code="invalid_bill") from None
        return BillLine(kind=row["kind"], payment_id=row["out_trade_no"],
                        channel_trade_no=row["trade_no"] or None, amount=int(amount),
                        currency=row["currency"].lower(), status=status, occurred_at=occurred_at,
                        refund_id=row["out_refund_no"] or None, fee=int(fee))

    # -- answers -----------------------------------------------------------------------------------

    def _call(self, path: str, payload: dict) -> dict:
        answer = self._http.post_json(path, payload)
        if not answer.ok:
            raise self._refusal(answer)
        return self._object(answer)

    @staticmethod
    def _object(answer: HttpAnswer) -> dict:
        data = answer.json()
        if not isinstance(data, dict):
            raise ChannelUnavailable("The sandbox gateway answered something other than a JSON object.")
        return data

    @staticmethod
    def _refusal(answer: HttpAnswer) -> KnowPayError:
        """A 4xx from the gateway, as the error the caller would react to."""
        try:
            data = json.loads(answer.body)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            data = {}
        if not isinstance(data, dict):
            data = {}
        code = str(data.get("code") or "sandbox_refused")
        message = f"The sandbox gateway refused: {data.get('message') or f'HTTP {answer.status}'}."
        if answer.status in (401, 403):
            # Our merchant id or secret is not the gateway's: a configuration fault, not the buyer's.
            return ChannelUnavailable(
                message + " Check KNOWPAY_SANDBOX_MERCHANT_ID and KNOWPAY_SANDBOX_SECRET.")
        if answer.status == 404:
            return NotFound(message, code=code)
        if answer.status == 409:
            return Conflict(message, code=code)
        return InvalidRequest(message, code=code)
