"""What is being assessed: a payment, a wallet top-up, a refund request or a payout request."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

SUBJECTS = ("payment", "topup", "refund", "payout")
# Payments and top-ups share velocity counters: a card tester switching to coin packs is still one tester.
COUNTER_SCOPE = {"payment": "pay", "topup": "pay", "refund": "refund", "payout": "payout"}


@dataclass(frozen=True)
class Subject:
    """The facts of one request as the caller knows them before anything is sent anywhere."""

    kind: str
    user_id: str
    email: str
    account_created_at: datetime
    amount: int
    currency: str
    channel: str | None = None
    method: str | None = None
    ip: str | None = None
    device_id: str | None = None
    # Payment instruments known at this point, by list kind: wechat_openid, alipay_buyer_id, card_fingerprint.
    instruments: dict[str, str] = field(default_factory=dict)
    coupon_code: str | None = None
    quantity: int = 1
    order_id: str | None = None
    payment_id: str | None = None
    # Whether the user could answer an otp_challenge (2FA enrolled, and the request can carry an otp).
    can_challenge: bool = False

    def to_json(self) -> dict:
        data = asdict(self)
        data["account_created_at"] = self.account_created_at.isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict) -> Subject:
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        values["account_created_at"] = datetime.fromisoformat(data["account_created_at"])
        values["instruments"] = dict(data.get("instruments") or {})
        return cls(**values)
