"""Analytics use cases the web calls: check a metric request and answer it within the caller's scope,
record page views, read and change analytics settings, list anomalies."""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from knowpay.accounts.models import User
from knowpay.analytics import metrics, source
from knowpay.analytics.models import AnalyticsSetting, PageView
from knowpay.analytics.store import local_today, store_for
from knowpay.catalog.models import KINDS, Product
from knowpay.context import Context
from knowpay.domain.errors import InvalidRequest, NotFound, PermissionDenied
from knowpay.domain.money import EXPONENTS
from knowpay.orders.models import Order
from knowpay.payments.service import CHANNELS

log = logging.getLogger(__name__)

# The longest range one request may ask for, by granularity (the answer's size and cost grow with it).
MAX_DAYS = {"day": 731, "week": 1830, "month": 3660}
DEFAULT_DAYS = 30
VIEW_KINDS = ("product_view", "checkout_view")
SETTINGS_DEFAULTS = {"channel_ordering": True}


@dataclass(frozen=True)
class Filters:
    """A range and filters as the caller sent them (strings); None where left out."""

    from_: str | None = None
    to: str | None = None
    granularity: str | None = None
    channel: str | None = None
    kind: str | None = None
    creator_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class MetricRequest(Filters):
    """A metric request as the caller sent it (strings), before any checking."""

    metric: str
    group_by: str | None = None
    currency: str | None = None
    limit: int = 10

    @classmethod
    def of(cls, metric: str, filters: Filters, **more) -> MetricRequest:
        """`metric` over the range and filters of a form, with `more` set or overridden."""
        asked = {f.name: getattr(filters, f.name) for f in fields(Filters)}
        return cls(metric=metric, **{**asked, **more})


def _parse_day(value: str, param: str) -> date:
    try:
        if len(value) != 10:
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"`{param}` must be a date like 2026-11-25.", code="invalid_date", param=param) from None


def _scope_creator(session: Session, user: User, asked: str | None) -> str | None:
    """None for the platform (admins); a creator always gets their own products, whatever they ask."""
    if user.has_any_role("admin"):
        if asked is not None:
            exists = session.scalar(select(User.id).where(User.id == asked))
            if exists is None:
                raise InvalidRequest("No creator has this id.", code="unknown_creator", param="creator_id")
        return asked
    if user.has_any_role("creator"):
        if asked is not None and asked != user.id:
            raise NotFound("No such creator.", param="creator_id")
        return user.id
    raise PermissionDenied("Analytics are for admins and creators.", code="role_required")


def build_query(ctx: Context, session: Session, user: User, ask: MetricRequest) -> metrics.Query:
    """Check every parameter (4xx naming the bad one) and fix the caller's scope."""
    spec = metrics.METRICS.get(ask.metric)
    if spec is None:
        raise NotFound(f"No metric {ask.metric!r}; see GET /api/v1/analytics for the list.", code="unknown_metric",
                       param="metric")
    creator_id = _scope_creator(session, user, ask.creator_id)
    granularity = ask.granularity or spec.granularities[0]
    if granularity not in metrics.GRANULARITIES:
        raise InvalidRequest("`granularity` must be day, week or month.", code="invalid_granularity",
                             param="granularity")
    if granularity not in spec.granularities:
        raise InvalidRequest(f"{ask.metric} is by {' or '.join(spec.granularities)} only.",
                             code="invalid_granularity", param="granularity")
    today = local_today(ctx)
    end = _parse_day(ask.to, "to") if ask.to else today
    start = _parse_day(ask.from_, "from") if ask.from_ else end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise InvalidRequest("`from` must not be after `to`.", code="invalid_range", param="to")
    if (end - start).days + 1 > MAX_DAYS[granularity]:
        raise InvalidRequest(f"A range by {granularity} may span at most {MAX_DAYS[granularity]} days.",
                             code="range_too_long", param="to")
    for param, value, allowed in (("channel", ask.channel, CHANNELS), ("kind", ask.kind, KINDS)):
        if value is not None and value not in allowed:
            raise InvalidRequest(f"`{param}` must be one of {', '.join(allowed)}.", code=f"invalid_{param}",
                                 param=param)
    for param, value in (("channel", ask.channel), ("kind", ask.kind), ("creator_id", ask.creator_id)):
        if value is not None and param not in spec.filters:
            raise InvalidRequest(f"{ask.metric} cannot be filtered by `{param}`.", code="filter_not_supported",
                                 param=param)
    if ask.group_by is not None and ask.group_by not in spec.groups:
        allowed = ", ".join(spec.groups) or "nothing"
        raise InvalidRequest(f"{ask.metric} can be grouped by {allowed}.", code="invalid_group_by", param="group_by")
    currency = (ask.currency or ctx.settings.currency).lower()
    if currency not in EXPONENTS or currency == "coin":
        raise InvalidRequest("`currency` is not a supported currency code.", code="invalid_currency",
                             param="currency")
    if not 1 <= ask.limit <= 100:
        raise InvalidRequest("`limit` must be between 1 and 100.", code="invalid_limit", param="limit")
    return metrics.widened(metrics.Query(
        metric=ask.metric, start=start, end=end, granularity=granularity, channel=ask.channel, kind=ask.kind,
        creator_id=creator_id, group_by=ask.group_by, currency=currency, limit=ask.limit,
        timezone=ctx.settings.timezone, now=ctx.clock.now()))


def run_query(ctx: Context, query: metrics.Query) -> list[dict]:
    with store_for(ctx.settings).reader(current=True) as con:
        return metrics.compute(con, query)


def metric_rows(ctx: Context, session: Session, user: User, ask: MetricRequest) -> tuple[metrics.Query, list[dict]]:
    query = build_query(ctx, session, user, ask)
    return query, run_query(ctx, query)


def rows_as_csv(rows: list[dict]) -> str:
    """One CSV line per row; a list figure (cohort retention) becomes numbered columns."""
    flat = []
    for row in rows:
        line: dict = {}
        for key, value in row.items():
            if isinstance(value, list):
                line.update({f"{key}_{i}": v for i, v in enumerate(value)})
            else:
                line[key] = value
        flat.append(line)
    header: list[str] = []
    for line in flat:
        header.extend(k for k in line if k not in header)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header or ["period"], restval="", lineterminator="\n")
    writer.writeheader()
    for line in flat:
        writer.writerow({k: "" if v is None else v for k, v in line.items()})
    return buffer.getvalue()


# --- page views -----------------------------------------------------------------------------------


def record_product_view(ctx: Context, *, product_id: str, user_id: str | None = None,
                        user_agent: str | None = None, client_ip: str | None = None,
                        device_class: str | None = None) -> bool:
    """Count one view of a product page, for the funnel. One small insert in its own transaction;
    a failure is logged and swallowed, so a page never fails because of analytics."""
    return _record_view(ctx, kind="product_view", product_id=product_id, order_id=None, user_id=user_id,
                        user_agent=user_agent, client_ip=client_ip, device_class=device_class)


def record_checkout_view(ctx: Context, *, order_id: str, user_id: str | None = None,
                         user_agent: str | None = None, client_ip: str | None = None,
                         device_class: str | None = None) -> bool:
    """Count one view of an order's checkout page; it also tells which device the buyer pays on."""
    return _record_view(ctx, kind="checkout_view", product_id=None, order_id=order_id, user_id=user_id,
                        user_agent=user_agent, client_ip=client_ip, device_class=device_class)


def _record_view(ctx: Context, *, kind: str, product_id: str | None, order_id: str | None, user_id: str | None,
                 user_agent: str | None, client_ip: str | None, device_class: str | None) -> bool:
    try:
        with ctx.db.transaction() as session:
            add_page_view(session, kind=kind, product_id=product_id, order_id=order_id, user_id=user_id,
                          user_agent=user_agent, client_ip=client_ip, device_class=device_class, now=ctx.clock.now())
        return True
    except Exception as exc:  # noqa: BLE001 - a lost view costs a funnel count, never a page
        log.warning("page view not recorded (%s: %s)", exc.__class__.__name__, exc)
        return False


def add_page_view(session: Session, *, kind: str, product_id: str | None, order_id: str | None,
                  user_id: str | None, user_agent: str | None, client_ip: str | None, device_class: str | None,
                  now: datetime) -> PageView:
    """Add a page view to the caller's transaction."""
    if kind not in VIEW_KINDS:
        raise InvalidRequest(f"`type` must be one of {', '.join(VIEW_KINDS)}.", code="invalid_type", param="type")
    device = device_class if device_class in source.DEVICE_CLASSES else source.device_class_of(user_agent)
    key = source.viewer_key(user_id) if user_id else source.viewer_key(client_ip, user_agent)
    view = PageView(kind=kind, product_id=product_id, order_id=order_id, user_id=user_id, viewer_key=key,
                    device_class=device, created_at=now)
    session.add(view)
    return view


def check_view_target(session: Session, user: User | None, *, kind: str, product_id: str | None,
                      order_id: str | None) -> None:
    """A product view names a published product (or the viewer's own draft); a checkout view the viewer's order."""
    if kind == "product_view":
        if not product_id:
            raise InvalidRequest("A product_view needs `product_id`.", code="parameter_missing", param="product_id")
        product = session.get(Product, product_id)
        if product is None or (product.status != "published" and (user is None or product.creator_id != user.id)):
            raise NotFound("No such product.", param="product_id")
        return
    if not order_id:
        raise InvalidRequest("A checkout_view needs `order_id`.", code="parameter_missing", param="order_id")
    order = session.get(Order, order_id)
    if order is None or user is None or order.buyer_id != user.id:
        raise NotFound("No such order.", param="order_id")


# --- settings -------------------------------------------------------------------------------------


def get_settings(session: Session) -> dict:
    values = dict(SETTINGS_DEFAULTS)
    for setting in session.scalars(select(AnalyticsSetting)):
        if setting.key in values:
            values[setting.key] = setting.value.get("value")
    return values


def change_settings(session: Session, changes: dict, *, user_id: str, now: datetime) -> dict:
    for key, value in changes.items():
        if key not in SETTINGS_DEFAULTS:
            raise InvalidRequest(f"Unknown analytics setting {key!r}.", code="unknown_parameter", param=key)
        setting = session.get(AnalyticsSetting, key)
        if setting is None:
            session.add(AnalyticsSetting(key=key, value={"value": value}, updated_by=user_id, updated_at=now))
        else:
            setting.value, setting.updated_by, setting.updated_at = {"value": value}, user_id, now
    session.flush()
    return get_settings(session)
