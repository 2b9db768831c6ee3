"""Analytics (API.md "Analytics"): metrics as JSON or CSV, anomalies, settings, page views for the
funnel, and the checkout's channel order. Admins see the platform; a creator only their own products."""

from __future__ import annotations

from typing import Literal

from flask import Response, jsonify, request
from flask_openapi3 import APIBlueprint
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from knowpay.analytics import channel_ranking, metrics
from knowpay.analytics import service as analytics
from knowpay.analytics.anomalies import anomaly_payload
from knowpay.analytics.models import Anomaly
from knowpay.analytics.source import amount_band, device_class_of
from knowpay.analytics.store import StoreBusy
from knowpay.web.api.schemas import BEARER, IdPath, Input, ListQuery, Page, Strict, errors, tag
from knowpay.web.auth import current_user, optional_user
from knowpay.web.errors import error_body
from knowpay.web.pagination import paginate
from knowpay.web.runtime import request_session, runtime
from knowpay.web.uow import api_call

bp = APIBlueprint("analytics", __name__, url_prefix="/api/v1", abp_tags=tag("analytics"))

DeviceClass = Literal["mobile", "tablet", "desktop", "unknown"]


class MetricPath(Input):
    metric: str = Field(..., max_length=64)


class MetricQuery(Input):
    model_config = ConfigDict(populate_by_name=True)

    from_: str | None = Field(None, alias="from", max_length=32, description="first day, YYYY-MM-DD (platform time zone)")
    to: str | None = Field(None, max_length=32, description="last day, YYYY-MM-DD, included")
    granularity: str | None = Field(None, max_length=16, description="day, week or month")
    channel: str | None = Field(None, max_length=32)
    kind: str | None = Field(None, max_length=32)
    creator_id: str | None = Field(None, max_length=64, description="admins: one creator's figures")
    group_by: str | None = Field(None, max_length=32, description=", ".join(metrics.GROUPS))
    currency: str | None = Field(None, max_length=8)
    limit: int = Field(10, ge=1, le=100, description="rankings: how many rows")
    format: Literal["json", "csv"] = "json"


class MetricOut(BaseModel):
    metric: str
    scope: Literal["platform", "creator"]
    creator_id: str | None
    granularity: str
    from_: str = Field(alias="from")
    to: str
    currency: str
    data: list[dict]


class CatalogueOut(BaseModel):
    data: list[dict]


class AnomalyOut(BaseModel):
    id: str
    kind: str
    subject: str
    message: str
    observed: float
    expected: float
    numbers: dict
    window_start: str
    window_end: str
    created_at: str


class AnomalyQuery(ListQuery):
    kind: Literal["success_rate_drop", "failure_reason_spike", "refund_spike", "gmv_off_expectation",
                  "creator_sales_shift"] | None = None


class SettingsOut(BaseModel):
    channel_ordering: bool


class SettingsIn(Strict):
    channel_ordering: bool | None = Field(None, description="order checkout channels by predicted success and speed")


class ViewIn(Strict):
    type: Literal["product_view", "checkout_view"]
    product_id: str | None = Field(None, max_length=64)
    order_id: str | None = Field(None, max_length=64)
    device_class: DeviceClass | None = Field(None, description="defaults to what the User-Agent says")


class ViewOut(BaseModel):
    recorded: bool


class ChannelsQuery(Input):
    device_class: DeviceClass | None = Field(None, description="defaults to what the User-Agent says")


class ChannelOut(BaseModel):
    channel: str
    rank: int
    score: float
    reason: str | None = Field(None, description="admins only: why this place")


class ChannelsOut(BaseModel):
    data: list[ChannelOut]
    ordering: Literal["learned", "configured"]
    device_class: str
    amount_band: str


class RankingQuery(Input):
    device_class: DeviceClass = "unknown"
    amount: int = Field(..., ge=0, le=10**13, description="order total in minor units")
    buyer_id: str | None = Field(None, max_length=64)


def _busy(error: StoreBusy):
    response = jsonify(error_body("internal", error.code, error.message))
    response.status_code = 503
    response.headers["Retry-After"] = "2"
    return response


def _device(asked: str | None) -> str:
    return asked or device_class_of(request.headers.get("User-Agent"))


@bp.get("/analytics", responses={200: CatalogueOut, **errors(401, 403)}, security=BEARER)
def list_metrics():
    """The metrics there are: figures, filters, groupings and granularities of each."""
    current_user("admin", "creator")
    return {"data": metrics.catalogue()}


@bp.get("/analytics/anomalies", responses={200: Page[AnomalyOut], **errors(401, 403)}, security=BEARER)
@api_call
def list_anomalies(query: AnomalyQuery):
    """Detected anomalies, newest first (admins)."""
    current_user("admin")
    stmt = select(Anomaly)
    if query.kind:
        stmt = stmt.where(Anomaly.kind == query.kind)
    rows, more, cursor = paginate(request_session(), stmt, Anomaly, limit=query.limit, cursor=query.cursor)
    return {"data": [anomaly_payload(a) for a in rows], "has_more": more, "next_cursor": cursor}, 200


@bp.get("/analytics/settings", responses={200: SettingsOut, **errors(401, 403)}, security=BEARER)
@api_call
def get_settings():
    """Analytics switches (admins)."""
    current_user("admin")
    return analytics.get_settings(request_session()), 200


@bp.patch("/analytics/settings", responses={200: SettingsOut, **errors(401, 403)}, security=BEARER)
@api_call
def change_settings(body: SettingsIn):
    """Turn analytics features on or off (admins)."""
    user = current_user("admin")
    changes = body.model_dump(exclude_none=True)
    return analytics.change_settings(request_session(), changes, user_id=user.id, now=runtime().clock.now()), 200


@bp.get("/analytics/channel-ranking", responses={200: ChannelsOut, **errors(401, 403)}, security=BEARER)
def channel_ranking_preview(query: RankingQuery):
    """How checkout would order every channel for a device class and amount, with the reasons (admins);
    the learned order is shown even while the setting is off."""
    current_user("admin")
    rt = runtime()
    names = sorted({*rt.channels.names(), "wallet"})
    ranked = channel_ranking.rank_channels(rt, buyer_id=query.buyer_id, device_class=query.device_class,
                                           amount=query.amount, enabled=names, respect_setting=False)
    return {"data": [{"channel": c, "rank": i, "score": s, "reason": r} for i, (c, s, r) in enumerate(ranked, 1)],
            "ordering": "learned" if channel_ranking.channel_ordering_enabled(rt) else "configured",
            "device_class": query.device_class,
            "amount_band": amount_band(query.amount)}


@bp.post("/analytics/events", responses={202: ViewOut, **errors(404)})
@api_call
def record_event(body: ViewIn):
    """A page view from KnowPay's pages or an app (anyone; a checkout view only for the viewer's own order)."""
    user = optional_user()
    session = request_session()
    analytics.check_view_target(session, user, kind=body.type, product_id=body.product_id, order_id=body.order_id)
    analytics.add_page_view(session, kind=body.type, product_id=body.product_id if body.type == "product_view" else None,
                            order_id=body.order_id if body.type == "checkout_view" else None,
                            user_id=user.id if user else None, user_agent=request.headers.get("User-Agent"),
                            client_ip=request.remote_addr, device_class=body.device_class, now=runtime().clock.now())
    return {"recorded": True}, 202


@bp.get("/orders/<id>/channels", responses={200: ChannelsOut, **errors(401, 404)}, security=BEARER)
@api_call
def order_channels(path: IdPath, query: ChannelsQuery):
    """The channels that can pay this order, best first for this buyer's device and amount."""
    rt = runtime()
    return channel_ranking.checkout_channels(rt, request_session(), current_user(), path.id,
                                             device_class=_device(query.device_class)), 200


@bp.get("/analytics/<metric>", responses={200: MetricOut, **errors(401, 403, 404, 503)}, security=BEARER)
def get_metric(path: MetricPath, query: MetricQuery):
    """One metric over a date range: `{data: [{period, ...figures}], currency}`, or CSV with `?format=csv`."""
    user = current_user()
    rt = runtime()
    ask = analytics.MetricRequest(metric=path.metric, from_=query.from_, to=query.to, granularity=query.granularity,
                                  channel=query.channel, kind=query.kind, creator_id=query.creator_id,
                                  group_by=query.group_by, currency=query.currency, limit=query.limit)
    try:
        q, rows = analytics.metric_rows(rt, request_session(), user, ask)
    except StoreBusy as busy:
        return _busy(busy)
    if query.format == "csv":
        name = f"{q.metric}-{q.start}-{q.end}.csv"
        return Response(analytics.rows_as_csv(rows), mimetype="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})
    return {"metric": q.metric, "scope": "creator" if q.creator_id else "platform",
            "creator_id": q.creator_id, "granularity": q.granularity, "from": q.start.isoformat(),
            "to": q.end.isoformat(), "currency": q.currency, "data": rows}
