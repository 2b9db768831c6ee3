"""Fakes that record calls instead of mocks: a payment channel whose answers the test sets."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field

from knowpay.channels.base import (
    Acknowledgement,
    BillLine,
    Action,
    ChannelRefund,
    ChannelStatus,
    Created,
    Notification,
    NotificationRejected,
    PaymentRequest,
    RefundRequest,
)
from knowpay.domain.errors import ChannelUnavailable


@dataclass
class FakeChannel:
    """Speaks a trivial JSON notification format; `trades` is what the 'channel' believes."""

    name: str = "sandbox"
    fee_bps: int = 60
    secret: str = "fake-secret"
    trades: dict = field(default_factory=dict)  # payment_id -> status at the channel
    calls: list = field(default_factory=list)
    refunds: dict = field(default_factory=dict)
    unavailable: bool = False
    bills: dict = field(default_factory=dict)  # day -> list of BillLine fields
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _call(self, name: str, *args) -> None:
        with self.lock:
            self.calls.append((name, *args))
        if self.unavailable:
            raise ChannelUnavailable(f"fake {self.name} is down")

    def create(self, request: PaymentRequest) -> Created:
        self._call("create", request.payment_id)
        self.trades.setdefault(request.payment_id, {"status": "pending", "amount": request.amount,
                                                    "currency": request.currency})
        return Created(Action("qr_code", {"code_url": f"fake://pay/{request.payment_id}"}),
                       channel_trade_no=f"T{request.payment_id[-10:]}")

    def notification_body(self, payment_id: str, amount: int, currency: str = "cny", status: str = "succeeded",
                          **extra) -> bytes:
        return json.dumps({"secret": self.secret, "kind": "payment", "payment_id": payment_id, "status": status,
                           "amount": amount, "currency": currency, "trade_no": f"T{payment_id[-10:]}",
                           **extra}).encode()

    def parse_notification(self, headers: dict[str, str], body: bytes) -> Notification:
        try:
            data = json.loads(body)
        except ValueError:
            raise NotificationRejected("malformed body") from None
        if data.get("secret") != self.secret:
            raise NotificationRejected("bad signature")
        return Notification(kind=data.get("kind", "payment"), payment_id=data["payment_id"], status=data["status"],
                            amount=data["amount"], currency=data["currency"], channel_trade_no=data.get("trade_no"),
                            refund_id=data.get("refund_id"), event_id=data.get("event_id"))

    def acknowledge(self, ok: bool, message: str = "") -> Acknowledgement:
        return Acknowledgement(200, "success") if ok else Acknowledgement(400, "failure")

    def query(self, payment_id: str) -> ChannelStatus:
        self._call("query", payment_id)
        trade = self.trades.get(payment_id)
        if trade is None:
            return ChannelStatus("not_found")
        return ChannelStatus(trade["status"], f"T{payment_id[-10:]}", trade["amount"], trade["currency"])

    def close(self, payment_id: str) -> ChannelStatus:
        self._call("close", payment_id)
        trade = self.trades.get(payment_id)
        if trade is None:
            return ChannelStatus("not_found")
        if trade["status"] == "pending":
            trade["status"] = "closed"
        return ChannelStatus(trade["status"], f"T{payment_id[-10:]}", trade["amount"], trade["currency"])

    def refund(self, request: RefundRequest) -> ChannelRefund:
        self._call("refund", request.refund_id, request.amount)
        self.refunds.setdefault(request.refund_id, request.amount)
        return ChannelRefund("succeeded", f"R{request.refund_id[-10:]}")

    def query_refund(self, request: RefundRequest) -> ChannelRefund:
        self._call("query_refund", request.refund_id)
        if request.refund_id in self.refunds:
            return ChannelRefund("succeeded", f"R{request.refund_id[-10:]}")
        return ChannelRefund("failed", failure_code="not_found")

    def fetch_bill(self, day: str) -> bytes:
        self._call("fetch_bill", day)
        return json.dumps(self.bills.get(day, [])).encode()

    def parse_bill(self, data: bytes):
        return [BillLine(**line) for line in json.loads(data)]

    def count(self, name: str) -> int:
        return sum(1 for call in self.calls if call[0] == name)


class LaterClock:
    """Another clock moved on by `delta`: lets a test jump past an expiry, a backoff or a settlement period."""

    def __init__(self, base, delta) -> None:
        self.base, self.delta = base, delta

    def now(self):
        return self.base.now() + self.delta


def buy(client, buyer, product_id: str, fake_channel: FakeChannel, channel: str = "sandbox") -> dict:
    """`buyer` orders one product and pays through the API: a wallet pays at once, any other channel
    by the fake channel's signed notification. Returns the payment as created."""
    order = client.post("/api/v1/orders", headers=buyer.headers, json={"items": [{"product_id": product_id}]})
    payment = client.post(f"/api/v1/orders/{order.get_json()['id']}/payments", headers=buyer.headers,
                          json={"channel": channel}).get_json()
    if channel != "wallet":
        body = fake_channel.notification_body(payment["id"], payment["amount"])
        assert client.post("/notify/sandbox", data=body, content_type="application/json").status_code == 200
    return payment
