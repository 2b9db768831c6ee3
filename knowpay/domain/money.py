"""Money as integer minor units with its currency; parsing, formatting and exact splitting.

A float never enters: amounts come in as `int` (API) or decimal strings ("99.00", Alipay)
and are checked against the currency's exponent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from knowpay.domain.errors import InvalidRequest

# ISO 4217 minor-unit exponents of the currencies KnowPay accepts; "coin" is the wallet's unit.
EXPONENTS: dict[str, int] = {
    "cny": 2, "usd": 2, "eur": 2, "gbp": 2, "hkd": 2, "twd": 2, "sgd": 2, "aud": 2, "cad": 2,
    "jpy": 0, "krw": 0, "coin": 0,
}
MAX_AMOUNT = 10**13  # 100 billion yuan in fen: far above any real order, far below 2**63


def exponent(currency: str) -> int:
    """The number of decimal places of a currency's major unit."""
    try:
        return EXPONENTS[currency]
    except KeyError:
        raise InvalidRequest(f"Unsupported currency {currency!r}.", code="invalid_currency",
                             param="currency") from None


def check_amount(value: object, *, param: str = "amount", allow_zero: bool = False) -> int:
    """Accept a plain int of minor units; refuse floats, strings, booleans and out-of-range values."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(
            f"`{param}` must be an integer number of minor units (e.g. 9900 for 99.00), "
            f"not {type(value).__name__}.", code="invalid_amount", param=param)
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidRequest(f"`{param}` must be positive.", code="invalid_amount", param=param)
    if value > MAX_AMOUNT:
        raise InvalidRequest(f"`{param}` is too large.", code="invalid_amount", param=param)
    return value


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in minor units (fen for CNY) with its lower-case ISO currency code."""

    amount: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int):
            raise TypeError(f"Money amount must be int minor units, got {type(self.amount).__name__}")
        exponent(self.currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    @classmethod
    def parse(cls, text: str, currency: str) -> Money:
        """Parse a major-unit decimal string such as Alipay's "99.00" exactly."""
        return cls(parse_major(text, currency), currency)

    def to_major(self) -> str:
        """The amount as a major-unit decimal string: 9900 cny → "99.00"."""
        return format_major(self.amount, self.currency)

    def format(self, locale: str = "zh_CN") -> str:
        """Human display such as ¥99.00 or US$12.50."""
        symbol = SYMBOLS.get(self.currency, self.currency.upper() + " ")
        sign = "-" if self.amount < 0 else ""
        return f"{sign}{symbol}{format_major(abs(self.amount), self.currency)}"


SYMBOLS = {"cny": "¥", "jpy": "JP¥", "usd": "US$", "eur": "€", "gbp": "£", "hkd": "HK$", "coin": "🪙"}

# ASCII only: `\d` alone would also take full-width and other Unicode digits, which no channel sends.
_DECIMAL = re.compile(r"^(-?)(\d{1,15})(?:\.(\d+))?$", re.ASCII)


def parse_major(text: str, currency: str) -> int:
    """"99.00" → 9900 for cny; refuses more decimals than the currency has, and non-numbers."""
    places = exponent(currency)
    match = _DECIMAL.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise InvalidRequest(f"{text!r} is not a decimal amount.", code="invalid_amount", param="amount")
    sign, whole, frac = match.groups()
    frac = frac or ""
    if len(frac) > places and frac[places:].strip("0"):
        raise InvalidRequest(f"{text!r} has more than {places} decimal places for {currency}.",
                             code="invalid_amount", param="amount")
    frac = frac[:places].ljust(places, "0")
    value = int(whole) * 10**places + (int(frac) if frac else 0)
    return -value if sign else value


def format_major(amount: int, currency: str) -> str:
    """9900 cny → "99.00"; 500 jpy → "500"."""
    places = exponent(currency)
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), 10**places)
    return f"{sign}{whole}.{frac:0{places}d}" if places else f"{sign}{whole}"


def split(total: int, weights: list[int]) -> list[int]:
    """Split `total` in proportion to non-negative integer `weights` by largest remainder.

    The parts always sum to `total` exactly; ties in remainders go to the earlier weight,
    so the result is deterministic. A negative total splits as the negation of its absolute value.
    """
    if not weights:
        raise ValueError("need at least one weight")
    if any(w < 0 for w in weights):
        raise ValueError("weights must be non-negative")
    weight_sum = sum(weights)
    if weight_sum == 0:
        raise ValueError("weights must not all be zero")
    if total < 0:
        return [-p for p in split(-total, weights)]
    floors = [total * w // weight_sum for w in weights]
    remainders = [total * w % weight_sum for w in weights]
    left = total - sum(floors)
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for i in order[:left]:
        floors[i] += 1
    return floors


def apply_rate_bps(amount: int, bps: int) -> int:
    """`amount` × `bps` / 10000 rounded half up, for fees stated in basis points (e.g. 60 = 0.6%)."""
    return (amount * bps + 5000) // 10000
