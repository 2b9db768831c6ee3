"""The one interface every payment channel implements (DESIGN §5), and the values it trades in.

Adapters map the channel's own statuses to ours here, in one place each; the services never
see a channel's wire format.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from knowpay.domain.errors import KnowPayError


class NotificationRejected(KnowPayError):
    """A notification that failed verification (signature, merchant, freshness): changes nothing."""

    code = "notification_rejected"
    type = "invalid_request"


@dataclass(frozen=True)
class PaymentRequest:
    """What a channel needs to open a trade for one payment."""

    payment_id: str  # our id, sent as out_trade_no
    amount: int
    currency: str
    subject: str
    method: str | None
    notify_url: str
    return_url: str
    expires_at: datetime
    installments: int | None = None
    openid: str | None = None
    client_ip: str | None = None


@dataclass(frozen=True)
class Action:
    """What the buyer does next: `qr_code`, `redirect`, `client_secret`, `jsapi`, `bank_transfer`."""

    type: str
    data: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"type": self.type, **self.data}


@dataclass(frozen=True)
class Created:
    action: Action | None
    channel_trade_no: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Notification:
    """A verified notification, in our terms. `kind` is "payment" or "refund"."""

    kind: str
    payment_id: str
    status: str  # payment: succeeded | failed | pending; refund: succeeded | failed
    amount: int
    currency: str
    channel_trade_no: str | None = None
    refund_id: str | None = None
    event_id: str | None = None
    occurred_at: datetime | None = None
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Acknowledgement:
    """The exact HTTP answer a channel expects."""

    status: int
    body: str = ""
    content_type: str = "text/plain"


@dataclass(frozen=True)
class ChannelStatus:
    """The channel's view of one trade: succeeded | pending | failed | closed | not_found."""

    status: str
    channel_trade_no: str | None = None
    amount: int | None = None
    currency: str | None = None
    paid_at: datetime | None = None


@dataclass(frozen=True)
class RefundRequest:
    refund_id: str  # our id, sent as the channel's refund request number
    payment_id: str
    channel_trade_no: str | None
    amount: int
    payment_amount: int
    currency: str
    reason: str | None
    notify_url: str


@dataclass(frozen=True)
class ChannelRefund:
    """succeeded | pending | failed."""

    status: str
    channel_refund_no: str | None = None
    failure_code: str | None = None


@dataclass(frozen=True)
class BillLine:
    """One line of a channel's daily statement."""

    kind: str  # payment | refund
    payment_id: str
    channel_trade_no: str | None
    amount: int
    currency: str
    status: str
    occurred_at: datetime | None
    refund_id: str | None = None
    fee: int = 0


class Channel(Protocol):
    name: str
    fee_bps: int

    def create(self, request: PaymentRequest) -> Created: ...

    def parse_notification(self, headers: dict[str, str], body: bytes) -> Notification: ...

    def acknowledge(self, ok: bool, message: str = "") -> Acknowledgement: ...

    def query(self, payment_id: str) -> ChannelStatus: ...

    def close(self, payment_id: str) -> ChannelStatus: ...

    def refund(self, request: RefundRequest) -> ChannelRefund: ...

    def query_refund(self, request: RefundRequest) -> ChannelRefund: ...

    def fetch_bill(self, day: str) -> bytes: ...

    def parse_bill(self, data: bytes) -> Iterable[BillLine]: ...
