"""Reverse part of a posted transaction in proportion to its legs, exactly.

Refunds reverse the capture leg by leg. Each refund's reversal is the difference between the
cumulative reversal after it and before it, so that however a payment is refunded in pieces, the
pieces add up to exactly the capture once it is fully refunded. Within a side (debits, credits),
every leg but one gets the floor of its share; the stated remainder leg takes what is left.
"""

from __future__ import annotations


def _side(total: int, weights: dict[str, int], remainder_to: str) -> dict[str, int]:
    weight_sum = sum(weights.values())
    parts = {code: total * w // weight_sum for code, w in weights.items() if code != remainder_to}
    parts[remainder_to] = total - sum(parts.values())
    return parts


def cumulative_reversal(legs: dict[str, int], *, captured: int, refunded: int, debit_remainder: str,
                        credit_remainder: str) -> dict[str, int]:
    """Signed amounts that reverse `refunded` of `captured` across `legs` (code → signed amount)."""
    if not 0 <= refunded <= captured:
        raise ValueError("refunded must be between 0 and the captured amount")
    debits = {code: amount for code, amount in legs.items() if amount > 0}
    credits = {code: -amount for code, amount in legs.items() if amount < 0}
    debit_total, credit_total = sum(debits.values()), sum(credits.values())
    if debit_total != credit_total:
        raise ValueError("the legs do not balance")
    if refunded == 0:
        return dict.fromkeys(legs, 0)
    scaled = refunded * debit_total // captured if refunded != captured else debit_total
    out = {code: -amount for code, amount in _side(scaled, debits, debit_remainder).items()}
    out.update(_side(scaled, credits, credit_remainder))
    return out


def reversal_step(legs: dict[str, int], *, captured: int, before: int, after: int, debit_remainder: str,
                  credit_remainder: str) -> dict[str, int]:
    """The legs of one refund that takes the refunded total from `before` to `after`."""
    then = cumulative_reversal(legs, captured=captured, refunded=before, debit_remainder=debit_remainder,
                               credit_remainder=credit_remainder)
    now = cumulative_reversal(legs, captured=captured, refunded=after, debit_remainder=debit_remainder,
                              credit_remainder=credit_remainder)
    return {code: now[code] - then.get(code, 0) for code in now if now[code] - then.get(code, 0)}
