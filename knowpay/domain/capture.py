"""How a captured payment splits across the ledger: a pure plan of legs, tested on worked examples.

Each order line's net amount (after its share of the discount) goes to its creator minus the
platform fee (basis points, rounded half up), so creator + platform = net exactly. A coin pack's
net buys coins into the buyer's wallet; bonus coins are funded from promotion. The channel's fee,
if any, is an expense taken out of clearing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from knowpay.domain.money import apply_rate_bps
from knowpay.ledger import chart
from knowpay.ledger.service import AccountSpec, Leg


@dataclass(frozen=True)
class SaleLine:
    creator_id: str
    kind: str
    net: int  # amount × quantity − its discount share
    coins: int = 0  # coin_pack: coins bought (× quantity)
    bonus_coins: int = 0


@dataclass(frozen=True)
class CapturePlan:
    legs: list[Leg]
    accounts: list[AccountSpec]


class _Builder:
    def __init__(self, currency: str) -> None:
        self.currency = currency
        self.amounts: dict[str, int] = defaultdict(int)
        self.specs: dict[str, AccountSpec] = {}

    def add(self, spec: AccountSpec, amount: int) -> None:
        self.specs[spec.code] = spec
        self.amounts[spec.code] += amount

    def plan(self) -> CapturePlan:
        legs = [Leg(code, amount, self.currency) for code, amount in self.amounts.items() if amount]
        return CapturePlan(legs, [self.specs[leg.account] for leg in legs])


def plan_capture(*, source: AccountSpec, buyer_id: str, currency: str, total: int, lines: list[SaleLine],
                 platform_fee_bps: int, channel: str | None = None, channel_fee_bps: int = 0) -> CapturePlan:
    """Legs that move `total` from `source` (clearing or the buyer's wallet) to where it belongs."""
    if sum(line.net for line in lines) != total:
        raise ValueError("order lines do not add up to the payment total")
    book = _Builder(currency)
    book.add(source, total)
    for line in lines:
        if line.kind == "coin_pack":
            book.add(chart.wallet(buyer_id, currency), -line.coins)
            difference = line.net - line.coins
            if difference > 0:
                book.add(chart.platform_fees(currency), -difference)
            elif difference < 0:
                book.add(chart.promotion(currency), -difference)
            if line.bonus_coins:
                book.add(chart.promotion(currency), line.bonus_coins)
                book.add(chart.wallet(buyer_id, currency), -line.bonus_coins)
            continue
        fee = min(apply_rate_bps(line.net, platform_fee_bps), line.net)
        book.add(chart.creator_pending(line.creator_id, currency), -(line.net - fee))
        book.add(chart.platform_fees(currency), -fee)
    if channel and channel_fee_bps:
        channel_fee = apply_rate_bps(total, channel_fee_bps)
        if channel_fee:
            book.add(chart.channel_fees(channel, currency), channel_fee)
            book.add(source, -channel_fee)
    return book.plan()
