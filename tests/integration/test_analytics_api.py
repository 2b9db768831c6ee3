"""The analytics API's edges: bad input is a 4xx naming the param, page views, settings, anomalies,
and the checkout's channel order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from knowpay.analytics.anomalies import Finding, record_findings
from knowpay.analytics.channel_ranking import rank_channels
from knowpay.analytics.models import Anomaly, ChannelStat, PageView
from knowpay.outbox.models import OutboxEvent

# Checks that do not depend on the database run on SQLite only; what writes rows runs on both.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
DESKTOP = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"


def _metric(client, caller, metric: str, **params):
    return client.get(f"/api/v1/analytics/{metric}", headers=caller.headers if caller else {}, query_string=params)


BAD = [
    ("nonsense", {}, 404, "metric"),
    ("gmv", {"from": "2026-13-01"}, 400, "from"),
    ("gmv", {"from": "2026-1-5"}, 400, "from"),
    ("gmv", {"from": "yesterday"}, 400, "from"),
    ("gmv", {"to": "2026-02-30"}, 400, "to"),
    ("gmv", {"from": "2026-03-02", "to": "2026-03-01"}, 400, "to"),
    ("gmv", {"from": "2024-01-01", "to": "2026-03-01", "granularity": "day"}, 400, "to"),
    ("gmv", {"from": "1900-01-01", "to": "2026-03-01", "granularity": "month"}, 400, "to"),
    ("gmv", {"granularity": "hour"}, 400, "granularity"),
    ("cohorts", {"granularity": "day"}, 400, "granularity"),
    ("gmv", {"channel": "paypal"}, 400, "channel"),
    ("gmv", {"kind": "book"}, 400, "kind"),
    ("coins", {"channel": "alipay"}, 400, "channel"),
    ("gmv", {"group_by": "colour"}, 400, "group_by"),
    ("funnel", {"group_by": "channel"}, 400, "group_by"),
    ("gmv", {"creator_id": "usr_nobody"}, 400, "creator_id"),
    ("gmv", {"currency": "xyz"}, 400, "currency"),
    ("gmv", {"currency": "coin"}, 400, "currency"),
    ("top_products", {"limit": "0"}, 400, "limit"),
    ("top_products", {"limit": "many"}, 400, "limit"),
    ("gmv", {"format": "xml"}, 400, "format"),
    ("gmv", {"kind": "course\x00"}, 400, "kind"),
    ("gmv", {"from": "2026-01-01" * 10}, 400, "from"),
]


@SQLITE_ONLY
def test_bad_input_is_a_4xx_naming_the_param_never_a_500(client, admin):
    for metric, params, status, param in BAD:
        answer = _metric(client, admin, metric, **params)
        assert answer.status_code == status, (metric, params, answer.get_json())
        error = answer.get_json()["error"]
        assert error["param"] == param, (metric, params, error)
        assert error["type"] in ("invalid_request", "not_found") and error["message"]


@SQLITE_ONLY
def test_analytics_need_an_admin_or_a_creator(client, buyer, creator, admin):
    assert _metric(client, None, "gmv").status_code == 401
    assert _metric(client, buyer, "gmv").status_code == 403
    assert client.get("/api/v1/analytics", headers=buyer.headers).status_code == 403
    for caller in (creator, admin):
        answer = _metric(client, caller, "gmv")
        assert answer.status_code == 200
        body = answer.get_json()
        assert body["currency"] == "cny" and len(body["data"]) == 30  # the last 30 days by default
        assert all(row["gross"] == 0 for row in body["data"])
    listing = client.get("/api/v1/analytics", headers=creator.headers).get_json()["data"]
    assert {"gmv", "success_rate", "time_to_pay", "funnel", "refunds", "cohorts", "mrr"} <= {m["metric"] for m in listing}


@SQLITE_ONLY
def test_every_metric_answers_an_empty_store_without_error(client, admin):
    for entry in client.get("/api/v1/analytics", headers=admin.headers).get_json()["data"]:
        granularity = entry["granularities"][0]
        for fmt in ("json", "csv"):
            answer = _metric(client, admin, entry["metric"], granularity=granularity, format=fmt)
            assert answer.status_code == 200, (entry["metric"], answer.get_data(as_text=True))


def test_page_views_are_recorded_for_the_funnel(client, ctx, buyer, creator, published_product):
    anonymous = client.post("/api/v1/analytics/events", json={"type": "product_view",
                                                             "product_id": published_product["id"]},
                            headers={"User-Agent": IPHONE})
    assert anonymous.status_code == 202 and anonymous.get_json() == {"recorded": True}
    signed_in = client.post("/api/v1/analytics/events", headers={**buyer.headers, "User-Agent": DESKTOP},
                            json={"type": "product_view", "product_id": published_product["id"]})
    assert signed_in.status_code == 202
    order = client.post("/api/v1/orders", headers=buyer.headers,
                        json={"items": [{"product_id": published_product["id"]}]}).get_json()
    checkout = client.post("/api/v1/analytics/events", headers=buyer.headers,
                           json={"type": "checkout_view", "order_id": order["id"], "device_class": "tablet"})
    assert checkout.status_code == 202
    with ctx.db.transaction(write=False) as session:
        views = {(v.kind, v.device_class, v.user_id) for v in session.scalars(select(PageView))}
    assert views == {("product_view", "mobile", None), ("product_view", "desktop", buyer.id),
                     ("checkout_view", "tablet", buyer.id)}


@SQLITE_ONLY
def test_page_views_of_what_one_may_not_see_are_refused(client, make_user, buyer, creator):
    draft = client.post("/api/v1/products", headers=creator.headers,
                        json={"title": "Draft", "kind": "course", "amount": 100, "currency": "cny"}).get_json()
    cases = [
        ({"type": "product_view", "product_id": "prd_nothing"}, buyer, 404, "product_id"),
        ({"type": "product_view", "product_id": draft["id"]}, buyer, 404, "product_id"),
        ({"type": "product_view"}, buyer, 400, "product_id"),
        ({"type": "checkout_view", "order_id": "ord_nothing"}, buyer, 404, "order_id"),
        ({"type": "click", "product_id": draft["id"]}, buyer, 400, "type"),
        ({"type": "product_view", "product_id": draft["id"], "extra": 1}, buyer, 400, "extra"),
        ({"type": "product_view", "product_id": draft["id"], "device_class": "fridge"}, buyer, 400, "device_class"),
    ]
    for body, caller, status, param in cases:
        answer = client.post("/api/v1/analytics/events", headers=caller.headers, json=body)
        assert answer.status_code == status, (body, answer.get_json())
        assert answer.get_json()["error"]["param"] == param
    own_draft = client.post("/api/v1/analytics/events", headers=creator.headers,
                            json={"type": "product_view", "product_id": draft["id"]})
    assert own_draft.status_code == 202


def test_settings_are_for_admins_and_switch_channel_ordering(client, admin, creator):
    assert client.get("/api/v1/analytics/settings", headers=admin.headers).get_json() == {"channel_ordering": True}
    assert client.get("/api/v1/analytics/settings", headers=creator.headers).status_code == 403
    off = client.patch("/api/v1/analytics/settings", headers=admin.headers, json={"channel_ordering": False})
    assert off.status_code == 200 and off.get_json() == {"channel_ordering": False}
    unknown = client.patch("/api/v1/analytics/settings", headers=admin.headers, json={"colour": "red"})
    assert unknown.status_code == 400 and unknown.get_json()["error"]["param"] == "colour"
    wrong = client.patch("/api/v1/analytics/settings", headers=admin.headers, json={"channel_ordering": "no"})
    assert wrong.status_code == 400 and wrong.get_json()["error"]["param"] == "channel_ordering"


def _learned(ctx, rows: list[tuple[str, str, str, int, int, float]]) -> None:
    from knowpay.analytics import channel_ranking

    with ctx.db.transaction() as session:
        for channel, device, band, attempts, succeeded, p50 in rows:
            session.add(ChannelStat(channel=channel, device_class=device, amount_band=band, attempts=attempts,
                                    succeeded=succeeded, p50_seconds=p50, refreshed_at=ctx.clock.now()))
    channel_ranking._cache.clear()


@SQLITE_ONLY
def test_channels_are_ranked_by_predicted_success_and_speed_for_the_device_and_amount(ctx):
    _learned(ctx, [
        ("alipay", "mobile", "50-200", 400, 380, 20.0), ("alipay", "desktop", "50-200", 400, 240, 90.0),
        ("wechat", "mobile", "50-200", 400, 300, 25.0), ("wechat", "desktop", "50-200", 400, 372, 30.0),
        ("stripe", "desktop", "50-200", 3, 3, 10.0),
    ])
    enabled = ["stripe", "wechat", "alipay"]
    mobile = rank_channels(ctx, buyer_id=None, device_class="mobile", amount=9900, enabled=enabled)
    desktop = rank_channels(ctx, buyer_id=None, device_class="desktop", amount=9900, enabled=enabled)
    assert mobile[0][0] == "alipay"  # 95% on phones
    assert desktop[0][0] == "wechat"  # 93% on computers, where alipay manages 60%
    assert [c for c, _s, _r in mobile].index("wechat") > [c for c, _s, _r in desktop].index("wechat")
    assert all(score > 0 and "predicted success" in reason for _c, score, reason in mobile)
    # three attempts do not make stripe the best: they are worth little against the platform's rate
    scores = {c: s for c, s, _r in desktop}
    assert scores["stripe"] < scores["wechat"]


def test_the_checkout_lists_the_orders_channels_in_order_with_reasons_for_admins(client, ctx, admin, buyer,
                                                                                 make_user, published_product):
    _learned(ctx, [("bank_transfer", "mobile", "50-200", 300, 90, 3600.0),
                   ("sandbox", "mobile", "50-200", 300, 290, 15.0),
                   ("wallet", "mobile", "50-200", 300, 200, 1.0)])
    order = client.post("/api/v1/orders", headers=buyer.headers,
                        json={"items": [{"product_id": published_product["id"]}]}).get_json()
    mine = client.get(f"/api/v1/orders/{order['id']}/channels", headers={**buyer.headers, "User-Agent": IPHONE})
    assert mine.status_code == 200, mine.get_json()
    body = mine.get_json()
    assert body["ordering"] == "learned" and body["device_class"] == "mobile" and body["amount_band"] == "50-200"
    assert [row["channel"] for row in body["data"]] == ["sandbox", "wallet", "bank_transfer"]
    assert [row["rank"] for row in body["data"]] == [1, 2, 3]
    assert all("reason" not in row or row["reason"] is None for row in body["data"])
    as_admin = client.get(f"/api/v1/orders/{order['id']}/channels?device_class=mobile", headers=admin.headers)
    assert all(row["reason"] for row in as_admin.get_json()["data"])
    stranger = make_user("buyer")
    assert client.get(f"/api/v1/orders/{order['id']}/channels", headers=stranger.headers).status_code == 404
    preview = client.get("/api/v1/analytics/channel-ranking?device_class=mobile&amount=9900", headers=admin.headers)
    assert preview.status_code == 200 and preview.get_json()["data"][0]["channel"] == "sandbox"
    client.patch("/api/v1/analytics/settings", headers=admin.headers, json={"channel_ordering": False})
    off = client.get(f"/api/v1/orders/{order['id']}/channels", headers=buyer.headers).get_json()
    assert off["ordering"] == "configured"
    assert [row["channel"] for row in off["data"]] == ["bank_transfer", "sandbox", "wallet"]


def test_anomalies_are_recorded_once_announced_and_listed_for_admins(client, ctx, admin, creator):
    now = ctx.clock.now()
    finding = Finding("success_rate_drop", "sandbox", now.strftime("%Y-%m-%dT%H"),
                      "sandbox: 40% of 60 attempts succeeded in the last hour against 90% over 7 days",
                      0.4, 0.9, now - timedelta(hours=1), now, {"attempts": 60, "succeeded": 24, "z": -12.9})
    first = record_findings(ctx, [finding])
    again = record_findings(ctx, [finding])
    assert len(first) == 1 and again == []
    with ctx.db.transaction(write=False) as session:
        events = list(session.scalars(select(OutboxEvent).where(OutboxEvent.type == "analytics.anomaly")))
        assert session.scalar(select(func.count()).select_from(Anomaly)) == 1
    assert [e.id for e in events] == [first[0].id]
    assert events[0].payload["numbers"] == {"attempts": 60, "succeeded": 24, "z": -12.9}
    listed = client.get("/api/v1/analytics/anomalies", headers=admin.headers)
    assert listed.status_code == 200
    row = listed.get_json()["data"][0]
    assert (row["id"], row["kind"], row["subject"], row["observed"], row["expected"]) == (
        first[0].id, "success_rate_drop", "sandbox", 0.4, 0.9)
    filtered = client.get("/api/v1/analytics/anomalies?kind=refund_spike", headers=admin.headers).get_json()
    assert filtered["data"] == []
    assert client.get("/api/v1/analytics/anomalies", headers=creator.headers).status_code == 403
    assert client.get("/api/v1/analytics/anomalies?kind=weather", headers=admin.headers).status_code == 400


@SQLITE_ONLY
def test_a_webhook_endpoint_may_subscribe_to_anomalies(client, admin):
    made = client.post("/api/v1/webhook-endpoints", headers=admin.headers,
                       json={"url": "https://ops.example.com/hooks", "events": ["analytics.anomaly"]})
    assert made.status_code == 201, made.get_json()


@SQLITE_ONLY
def test_record_product_view_never_fails_the_caller(ctx, published_product):
    from knowpay.analytics.service import record_product_view

    assert record_product_view(ctx, product_id=published_product["id"], user_agent=IPHONE) is True
    ctx.db.dispose()
    broken = type(ctx)(settings=ctx.settings, db=_Broken(), clock=ctx.clock, channels=ctx.channels)
    assert record_product_view(broken, product_id=published_product["id"]) is False


class _Broken:
    def transaction(self, **_):
        raise RuntimeError("database gone")


@SQLITE_ONLY
def test_dates_are_days_of_the_platform_time_zone(client, ctx, admin):
    today = (datetime.now(UTC) + timedelta(hours=8)).date()  # Asia/Shanghai has no daylight saving
    body = _metric(client, admin, "gmv", granularity="day").get_json()
    assert body["to"] == today.isoformat()


def test_the_worker_loads_the_store_checks_it_and_exports_it(ctx, tmp_path, client, buyer, published_product):
    from huey import MemoryHuey

    from knowpay.analytics.store import store_for, table_rows
    from knowpay.jobs.tasks import register_analytics_tasks

    client.post("/api/v1/orders", headers=buyer.headers, json={"items": [{"product_id": published_product["id"]}]})
    huey = MemoryHuey(immediate=True)
    tasks = register_analytics_tasks(huey, lambda: ctx)
    huey.execute(tasks["load_analytics"].s())
    assert len(table_rows(store_for(ctx.settings), "orders")) == 1
    assert huey.execute(tasks["check_analytics"].s()) == 0
    assert huey.execute(tasks["export_analytics_parquet"].s()) == 0  # today's partition waits for the day's end
