"""The daily risk report: what was blocked, challenged and reviewed (counts and amounts), the rules
that fired most, review outcomes (their false-positive rate), shadow comparisons and faults."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta

from sqlalchemy import func, select

from knowpay.context import Context
from knowpay.domain.money import format_major
from knowpay.reconciliation.service import day_bounds, local_day
from knowpay.risk.models import RiskDecision, RiskReport
from knowpay.risk.outcomes import Outcome

TOP_RULES = 10


def yesterday(ctx: Context) -> date:
    return local_day(ctx.clock.now(), ctx.settings.timezone) - timedelta(days=1)


def build_report(ctx: Context, day: date) -> dict:
    start, end = day_bounds(day, ctx.settings.timezone)
    outcomes = {o.value: {"count": 0, "amounts": Counter()} for o in Outcome}
    by_subject: dict[str, Counter] = {}
    fired_live, fired_shadow = Counter(), Counter()
    shadow_differs = Counter()
    faults = Counter()
    challenged_passed = 0
    models = Counter()
    total = 0
    with ctx.db.transaction(write=False) as session:
        for subject, outcome, shadow_outcome, amount, currency, fired, fault_list, passed, version in session.execute(
                select(RiskDecision.subject, RiskDecision.outcome, RiskDecision.shadow_outcome, RiskDecision.amount,
                       RiskDecision.currency, RiskDecision.fired, RiskDecision.faults,
                       RiskDecision.challenge_passed_at, RiskDecision.model_version)
                .where(RiskDecision.created_at >= start, RiskDecision.created_at < end)):
            total += 1
            outcomes[outcome]["count"] += 1
            outcomes[outcome]["amounts"][currency] += amount
            by_subject.setdefault(subject, Counter())[outcome] += 1
            challenged_passed += outcome == Outcome.CHALLENGE and passed is not None
            for f in fired or ():
                (fired_shadow if f.get("shadow") else fired_live)[f["rule"]] += 1
            if shadow_outcome != outcome:
                shadow_differs[f"{outcome}→{shadow_outcome}"] += 1
            for fault in fault_list or ():
                faults[fault.split(":", 1)[0]] += 1
            if version is not None:
                models[f"v{version}"] += 1
        decided = dict(Counter(status for (status,) in session.execute(
            select(RiskDecision.review_status).where(RiskDecision.reviewed_at >= start,
                                                     RiskDecision.reviewed_at < end))))
        pending = session.scalar(select(func.count()).select_from(RiskDecision)
                                 .where(RiskDecision.review_status == "pending")) or 0
    approved, rejected = decided.get("approved", 0), decided.get("rejected", 0)
    rules = sorted(set(fired_live) | set(fired_shadow), key=lambda r: (-(fired_live[r] + fired_shadow[r]), r))
    return {
        "day": day.isoformat(),
        "timezone": ctx.settings.timezone,
        "decisions": total,
        "outcomes": {name: {"count": v["count"], "amounts": dict(v["amounts"])} for name, v in outcomes.items()},
        "challenges_passed": challenged_passed,
        "by_subject": {name: dict(counts) for name, counts in sorted(by_subject.items())},
        "reviews": {"opened": outcomes["review"]["count"], "approved": approved, "rejected": rejected,
                    "pending_now": pending,
                    "false_positive_rate": round(approved / (approved + rejected), 4) if approved + rejected else None},
        "top_rules": [{"rule": r, "fired": fired_live[r], "shadow": fired_shadow[r]} for r in rules[:TOP_RULES]],
        "shadow_differs": dict(shadow_differs),
        "faults": dict(faults),
        "models": dict(models),
    }


def store_daily_report(ctx: Context, day: date) -> dict:
    """Build the day's report and keep it (the scheduler runs this every morning)."""
    body = build_report(ctx, day)
    with ctx.db.transaction() as session:
        row = session.get(RiskReport, day) or RiskReport(day=day)
        row.body, row.created_at = body, ctx.clock.now()
        session.add(row)
    return body


def report_lines(report: dict) -> list[str]:
    def money(amounts: dict) -> str:
        return ", ".join(f"{format_major(v, c)} {c}" for c, v in sorted(amounts.items())) or "0"

    lines = [f"risk report for {report['day']} ({report['timezone']}): {report['decisions']} decisions"]
    for name in ("block", "challenge", "review", "allow"):
        item = report["outcomes"][name]
        extra = f"   ({report['challenges_passed']} passed)" if name == "challenge" else ""
        lines.append(f"  {name:<10} {item['count']:>7}   {money(item['amounts'])}{extra}")
    reviews = report["reviews"]
    rate = reviews["false_positive_rate"]
    lines.append(f"  reviews decided: {reviews['approved']} approved, {reviews['rejected']} rejected "
                 f"(false-positive rate {'n/a' if rate is None else f'{rate:.1%}'}); {reviews['pending_now']} "
                 "waiting now")
    if report["top_rules"]:
        lines.append("  top rules:")
        lines += [f"    {r['rule']:<22} fired {r['fired']:>6}   shadow {r['shadow']:>6}" for r in report["top_rules"]]
    if report["shadow_differs"]:
        lines.append("  shadow would differ: " + ", ".join(f"{k} {v}" for k, v in report["shadow_differs"].items()))
    if report["faults"]:
        lines.append("  faults: " + ", ".join(f"{k} {v}" for k, v in report["faults"].items()))
    return lines
