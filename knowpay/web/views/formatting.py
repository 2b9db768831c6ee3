"""How values read on a page: amounts (¥99.00), coins, dates in the platform's time zone, and the
names of statuses, product kinds and payment channels in the reader's language."""

from __future__ import annotations

from datetime import datetime

from flask import Flask
from flask_babel import format_datetime, format_decimal, get_locale, gettext, lazy_gettext, ngettext

from knowpay.domain.money import Money

STATUS_LABELS = {
    "order": {
        "pending": lazy_gettext("Awaiting payment"), "paid": lazy_gettext("Paid"),
        "partially_refunded": lazy_gettext("Partly refunded"), "refunded": lazy_gettext("Refunded"),
        "cancelled": lazy_gettext("Cancelled"), "expired": lazy_gettext("Expired"),
    },
    "payment": {
        "requires_action": lazy_gettext("Waiting for payment"), "processing": lazy_gettext("Processing"),
        "succeeded": lazy_gettext("Succeeded"), "failed": lazy_gettext("Failed"),
        "cancelled": lazy_gettext("Cancelled"), "expired": lazy_gettext("Expired"),
    },
    "refund": {
        "pending": lazy_gettext("In progress"), "succeeded": lazy_gettext("Refunded"),
        "failed": lazy_gettext("Failed"),
    },
    "payout": {
        "requested": lazy_gettext("Requested"), "approved": lazy_gettext("Approved"),
        "paid": lazy_gettext("Paid out"), "rejected": lazy_gettext("Rejected"),
    },
    "product": {
        "draft": lazy_gettext("Draft"), "published": lazy_gettext("Published"),
        "archived": lazy_gettext("Archived"),
    },
    "entitlement": {
        "active": lazy_gettext("Active"), "revoked": lazy_gettext("Revoked"), "expired": lazy_gettext("Expired"),
    },
    "delivery": {
        "pending": lazy_gettext("Pending"), "succeeded": lazy_gettext("Delivered"), "failed": lazy_gettext("Failed"),
    },
    "run": {
        "running": lazy_gettext("Running"), "completed": lazy_gettext("Completed"), "failed": lazy_gettext("Failed"),
    },
}
# The colour family of a status badge (the text always says the status too).
STATUS_TONES = {
    "paid": "good", "succeeded": "good", "published": "good", "active": "good", "completed": "good",
    "approved": "info", "processing": "info", "requires_action": "info", "pending": "info", "requested": "info",
    "running": "info", "partially_refunded": "warn", "refunded": "muted", "draft": "muted", "archived": "muted",
    "cancelled": "muted", "expired": "muted", "revoked": "muted", "failed": "bad", "rejected": "bad",
}
KIND_LABELS = {
    "course": lazy_gettext("Course"), "ebook": lazy_gettext("E-book"), "audio": lazy_gettext("Audio"),
    "video": lazy_gettext("Video"), "membership": lazy_gettext("Membership"),
    "consulting": lazy_gettext("1:1 consulting"), "coin_pack": lazy_gettext("Coin pack"),
}
CHANNEL_LABELS = {
    "alipay": lazy_gettext("Alipay"), "wechat": lazy_gettext("WeChat Pay"), "wallet": lazy_gettext("Coin wallet"),
    "stripe": lazy_gettext("Bank card"), "bank_transfer": lazy_gettext("Bank transfer"),
    "sandbox": lazy_gettext("Sandbox (test payments)"),
}
INTERVAL_LABELS = {
    "day": lazy_gettext("day"), "week": lazy_gettext("week"), "month": lazy_gettext("month"),
    "year": lazy_gettext("year"),
}


def money(amount: int | None, currency: str) -> str:
    """9900, "cny" → ¥99.00 (the reader's locale decides the form)."""
    if amount is None:
        return "—"
    return Money(int(amount), currency).format(str(get_locale()))


def coins(amount: int | None) -> str:
    """1000 → "1,000 coins" / "1,000 个知识币"."""
    count = int(amount or 0)
    return ngettext("%(amount)s coin", "%(amount)s coins", count, amount=format_decimal(count))


def when(moment: datetime | None) -> str:
    """A stored (naive UTC) time in the platform's time zone, e.g. 2026-11-25 12:00."""
    if moment is None:
        return "—"
    return format_datetime(moment, "yyyy-MM-dd HH:mm")


def status_label(status: str | None, machine: str) -> str:
    if status is None:
        return "—"
    return str(STATUS_LABELS.get(machine, {}).get(status, status))


def status_tone(status: str | None) -> str:
    return STATUS_TONES.get(status or "", "muted")


def kind_label(kind: str) -> str:
    return str(KIND_LABELS.get(kind, kind))


def channel_label(channel: str) -> str:
    return str(CHANNEL_LABELS.get(channel, channel))


def plan_label(plan: dict | None) -> str:
    """{"interval": "month", "interval_count": 1} → "every 1 month"."""
    if not plan:
        return ""
    return gettext("every %(count)s %(interval)s", count=plan.get("interval_count", 1),
                   interval=INTERVAL_LABELS.get(plan.get("interval", ""), plan.get("interval", "")))


def install_filters(app: Flask) -> None:
    app.jinja_env.filters.update(money=money, coins=coins, when=when, status_label=status_label,
                                 status_tone=status_tone, kind_label=kind_label, channel_label=channel_label,
                                 plan_label=plan_label)
