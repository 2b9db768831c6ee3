"""The chart of accounts: every ledger account KnowPay uses, named in one place."""

from __future__ import annotations

from knowpay.ledger.service import AccountSpec


def clearing(channel: str, currency: str) -> AccountSpec:
    """Money the channel holds for us until it settles (asset)."""
    return AccountSpec(f"clearing:{channel}:{currency}", "asset", currency)


def platform_fees(currency: str) -> AccountSpec:
    return AccountSpec(f"platform:fees:{currency}", "revenue", currency)


def channel_fees(channel: str, currency: str) -> AccountSpec:
    return AccountSpec(f"channel_fees:{channel}:{currency}", "expense", currency)


def creator_pending(creator_id: str, currency: str) -> AccountSpec:
    """What we owe a creator for sales still inside the settlement period (liability)."""
    return AccountSpec(f"creator:{creator_id}:pending:{currency}", "liability", currency, owner_id=creator_id)


def creator_available(creator_id: str, currency: str) -> AccountSpec:
    return AccountSpec(f"creator:{creator_id}:available:{currency}", "liability", currency, owner_id=creator_id)


def wallet(user_id: str, currency: str) -> AccountSpec:
    """A buyer's coins: 1 coin is 1 minor unit of the platform currency; never below zero."""
    return AccountSpec(f"wallet:{user_id}:{currency}", "liability", currency, allow_negative=False,
                       owner_id=user_id)


def promotion(currency: str) -> AccountSpec:
    """Bonus coins and other giveaways the platform funds (expense)."""
    return AccountSpec(f"promotion:{currency}", "expense", currency)


def refunds_due(currency: str) -> AccountSpec:
    """Money received that must go back, such as a duplicate payment awaiting its refund (liability)."""
    return AccountSpec(f"refunds_due:{currency}", "liability", currency)


def payout_hold(creator_id: str, currency: str) -> AccountSpec:
    """Earnings set aside for a payout the creator asked for, until it is paid or rejected."""
    return AccountSpec(f"creator:{creator_id}:payout_hold:{currency}", "liability", currency,
                       allow_negative=False, owner_id=creator_id)


def payouts_approved(currency: str) -> AccountSpec:
    """Approved payouts waiting for the bank transfer (liability)."""
    return AccountSpec(f"payouts:approved:{currency}", "liability", currency, allow_negative=False)


def bank(currency: str) -> AccountSpec:
    """The platform's own bank account, where channels settle and payouts leave from (asset)."""
    return AccountSpec(f"bank:{currency}", "asset", currency)
