"""`knowpay analytics report`: a terminal summary of a date range, and a self-contained HTML report
whose charts are drawn by the vendored Apache ECharts, inlined so the file opens anywhere offline."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

from knowpay.analytics import metrics
from knowpay.analytics.models import Anomaly
from knowpay.analytics.store import store_for
from knowpay.context import Context
from knowpay.domain.money import EXPONENTS

ECHARTS = Path(__file__).resolve().parent.parent / "web" / "static" / "vendor" / "echarts" / "echarts.min.js"


def granularity_for(start: date, end: date) -> str:
    days = (end - start).days + 1
    return "day" if days <= 92 else "week" if days <= 731 else "month"


@dataclass
class ReportData:
    query: metrics.Query
    totals: dict
    series: dict[str, list[dict]]
    anomalies: list[dict]


def _sum(rows: list[dict], key: str) -> int:
    return sum(r.get(key) or 0 for r in rows)


def gather(ctx: Context, *, start: date, end: date, creator_id: str | None = None) -> ReportData:
    gran = granularity_for(start, end)
    # Whole periods, as the time series have them, so the totals and the charts agree.
    base = metrics.widened(metrics.Query(metric="gmv", start=start, end=end, granularity=gran, creator_id=creator_id,
                                         currency=ctx.settings.currency, timezone=ctx.settings.timezone,
                                         now=ctx.clock.now()))
    asks = {
        "gmv": {}, "net_revenue": {}, "success_rate": {}, "success_by_channel": {"group_by": "channel"},
        "time_to_pay_by_channel": {"group_by": "channel", "granularity": "month"}, "funnel": {}, "refunds": {},
        "heatmap": {}, "top_products": {}, "top_creators": {}, "failure_reasons": {}, "refund_reasons": {},
        "cohorts": {"granularity": "month"}, "mrr": {}, "coins": {}, "arpu": {},
    }
    names = {"success_by_channel": "success_rate", "time_to_pay_by_channel": "time_to_pay"}
    series = {}
    with store_for(ctx.settings).reader(current=True) as con:
        for key, changes in asks.items():
            query = replace(base, metric=names.get(key, key), **changes)
            series[key] = metrics.compute(con, query)
        p50, p90, paid = con.execute(
            "SELECT quantile_cont(seconds_to_pay, 0.5), quantile_cont(seconds_to_pay, 0.9), count(*) FROM payments "
            "WHERE status = 'succeeded' AND created_local >= ? AND created_local < ?"
            + (" AND order_key IN (SELECT order_key FROM sales WHERE creator_id = ?)" if creator_id else ""),
            [base.lower, base.upper, *([creator_id] if creator_id else [])]).fetchall()[0]
    gmv, net, sr, funnel, refunds = (series[k] for k in ("gmv", "net_revenue", "success_rate", "funnel", "refunds"))
    totals = {
        "gross": _sum(gmv, "gross"), "refunded": _sum(gmv, "refunded"), "net": _sum(gmv, "net"),
        "orders": _sum(gmv, "orders"), "net_revenue": _sum(net, "net"), "channel_fees": _sum(net, "channel_fees"),
        "platform_fees": _sum(net, "platform_fees"), "attempts": _sum(sr, "attempts"),
        "succeeded": _sum(sr, "succeeded"), "success_rate": metrics.rate(_sum(sr, "succeeded"), _sum(sr, "attempts")),
        "p50_seconds": round(p50, 1) if p50 is not None else None,
        "p90_seconds": round(p90, 1) if p90 is not None else None, "paid_payments": paid,
        "views": _sum(funnel, "views"), "abandoned": _sum(funnel, "abandoned"),
        "funnel_orders": _sum(funnel, "orders"),
        "refund_rate": metrics.rate(_sum(refunds, "refunded_orders"), _sum(refunds, "paid_orders")),
    }
    anomalies = []
    if creator_id is None:
        with ctx.db.transaction(write=False) as session:
            tz = ZoneInfo(ctx.settings.timezone)
            lower, upper = metrics.to_utc(base.lower, tz), metrics.to_utc(base.upper, tz)
            for a in session.scalars(select(Anomaly).where(Anomaly.created_at >= lower, Anomaly.created_at < upper)
                                     .order_by(Anomaly.created_at)):
                anomalies.append({"kind": a.kind, "subject": a.subject, "message": a.message,
                                  "at": a.created_at.isoformat(timespec="minutes") + "Z"})
    return ReportData(base, totals, series, anomalies)


def money(amount: int | None, currency: str) -> str:
    exponent = EXPONENTS.get(currency, 2)
    value = (amount or 0) / 10**exponent
    return f"{value:,.{exponent}f} {currency.upper()}"


def terminal_summary(data: ReportData) -> str:
    q, t, cur = data.query, data.totals, data.query.currency
    scope = f"creator {q.creator_id}" if q.creator_id else "platform"
    lines = [
        f"KnowPay analytics {q.start} .. {q.end} ({scope}, {q.timezone}, by {q.granularity})",
        "",
        f"  GMV              {money(t['gross'], cur):>22}   refunded {money(t['refunded'], cur)}",
        f"  net GMV          {money(t['net'], cur):>22}   paid orders {t['orders']:,}",
        (f"  net revenue      {money(t['net_revenue'], cur):>22}   channel fees {money(t['channel_fees'], cur)}, "
         f"platform fees {money(t['platform_fees'], cur)}"),
        f"  success rate     {t['success_rate']:>22.1%}   {t['succeeded']:,} of {t['attempts']:,} attempts",
        f"  time to pay      {_secs(t['p50_seconds']):>22}   p90 {_secs(t['p90_seconds'])}",
        f"  funnel           {t['views']:>10,} views → {t['funnel_orders']:,} orders; {t['abandoned']:,} abandoned",
        f"  refund rate      {t['refund_rate']:>22.1%}",
        "",
        "  top products:",
    ]
    for row in data.series["top_products"][:5]:
        lines.append(f"    {(row['title'] or row['product_id'])[:40]:<40} {row['orders']:>7,} orders "
                     f"{money(row['net'], cur):>20}")
    if not data.series["top_products"]:
        lines.append("    (no sales)")
    lines.append("  success rate by channel:")
    by_channel: dict[str, list[int]] = {}
    for row in data.series["success_by_channel"]:
        acc = by_channel.setdefault(row["channel"], [0, 0])
        acc[0] += row["attempts"]
        acc[1] += row["succeeded"]
    for channel, (attempts, succeeded) in sorted(by_channel.items()):
        lines.append(f"    {channel:<14} {metrics.rate(succeeded, attempts):>7.1%} of {attempts:,}")
    if data.anomalies:
        lines.append(f"  anomalies: {len(data.anomalies)}")
        lines.extend(f"    {a['at']} {a['kind']}: {a['message']}" for a in data.anomalies[:10])
    else:
        lines.append("  anomalies: none")
    return "\n".join(lines)


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} s"


CHARTS_JS = r"""
const D = JSON.parse(document.getElementById('report-data').textContent);
const money = v => (v / Math.pow(10, D.exponent)).toFixed(D.exponent);
function chart(id, option) { const c = echarts.init(document.getElementById(id)); c.setOption(option);
  window.addEventListener('resize', () => c.resize()); }
const periods = D.series.gmv.map(r => r.period);
chart('gmv', {tooltip: {trigger: 'axis'}, legend: {}, xAxis: {type: 'category', data: periods},
  yAxis: [{type: 'value', name: D.currency}, {type: 'value', name: 'orders'}],
  series: [{name: 'gross', type: 'line', data: D.series.gmv.map(r => money(r.gross))},
           {name: 'net', type: 'line', data: D.series.gmv.map(r => money(r.net))},
           {name: 'orders', type: 'bar', yAxisIndex: 1, data: D.series.gmv.map(r => r.orders)}]});
const channels = [...new Set(D.series.success_by_channel.map(r => r.channel))];
chart('success', {tooltip: {trigger: 'axis'}, legend: {}, xAxis: {type: 'category', data: periods},
  yAxis: {type: 'value', min: 0, max: 1}, series: channels.map(ch => ({name: ch, type: 'line',
  data: D.series.success_by_channel.filter(r => r.channel === ch).map(r => r.attempts ? r.rate : null)}))});
const f = D.totals;
chart('funnel', {tooltip: {}, series: [{type: 'funnel', sort: 'none', label: {formatter: '{b}: {c}'},
  data: [{name: 'views', value: f.views}, {name: 'orders', value: f.funnel_orders},
         {name: 'attempted', value: D.series.funnel.reduce((a, r) => a + r.attempted, 0)},
         {name: 'paid', value: D.series.funnel.reduce((a, r) => a + r.paid, 0)}]}]});
const days = ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'];
const hm = D.series.heatmap.map(r => [r.hour, r.weekday - 1, r.orders]);
chart('heatmap', {tooltip: {}, xAxis: {type: 'category', data: [...Array(24).keys()]},
  yAxis: {type: 'category', data: days}, visualMap: {min: 0, max: Math.max(1, ...hm.map(x => x[2])),
  calculable: true, orient: 'horizontal', left: 'center', bottom: 0},
  series: [{type: 'heatmap', data: hm}], grid: {bottom: 80}});
chart('refunds', {tooltip: {trigger: 'axis'}, xAxis: {type: 'category', data: periods}, yAxis: {type: 'value'},
  series: [{name: 'refund rate', type: 'line', data: D.series.refunds.map(r => r.rate)}]});
chart('mrr', {tooltip: {trigger: 'axis'}, legend: {}, xAxis: {type: 'category', data: D.series.mrr.map(r => r.period)},
  yAxis: [{type: 'value', name: D.currency}, {type: 'value', name: 'members'}],
  series: [{name: 'MRR', type: 'line', data: D.series.mrr.map(r => money(r.mrr))},
           {name: 'members', type: 'bar', yAxisIndex: 1, data: D.series.mrr.map(r => r.members)}]});
const ttp = D.series.time_to_pay_by_channel.filter(r => r.payments);
chart('ttp', {tooltip: {trigger: 'axis'}, legend: {}, xAxis: {type: 'category',
  data: ttp.map(r => r.channel + ' ' + r.period.slice(0, 7))}, yAxis: {type: 'value', name: 's'},
  series: [{name: 'p50', type: 'bar', data: ttp.map(r => r.p50_seconds)},
           {name: 'p90', type: 'bar', data: ttp.map(r => r.p90_seconds)}]});
"""


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body or '<tr><td>none</td></tr>'}</tbody></table>"


def html_report(data: ReportData) -> str:
    """One HTML file: the data as JSON, ECharts inlined, no request to anywhere."""
    q, t, cur = data.query, data.totals, data.query.currency
    payload = {"currency": cur, "exponent": EXPONENTS.get(cur, 2), "totals": t, "series": data.series}
    data_json = json.dumps(payload, ensure_ascii=False, default=str).replace("</", "<\\/")
    script = ECHARTS.read_text(encoding="utf-8").replace("</script", "<\\/script")
    scope = f"creator {q.creator_id}" if q.creator_id else "platform"
    cohort_rows = [[r["period"][:7], r["buyers"], *[f"{x:.0%}" for x in r["retention"]]]
                   for r in data.series["cohorts"]]
    width = max((len(r["retention"]) for r in data.series["cohorts"]), default=0)
    top = [[r["title"] or r["product_id"], r["kind"], r["orders"], money(r["net"], cur)]
           for r in data.series["top_products"]]
    reasons = [[r["channel"], r["method"] or "", r["failure_code"], r["failures"], f"{r['share']:.0%}"]
               for r in data.series["failure_reasons"][:15]]
    anomalies = [[a["at"], a["kind"], a["message"]] for a in data.anomalies]
    cards = [("GMV", money(t["gross"], cur)), ("net GMV", money(t["net"], cur)), ("paid orders", f"{t['orders']:,}"),
             ("net revenue", money(t["net_revenue"], cur)), ("success rate", f"{t['success_rate']:.1%}"),
             ("time to pay p50 / p90", f"{_secs(t['p50_seconds'])} / {_secs(t['p90_seconds'])}"),
             ("refund rate", f"{t['refund_rate']:.1%}")]
    card_html = "".join(f"<div class=card><div class=k>{html.escape(k)}</div><div class=v>{html.escape(v)}</div></div>"
                        for k, v in cards)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>KnowPay analytics {q.start} – {q.end}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 1rem; }} .card {{ border: 1px solid #ddd; border-radius: 6px;
padding: .75rem 1rem; min-width: 10rem; }} .k {{ color: #666; font-size: .85rem; }} .v {{ font-size: 1.3rem; }}
.chart {{ height: 340px; margin: 1rem 0 2rem; }} table {{ border-collapse: collapse; margin-bottom: 2rem; }}
td, th {{ border: 1px solid #ddd; padding: .25rem .6rem; text-align: right; }} th {{ background: #f5f5f5; }}
</style></head><body>
<h1>KnowPay analytics</h1>
<p>{q.start} to {q.end} · {html.escape(scope)} · periods by {q.granularity} in {html.escape(q.timezone)} ·
amounts in {cur.upper()}</p>
<div class=cards>{card_html}</div>
<h2>GMV and orders</h2><div id=gmv class=chart></div>
<h2>Payment success rate by channel</h2><div id=success class=chart></div>
<h2>Time to pay by channel (seconds)</h2><div id=ttp class=chart></div>
<h2>Funnel</h2><div id=funnel class=chart></div>
<h2>Paid orders by weekday and hour</h2><div id=heatmap class=chart></div>
<h2>Refund rate</h2><div id=refunds class=chart></div>
<h2>Memberships</h2><div id=mrr class=chart></div>
<h2>Cohorts by first-purchase month</h2>
{_table(["cohort", "buyers", *[f"+{i}" for i in range(width)]], cohort_rows)}
<h2>Top products</h2>{_table(["product", "kind", "orders", "net"], top)}
<h2>Failure reasons</h2>{_table(["channel", "method", "code", "failures", "share"], reasons)}
<h2>Anomalies</h2>{_table(["at", "kind", "what"], anomalies)}
<script id="report-data" type="application/json">{data_json}</script>
<script>{script}</script>
<script>{CHARTS_JS}</script>
</body></html>
"""
