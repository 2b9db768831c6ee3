"""Time to pay as counts in logarithmic bins 1 % wide, and its quantiles read from them: a year of
payments is a few hundred thousand counts to add up instead of millions of times to sort, and every
quantile read from the bins is within 1 % (or 0.01 s) of the exact one."""

from __future__ import annotations

import math

ACCURACY = 0.01  # relative: a bin's value is within this of every time in the bin
GAMMA = (1 + ACCURACY) / (1 - ACCURACY)  # the ratio of a bin's upper bound to its lower
FLOOR_SECONDS = 0.01  # times up to this (a wallet pays at once) fall in bin 0 and read as 0 s

# Bin b > 0 holds the times in (FLOOR·γ^(b-1), FLOOR·γ^b]; SQL over a table with `seconds_to_pay`.
BUCKET_SQL = (f"CASE WHEN seconds_to_pay <= {FLOOR_SECONDS!r} THEN 0 "
              f"ELSE CAST(ceil(ln(seconds_to_pay / {FLOOR_SECONDS!r}) / ln({GAMMA!r})) AS INTEGER) END")


def bucket_of(seconds: float) -> int:
    """The bin of a time, as BUCKET_SQL computes it."""
    return 0 if seconds <= FLOOR_SECONDS else math.ceil(math.log(seconds / FLOOR_SECONDS) / math.log(GAMMA))


def seconds_of(bucket: int) -> float:
    """The time a bin stands for: 2·FLOOR·γ^b / (γ + 1), within ACCURACY of both its bounds."""
    return 0.0 if bucket <= 0 else FLOOR_SECONDS * 2 * GAMMA**bucket / (GAMMA + 1)


def ranks_sql(binned: str, keys: str, qs: tuple[float, ...]) -> str:
    """For `binned` (columns: `keys`, bucket, n), per `keys`: the count, then for each q the bins holding
    the two ranks a continuous quantile interpolates between (0-based, floor and ceil of (count-1)·q)."""
    picks = []
    for q in qs:
        for edge in ("floor", "ceil"):
            picks.append(f"min(bucket) FILTER (WHERE upto > {edge}((total - 1) * {q!r}))")
    return f"""
        WITH b AS ({binned}),
             c AS (SELECT *, sum(n) OVER (PARTITION BY {keys} ORDER BY bucket) AS upto,
                             sum(n) OVER (PARTITION BY {keys}) AS total FROM b)
        SELECT {keys}, any_value(total), {", ".join(picks)} FROM c GROUP BY ALL"""


def quantile(count: int, q: float, low_bucket: int, high_bucket: int) -> float:
    """The continuous quantile q of `count` times, from the bins of the two ranks around it."""
    position = (count - 1) * q
    low, high = seconds_of(low_bucket), seconds_of(high_bucket)
    return low + (high - low) * (position - math.floor(position))
