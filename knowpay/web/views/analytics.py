"""Analytics dashboards: the platform's in the admin console and a creator's own in the creator centre.
Filters are a GET form; the figures go into the page as data attributes and analytics.js draws them
with the vendored ECharts. Each panel's rows download as CSV or JSON; the range as an HTML report."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, redirect, render_template, request, url_for
from flask_babel import format_percent, gettext, lazy_gettext
from sqlalchemy import select

from knowpay.accounts.models import User
from knowpay.analytics import channel_ranking, metrics, timing
from knowpay.analytics import service as analytics
from knowpay.analytics.dashboard import CREATOR_PANELS, PLATFORM_PANELS, build_dashboard, recent_anomalies
from knowpay.analytics.report import gather, html_report
from knowpay.analytics.source import DEVICE_CLASSES
from knowpay.analytics.store import StoreBusy
from knowpay.catalog.models import KINDS
from knowpay.domain.errors import InvalidRequest
from knowpay.domain.money import EXPONENTS
from knowpay.payments.service import CHANNELS
from knowpay.web.runtime import request_session, runtime
from knowpay.web.views.formatting import CHANNEL_LABELS, KIND_LABELS
from knowpay.web.views.pages import (
    flash_done,
    install_error_pages,
    major_to_minor,
    message_for,
    no_store,
    page_user,
    roles_required,
)

bp = Blueprint("analytics_pages", __name__)
install_error_pages(bp)
bp.after_request(no_store)

FILTER_FIELDS = {"from": "from_", "to": "to", "granularity": "granularity", "channel": "channel", "kind": "kind",
                 "creator_id": "creator_id"}
# Refusals of the filter form, by the service's error code, in the reader's language.
FILTER_MESSAGES = {
    "invalid_date": lazy_gettext("Enter a date such as 2026-11-25."),
    "invalid_range": lazy_gettext("The first day must not come after the last day."),
    "range_too_long": lazy_gettext("That range is too long for these periods: choose weeks or months, or fewer days."),
    "invalid_granularity": lazy_gettext("Choose days, weeks or months."),
    "invalid_channel": lazy_gettext("Choose a payment method from the list."),
    "invalid_kind": lazy_gettext("Choose a kind of product from the list."),
    "unknown_creator": lazy_gettext("No creator has this id."),
}
FILTER_NAMES = {"channel": lazy_gettext("payment method"), "kind": lazy_gettext("kind"),
                "creator_id": lazy_gettext("creator")}
ANOMALY_LABELS = {
    "success_rate_drop": lazy_gettext("Success rate dropped"),
    "failure_reason_spike": lazy_gettext("Failure reason spiked"),
    "refund_spike": lazy_gettext("Refunds above normal"),
    "gmv_off_expectation": lazy_gettext("GMV far from the usual for this hour"),
    "creator_sales_shift": lazy_gettext("A creator's sales changed abruptly"),
}
PERIODS = {"day": lazy_gettext("by day"), "week": lazy_gettext("by week"), "month": lazy_gettext("by month")}
DEVICE_LABELS = {"mobile": lazy_gettext("phone"), "tablet": lazy_gettext("tablet"),
                 "desktop": lazy_gettext("computer"), "unknown": lazy_gettext("unknown")}
# channel_ranking.CLAUSES in the reader's language, with the same numbers.
RANKING_CLAUSES = {
    "ordering_off": lazy_gettext("channel ordering is turned off: the configured order"),
    "predicted": lazy_gettext("%(rate)s predicted success (%(paid)s/%(attempts)s paid on %(device)s for "
                              "%(band)s yuan in %(days)s days; %(channel_paid)s/%(channel_attempts)s on every "
                              "device and amount)"),
    "median": lazy_gettext("median %(seconds)s s to pay"),
    "no_timing": lazy_gettext("no timing yet"),
    "returning": lazy_gettext("the buyer's last successful channel"),
}
DEFAULT_RANKING_AMOUNT = "99.00"


def _filters() -> analytics.Filters:
    values = {field: (request.args.get(name) or "").strip() or None for name, field in FILTER_FIELDS.items()}
    return analytics.Filters(**values)


def _filter_error(error: InvalidRequest) -> dict[str, str]:
    message = FILTER_MESSAGES.get(error.code)
    return {error.param or "form": str(message) if message is not None else message_for(error)}


def _busy_page() -> tuple[str, int]:
    message = gettext("The figures are being brought up to date; try again in a few seconds.")
    return render_template("site/error.html", status=503, message=message), 503


def _labels() -> dict:
    """The words analytics.js puts on the charts, in the reader's language."""
    words = {
        "gross": gettext("GMV"), "net": gettext("Net of refunds"), "refunded": gettext("Refunded"),
        "orders": gettext("Paid orders"), "rate": gettext("Success rate"),
        "creator_earnings": gettext("Creator earnings"), "platform_fees": gettext("Platform fees"),
        "channel_fees": gettext("Channel fees"), "p50": gettext("median"), "p90": gettext("90th percentile"),
        "seconds": gettext("seconds"), "views": gettext("Product views"), "funnel_orders": gettext("Orders"),
        "attempted": gettext("Payment started"), "paid": gettext("Paid"),
        "refund_rate": gettext("Orders refunded"), "amount_rate": gettext("Amount refunded"),
        "mrr": gettext("MRR"), "members": gettext("Members"), "new_members": gettext("New members"),
        "churned_members": gettext("Churned members"), "issued": gettext("Coins issued"),
        "spent": gettext("Coins spent"), "refunded_to_wallet": gettext("Refunded to wallets"),
        "arpu": gettext("Revenue per buyer"), "buyers": gettext("Buyers"),
        "repeat_rate": gettext("Bought again"), "failures": gettext("Failures"),
        "no_method": gettext("default"),
        "weekdays": [gettext("Mon"), gettext("Tue"), gettext("Wed"), gettext("Thu"), gettext("Fri"),
                     gettext("Sat"), gettext("Sun")],
    }
    words["channels"] = {k: str(v) for k, v in CHANNEL_LABELS.items()}
    words["kinds"] = {k: str(v) for k, v in KIND_LABELS.items()}
    return words


def _reason_text(reason: channel_ranking.Reason) -> str:
    """A channel's ranking reason worded in the reader's language."""
    parts = []
    for clause in reason.clauses:
        params = dict(clause.params)
        if "rate" in params:
            params["rate"] = format_percent(params["rate"])
        if "seconds" in params:
            params["seconds"] = f"{params['seconds']:.0f}"
        if "device" in params:
            params["device"] = DEVICE_LABELS.get(params["device"], params["device"])
        parts.append(str(RANKING_CLAUSES[clause.code]) % params)
    return gettext("; ").join(parts)


def _export_args(query: metrics.Query, panel: tuple[str, dict], ignored: tuple[str, ...]) -> dict:
    """The export link's query string for one panel: the dashboard's range and filters as the panel used them."""
    name, extra = panel
    args = {"from": query.start.isoformat(), "to": query.end.isoformat(), "granularity": query.granularity,
            "channel": query.channel, "kind": query.kind, "creator_id": query.creator_id}
    args.update(extra)
    for left_out in ignored:
        args.pop(left_out, None)
    if args.get("granularity") not in metrics.METRICS[name].granularities:
        args.pop("granularity")
    return {k: v for k, v in args.items() if v is not None}


def _dashboard(scope: str):
    rt = runtime()
    session = request_session()
    user = page_user()
    filters = _filters()
    panels = CREATOR_PANELS if scope == "creator" else PLATFORM_PANELS
    area = "creator" if scope == "creator" else "admin"
    context = {"scope": scope, "filters": filters, "channels": CHANNELS, "kinds": KINDS, "errors": {},
               "labels": _labels(), "currency": rt.settings.currency, "periods": PERIODS,
               "exponent": EXPONENTS.get(rt.settings.currency, 2), "panels": panels,
               "export_endpoint": f".{area}_export", "report_endpoint": f".{area}_report",
               "dashboard_endpoint": f".{area}_dashboard", "time_accuracy": format_percent(timing.ACCURACY)}
    if scope == "platform":
        context.update(_channel_context(rt), anomalies=recent_anomalies(session), anomaly_labels=ANOMALY_LABELS,
                       ordering=analytics.get_settings(session)["channel_ordering"])
    try:
        board = build_dashboard(rt, session, user, filters, scope=scope)
    except InvalidRequest as error:
        context["errors"] = _filter_error(error)
        return render_template("analytics/dashboard.html", board=None, **context), 400
    except StoreBusy:
        return _busy_page()
    exports = {key: _export_args(board.query, panel, board.ignored.get(key, ())) for key, panel in panels.items()}
    notes = {key: ", ".join(str(FILTER_NAMES[name]) for name in names) for key, names in board.ignored.items()}
    return render_template("analytics/dashboard.html", board=board, exports=exports, ignored_notes=notes,
                           creator_names=_creator_names(session, board.panels.get("top_creators", [])), **context)


def _creator_names(session, rows: list[dict]) -> dict[str, str]:
    ids = [row["creator_id"] for row in rows]
    if not ids:
        return {}
    return dict(session.execute(select(User.id, User.username).where(User.id.in_(ids))).all())


def _channel_context(rt) -> dict:
    """How checkout would order the channels for the device class and amount in the form, with the reasons."""
    device = request.args.get("device") or "mobile"
    if device not in DEVICE_CLASSES:
        device = "mobile"
    typed = (request.args.get("amount") or "").strip() or DEFAULT_RANKING_AMOUNT
    ranking, amount_error = [], None
    try:
        amount = major_to_minor(typed, rt.settings.currency)
    except InvalidRequest as error:
        amount_error = message_for(error)
    else:
        names = sorted({*rt.channels.names(), "wallet"})
        ranking = [(channel, score, _reason_text(reason)) for channel, score, reason in channel_ranking.rank_channels(
            rt, buyer_id=None, device_class=device, amount=amount, enabled=names, respect_setting=False)]
    return {"ranking": ranking, "ranking_device": device, "ranking_amount": typed, "ranking_error": amount_error,
            "device_labels": DEVICE_LABELS}


def _export(metric: str, *, creator_only: bool):
    """One metric's rows as CSV (the default) or JSON, for the signed-in admin or creator."""
    rt = runtime()
    user = page_user()
    asked = _filters()
    limit = request.args.get("limit", "10")
    ask = analytics.MetricRequest.of(
        metric, asked, creator_id=user.id if creator_only else asked.creator_id,
        group_by=(request.args.get("group_by") or None),
        limit=int(limit) if limit.isascii() and limit.isdigit() and len(limit) < 4 else 0)  # 0: refused, `limit`
    try:
        query, rows = analytics.metric_rows(rt, request_session(), user, ask)
    except StoreBusy:
        return _busy_page()
    name = f"{query.metric}-{query.start}-{query.end}"
    if request.args.get("format") == "json":
        # The API's answer (GET /api/v1/analytics/{metric}), for a browser session.
        return jsonify({"metric": query.metric, "scope": "creator" if query.creator_id else "platform",
                        "creator_id": query.creator_id, "granularity": query.granularity,
                        "from": query.start.isoformat(), "to": query.end.isoformat(), "currency": query.currency,
                        "data": rows})
    return Response(analytics.rows_as_csv(rows), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


def _report(*, creator_only: bool):
    """The range as one self-contained HTML file (the `knowpay analytics report --html` file)."""
    rt = runtime()
    user = page_user()
    asked = _filters()
    query = analytics.build_query(rt, request_session(), user, analytics.MetricRequest.of(
        "gmv", asked, channel=None, kind=None, creator_id=user.id if creator_only else asked.creator_id))
    try:
        data = gather(rt, start=query.start, end=query.end, creator_id=query.creator_id)
    except StoreBusy:
        return _busy_page()
    name = f"knowpay-analytics-{query.start}-{query.end}.html"
    return Response(html_report(data), mimetype="text/html",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


# -- the admin console -----------------------------------------------------------------------------

@bp.get("/admin/analytics")
@roles_required("admin")
def admin_dashboard():
    return _dashboard("platform")


@bp.get("/admin/analytics/export/<metric>")
@roles_required("admin")
def admin_export(metric: str):
    return _export(metric, creator_only=False)


@bp.get("/admin/analytics/report")
@roles_required("admin")
def admin_report():
    return _report(creator_only=False)


@bp.post("/admin/analytics/settings")
@roles_required("admin")
def admin_settings():
    """Turn the checkout's learned channel order on or off."""
    rt = runtime()
    wanted = request.form.get("channel_ordering") == "on"
    with rt.db.transaction() as tx:
        analytics.change_settings(tx, {"channel_ordering": wanted}, user_id=page_user().id, now=rt.clock.now())
    flash_done(gettext("Checkout now orders payment methods by what works best for each buyer.") if wanted else
               gettext("Checkout now lists payment methods in the configured order."))
    return redirect(url_for(".admin_dashboard", _anchor="channels"), code=303)


# -- the creator centre ----------------------------------------------------------------------------

@bp.get("/creator/analytics")
@roles_required("creator")
def creator_dashboard():
    return _dashboard("creator")


@bp.get("/creator/analytics/export/<metric>")
@roles_required("creator")
def creator_export(metric: str):
    return _export(metric, creator_only=True)


@bp.get("/creator/analytics/report")
@roles_required("creator")
def creator_report():
    return _report(creator_only=True)

