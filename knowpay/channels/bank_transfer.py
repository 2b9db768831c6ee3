"""Bank transfer: the buyer sends money to the platform's account quoting a unique reference;
an admin records the transfer when it arrives (see knowpay/payments/bank_transfers.py).

There is no gateway to call: create() hands out the account and reference, and nothing ever
notifies us. Refunds are sent by hand and confirmed by an admin.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass

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
from knowpay.config import Settings

# No 0/O or 1/I: references are read off screens and typed into banking apps.
REFERENCE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
DEFAULT_DAYS = 3


def new_reference() -> str:
    """`KP-XXXX-XXXX`: about 40 bits, unique per payment (the unique trade number enforces it)."""
    body = "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(8))
    return f"KP-{body[:4]}-{body[4:]}"


@dataclass
class BankTransferChannel:
    account_name: str
    account_number: str
    bank_name: str
    days: int = DEFAULT_DAYS
    name: str = "bank_transfer"
    fee_bps: int = 0

    def create(self, request: PaymentRequest) -> Created:
        reference = new_reference()
        return Created(
            Action("bank_transfer", {"reference": reference, "amount": request.amount, "currency": request.currency,
                                     "account": {"name": self.account_name, "number": self.account_number,
                                                 "bank": self.bank_name},
                                     "expires_in_days": self.days}),
            channel_trade_no=reference, extra={"reference": reference})

    def parse_notification(self, headers: dict[str, str], body: bytes) -> Notification:
        raise NotificationRejected("bank transfers are recorded by an admin, not notified")

    def acknowledge(self, ok: bool, message: str = "") -> Acknowledgement:
        return Acknowledgement(400, "bank transfers are not notified")

    def query(self, payment_id: str) -> ChannelStatus:
        return ChannelStatus("pending")

    def close(self, payment_id: str) -> ChannelStatus:
        return ChannelStatus("closed")

    def refund(self, request: RefundRequest) -> ChannelRefund:
        return ChannelRefund("pending")  # an admin sends it and marks it sent

    def query_refund(self, request: RefundRequest) -> ChannelRefund:
        return ChannelRefund("pending")

    def fetch_bill(self, day: str) -> bytes:
        return b""

    def parse_bill(self, data: bytes) -> Iterable[BillLine]:
        return []


def from_settings(settings: Settings) -> BankTransferChannel | None:
    conf = settings.channel
    number = conf.get("bank_account_number")
    if not number:
        if settings.is_production:
            return None
        # Development shows a clearly fake account so the flow can be tried end to end.
        return BankTransferChannel("KnowPay Demo Ltd", "6222 0000 0000 0000 000", "Demo Bank", DEFAULT_DAYS)
    return BankTransferChannel(conf.get("bank_account_name", ""), number, conf.get("bank_name", ""),
                               int(conf.get("bank_transfer_days") or DEFAULT_DAYS))
