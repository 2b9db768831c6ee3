"""The sandbox gateway's wire protocol, defined once for both sides: its settings and its signature.

The gateway (`knowpay.sandbox.app`, served by `knowpay sandbox`) and KnowPay's adapter
(`knowpay.channels.sandbox`) both sign and verify with the functions here. Every request and every
notification carries `Sandbox-Merchant`, `Sandbox-Timestamp` (unix seconds) and `Sandbox-Signature`
= hex HMAC-SHA256(secret, "<timestamp>.<raw body>"); a signed GET signs its query string instead.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from knowpay.config import ConfigError, Settings

DEFAULT_URL = "http://127.0.0.1:8100"
DEFAULT_MERCHANT_ID = "kp-sandbox-merchant"
DEFAULT_SECRET = "knowpay-sandbox-development-secret"
DEFAULT_FEE_BPS = 60
SIGNATURE_WINDOW_SECONDS = 300

MERCHANT_HEADER = "Sandbox-Merchant"
TIMESTAMP_HEADER = "Sandbox-Timestamp"
SIGNATURE_HEADER = "Sandbox-Signature"


@dataclass(frozen=True)
class SandboxConfig:
    """The `KNOWPAY_SANDBOX_*` variables, with development defaults."""

    url: str
    merchant_id: str
    secret: str
    fee_bps: int
    url_is_set: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxConfig:
        env = settings.channel
        raw_fee = env.get("sandbox_fee_bps") or str(DEFAULT_FEE_BPS)
        if not raw_fee.isdigit() or int(raw_fee) > 10_000:
            raise ConfigError(
                f"KNOWPAY_SANDBOX_FEE_BPS must be a whole number from 0 to 10000, got {raw_fee!r}")
        return cls(url=(env.get("sandbox_url") or DEFAULT_URL).rstrip("/"),
                   merchant_id=env.get("sandbox_merchant_id") or DEFAULT_MERCHANT_ID,
                   secret=env.get("sandbox_secret") or DEFAULT_SECRET,
                   fee_bps=int(raw_fee), url_is_set=bool(env.get("sandbox_url")))


class SignatureError(Exception):
    """A request or notification whose signature headers do not check out; `code` says which part."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def signature(secret: str, timestamp: str, message: bytes) -> str:
    signed = timestamp.encode("ascii") + b"." + message
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def signed_headers(merchant_id: str, secret: str, message: bytes, *, now: float) -> dict[str, str]:
    """The three headers that sign `message` (a raw body, or a query string for a GET) at `now`."""
    timestamp = str(int(now))
    return {MERCHANT_HEADER: merchant_id, TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(secret, timestamp, message)}


def verify_signature(headers: Mapping[str, str], message: bytes, secrets: Mapping[str, str], *,
                     now: float) -> str:
    """Check the signature headers against the known merchants' secrets → the merchant id, or raise."""
    lower = {name.lower(): value for name, value in headers.items()}
    merchant = lower.get(MERCHANT_HEADER.lower(), "")
    timestamp = lower.get(TIMESTAMP_HEADER.lower(), "")
    given = lower.get(SIGNATURE_HEADER.lower(), "")
    if not (merchant and timestamp and given):
        raise SignatureError("missing_signature",
                             f"missing {MERCHANT_HEADER}, {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    secret = secrets.get(merchant)
    if secret is None:
        raise SignatureError("unknown_merchant", f"unknown merchant {merchant[:64]!r}")
    if not (timestamp.isascii() and timestamp.isdigit()):
        raise SignatureError("bad_timestamp", f"{TIMESTAMP_HEADER} must be unix seconds")
    if abs(now - int(timestamp)) > SIGNATURE_WINDOW_SECONDS:
        raise SignatureError("stale_timestamp",
                             f"{TIMESTAMP_HEADER} is more than {SIGNATURE_WINDOW_SECONDS} s from now")
    expected = signature(secret, timestamp, message)
    # Compared as bytes so a non-ASCII header cannot raise, and in constant time.
    if not hmac.compare_digest(expected.encode("ascii"), given.strip().lower().encode("utf-8", "replace")):
        raise SignatureError("bad_signature", f"{SIGNATURE_HEADER} does not match the message")
    return merchant


def isoformat(moment: float | None) -> str | None:
    """Unix seconds → ISO 8601 UTC with milliseconds and a `Z`, as every time on this wire is written."""
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_isoformat(text: str) -> datetime:
    """An ISO 8601 time → an aware datetime; one without an offset is taken as UTC. Raises ValueError."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
