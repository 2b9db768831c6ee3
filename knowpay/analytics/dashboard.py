"""The dashboards' figures: every panel of the admin or the creator dashboard for one date range and
set of filters, checked like an API request, scoped to the caller and read in one visit to the store."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from knowpay.accounts.models import User
from knowpay.analytics import metrics
from knowpay.analytics.models import Anomaly
from knowpay.analytics.service import Filters, MetricRequest, build_query
from knowpay.analytics.store import get_meta, store_for
from knowpay.context import Context

# panel → (metric, what the panel asks beyond the page's filters)
PLATFORM_PANELS: dict[str, tuple[str, dict]] = {
    "gmv": ("gmv", {}),
    "gmv_by_channel": ("gmv", {"group_by": "channel"}),
    "gmv_by_kind": ("gmv", {"group_by": "kind"}),
    "net_revenue": ("net_revenue", {}),
    "success_by_channel": ("success_rate", {"group_by": "channel"}),
    "success_by_method": ("success_rate", {"group_by": "method"}),
    "failure_reasons": ("failure_reasons", {}),
    "time_to_pay_by_channel": ("time_to_pay", {"group_by": "channel"}),
    "funnel": ("funnel", {}),
    "heatmap": ("heatmap", {}),
    "refunds": ("refunds", {}),
    "refund_reasons": ("refund_reasons", {}),
    "cohorts": ("cohorts", {"granularity": "month"}),
    "mrr": ("mrr", {}),
    "coins": ("coins", {}),
    "arpu": ("arpu", {}),
    # By month always: a day's repeat buyers say little, and by day it cannot read the monthly summary.
    "repeat_purchase": ("repeat_purchase", {"granularity": "month"}),
    "top_products": ("top_products", {}),
    "top_creators": ("top_creators", {}),
}
# A creator sees their own products: no other creators, no platform coins.
CREATOR_PANELS = {key: PLATFORM_PANELS[key] for key in (
    "gmv", "gmv_by_channel", "net_revenue", "success_by_channel", "failure_reasons", "time_to_pay_by_channel",
    "funnel", "heatmap", "refunds", "refund_reasons", "cohorts", "mrr", "arpu", "repeat_purchase", "top_products")}
RECENT_ANOMALIES = 20


@dataclass(frozen=True)
class Dashboard:
    scope: str  # "platform" | "creator"
    query: metrics.Query  # the range as widened to whole periods, and the filters
    panels: dict[str, list[dict]]
    totals: dict
    ignored: dict[str, tuple[str, ...]]  # panel → filters its metric does not take (shown unfiltered)
    as_of: datetime | None  # the store's watermark (naive UTC)
    empty: frozenset[str]  # panels with no figure in the range: the page says so instead of drawing axes


def panel_request(panel: tuple[str, dict], filters: Filters) -> tuple[MetricRequest, tuple[str, ...]]:
    """The metric request of one panel, and the page filters left out because its metric does not take them."""
    name, extra = panel
    spec = metrics.METRICS[name]
    asked = {"channel": filters.channel, "kind": filters.kind, "creator_id": filters.creator_id}
    ignored = tuple(k for k, v in asked.items() if v is not None and k not in spec.filters)
    # A metric by month only (cohorts) takes its own granularity; a granularity that is none is refused.
    granularity = None if filters.granularity in metrics.GRANULARITIES and filters.granularity not in \
        spec.granularities else filters.granularity
    changes = {"granularity": granularity, **dict.fromkeys(ignored), **extra}
    return MetricRequest.of(name, filters, **changes), ignored


def build_dashboard(ctx: Context, session: Session, user: User, filters: Filters, *, scope: str) -> Dashboard:
    """Every panel of the `scope` dashboard ("platform" for admins, "creator" for a creator's own).
    Bad filters raise InvalidRequest naming the field, before the store is opened."""
    if scope == "creator":
        # Whatever the form says, a creator's dashboard is their own products.
        filters = replace(filters, creator_id=user.id)
    panels = CREATOR_PANELS if scope == "creator" else PLATFORM_PANELS
    queries, ignored = {}, {}
    for key, panel in panels.items():
        ask, left_out = panel_request(panel, filters)
        queries[key] = build_query(ctx, session, user, ask)
        if left_out:
            ignored[key] = left_out
    with store_for(ctx.settings).reader(current=True) as con:
        rows = {key: metrics.compute(con, query) for key, query in queries.items()}
        watermark = get_meta(con, "watermark")
    empty = frozenset(key for key, panel in panels.items() if not has_figures(panel[0], rows[key]))
    return Dashboard(scope=scope, query=queries["gmv"], panels=rows, totals=totals_of(rows), ignored=ignored,
                     as_of=datetime.fromisoformat(watermark) if watermark else None, empty=empty)


def has_figures(metric: str, rows: list[dict]) -> bool:
    """Whether any row has a figure that is not zero or missing (a series has a row per period regardless)."""
    figures = metrics.METRICS[metric].figures
    return any(any(value) if isinstance(value, list) else bool(value)
               for row in rows for value in (row.get(name) for name in figures))


def _sum(rows: list[dict], key: str) -> int:
    return sum(row.get(key) or 0 for row in rows)


def totals_of(panels: dict[str, list[dict]]) -> dict:
    """The headline figures over the whole range, summed from the panels' rows."""
    gmv, net, attempts, funnel, refunds = (panels[k] for k in ("gmv", "net_revenue", "success_by_channel", "funnel",
                                                                "refunds"))
    return {
        "gross": _sum(gmv, "gross"), "refunded": _sum(gmv, "refunded"), "net": _sum(gmv, "net"),
        "orders": _sum(gmv, "orders"), "net_revenue": _sum(net, "net"),
        "creator_earnings": _sum(net, "creator_earnings"), "platform_fees": _sum(net, "platform_fees"),
        "channel_fees": _sum(net, "channel_fees"), "attempts": _sum(attempts, "attempts"),
        "succeeded": _sum(attempts, "succeeded"),
        "success_rate": metrics.rate(_sum(attempts, "succeeded"), _sum(attempts, "attempts")),
        "views": _sum(funnel, "views"), "funnel_orders": _sum(funnel, "orders"),
        "attempted": _sum(funnel, "attempted"), "paid": _sum(funnel, "paid"), "abandoned": _sum(funnel, "abandoned"),
        "abandonment_rate": metrics.rate(_sum(funnel, "abandoned"), _sum(funnel, "orders")),
        "refund_rate": metrics.rate(_sum(refunds, "refunded_orders"), _sum(refunds, "paid_orders")),
    }


def recent_anomalies(session: Session, *, limit: int = RECENT_ANOMALIES) -> list[Anomaly]:
    return list(session.scalars(select(Anomaly).order_by(Anomaly.created_at.desc(), Anomaly.id.desc()).limit(limit)))
