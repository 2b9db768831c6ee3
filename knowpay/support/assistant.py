"""The payment assistant: answers a buyer in Chinese or English from the buyer's own data.

It recognises a few intents by their wording — paid but no access, refund, declined payment,
receipt, how to pay, a person please — and answers the rest from the FAQ. It reads only the
caller's orders and payments. It changes nothing but one thing: for "paid but no access" it asks
the channel about the buyer's open payments (主动查单) and completes a payment the channel says was
paid. Everything else that would change something (filing a refund, opening a ticket, paying again)
is offered as an action: a button whose request the buyer's client sends if the buyer presses it.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from knowpay.access.models import Entitlement
from knowpay.accounts.models import User
from knowpay.context import Context
from knowpay.domain.errors import InvalidRequest
from knowpay.domain.money import Money
from knowpay.domain.states import OrderStatus, PaymentStatus
from knowpay.orders.models import Order
from knowpay.payments.capture import OPEN
from knowpay.payments.models import Payment
from knowpay.refunds.service import refund_window_days, refundable_left
from knowpay.support import faq
from knowpay.support.service import MAX_MESSAGE, check_open_payments, check_text

PAID = (OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED)
RECENT = timedelta(days=30)
SHOWN = 3  # at most this many purchases are named in one answer

CHANNEL_NAMES = {
    "alipay": ("支付宝", "Alipay"), "wechat": ("微信支付", "WeChat Pay"), "stripe": ("银行卡", "card"),
    "wallet": ("钱包金币", "wallet coins"), "bank_transfer": ("银行转账", "bank transfer"),
    "sandbox": ("沙箱支付", "the sandbox"), "installments": ("花呗分期", "Huabei installments"),
}
# Recorded failure codes in plain words; anything else is told with the channel's own message.
DECLINE_REASONS = {
    "insufficient_balance": ("余额不足", "there was not enough balance"),
    "insufficient_funds": ("余额不足", "there were not enough funds"),
    "card_declined": ("发卡行拒绝了这笔交易", "your card's bank declined it"),
    "generic_decline": ("发卡行拒绝了这笔交易", "your card's bank declined it"),
    "do_not_honor": ("发卡行拒绝了这笔交易", "your card's bank declined it"),
    "expired_card": ("银行卡已过期", "the card has expired"),
    "incorrect_cvc": ("安全码（CVC）不正确", "the card's security code (CVC) was wrong"),
    "lost_card": ("这张卡已挂失", "the card is reported lost"),
    "stolen_card": ("这张卡已挂失", "the card is reported lost"),
    "authentication_required": ("需要完成银行的身份验证但未完成", "your bank asked you to confirm it and that did not happen"),
    "processing_error": ("支付渠道处理出错", "the payment channel had a processing error"),
    "declined": ("支付渠道拒绝了这笔付款", "the payment channel declined it"),
    "payment_failed": ("支付渠道报告付款失败", "the payment channel reported it as failed"),
    "channel_failed": ("支付渠道报告付款失败", "the payment channel reported it as failed"),
    "channel_closed": ("交易在支付渠道已关闭（未在时限内付款或已取消）",
                       "the trade was closed at the channel (not paid in time, or cancelled)"),
    "trade_closed": ("交易在支付渠道已关闭（未在时限内付款或已取消）",
                     "the trade was closed at the channel (not paid in time, or cancelled)"),
    "channel_unavailable": ("当时无法连接支付渠道，没有扣款", "we could not reach the payment channel then; no money was taken"),
    "risk_blocked": ("未通过安全审核", "it did not pass our security review"),
    "risk_rejected": ("未通过安全审核", "it did not pass our security review"),
}

_ID = re.compile(r"\b(ord|pay)_[0-9A-Za-z]{22}\b")
_CJK = re.compile(r"[\u3400-\u9fff]")


def _rx(*parts: str) -> re.Pattern:
    return re.compile("|".join(parts))


HUMAN = _rx(r"人工", r"真人", r"转客服", r"找客服", r"联系客服", r"客服人员", r"human", r"real person",
            r"(talk|speak|chat) (to|with) (a |an |some)?(person|agent|one|body|support|staff)", r"customer service")
PAID_WORDS = _rx(r"付了", r"付过", r"已付", r"已经付", r"已支付", r"支付了", r"付款了", r"付完", r"扣了", r"扣款", r"扣钱",
                 r"买了", r"购买了", r"\bpaid\b", r"\bcharged\b", r"\bbought\b", r"\bpurchased\b", r"went through",
                 r"money (was |got )?(taken|deducted)", r"\bdebited\b")
NO_ACCESS = _rx(r"看不了", r"看不到", r"打不开", r"没有权限", r"没权限", r"无法访问", r"不能看", r"不能听", r"没开通", r"未开通",
                r"没有开通", r"没到账", r"没生效", r"没有内容", r"no access", r"(can'?t|cannot|can not|unable to) "
                r"(access|open|see|watch|read|listen|find)", r"(don'?t|do not) (have|see|get)", r"not (been )?"
                r"(unlocked|granted|activated|available)", r"\blocked\b", r"still (shows?|says|is) ", r"not showing")
STUCK = _rx(r"(一直|还在|仍然|还是|显示).{0,6}(处理中|待支付|未支付|等待|未付款)", r"卡住", r"\bstuck\b",
            r"still (pending|processing|unpaid)", r"pending for")
REFUND = _rx(r"退款", r"退钱", r"退费", r"要回.{0,4}钱", r"refund", r"money back", r"get my money")
# Asking how refunds work, rather than for one: the FAQ answers that.
ABOUT_REFUNDS = _rx(r"多久", r"多长时间", r"几天", r"什么时候", r"规则", r"政策", r"how long", r"when (will|do|does)",
                    r"how many days", r"policy", r"rules")
DECLINED = _rx(r"拒绝", r"被拒", r"失败", r"不成功", r"没成功", r"没有成功", r"付不了", r"支付不了", r"无法支付", r"不能支付",
               r"declin", r"reject", r"\bfail", r"(didn'?t|did not|won'?t|wouldn'?t) go through",
               r"(can'?t|cannot|unable to) pay")
RECEIPT = _rx(r"收据", r"发票", r"凭证", r"小票", r"账单", r"receipt", r"invoice", r"proof of (payment|purchase)")
HOW_TO_PAY = _rx(r"(怎么|如何|怎样|能不能|可不可以|可以|能否|能用|支持|用).{0,8}(付|支付|买|购买)",
                 r"(付款|支付)(方式|方法|渠道)", r"how (do|can|to|should) (i |we )?(pay|buy|purchase|use)",
                 r"pay(ing)? (with|by|via|using|through)", r"payment (method|option)s?", r"do you (take|accept|support)")
CHANNEL_WORDS = {
    "installments": _rx(r"分期", r"花呗", r"installment", r"huabei"),
    "alipay": _rx(r"支付宝", r"alipay"),
    "wechat": _rx(r"微信", r"wechat", r"weixin"),
    "stripe": _rx(r"信用卡", r"银行卡", r"借记卡", r"\bcards?\b", r"visa", r"mastercard", r"stripe"),
    "wallet": _rx(r"钱包", r"金币", r"余额", r"\bcoins?\b", r"wallet"),
    "bank_transfer": _rx(r"转账", r"汇款", r"对公", r"bank transfer", r"\bwire\b"),
}


@dataclass(frozen=True)
class Answer:
    reply: str
    intent: str
    actions: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Ask:
    message: str
    text: str  # normalised: NFKC, lower case
    lang: str  # zh-CN | en
    order_ids: tuple[str, ...]
    payment_ids: tuple[str, ...]

    def t(self, zh: str, en: str) -> str:
        return zh if self.lang == "zh-CN" else en


def resolve_locale(locale: str | None, message: str) -> str:
    """zh-CN or en: as asked, else Chinese when the message has Chinese characters."""
    if locale is None or not locale.strip():
        return "zh-CN" if _CJK.search(message) else "en"
    lowered = locale.strip().lower()
    if lowered.startswith("zh"):
        return "zh-CN"
    if lowered.startswith("en"):
        return "en"
    raise InvalidRequest("locale must be zh-CN or en.", code="invalid_locale", param="locale")


def detect_intent(text: str) -> str:
    """The first intent whose wording the (normalised) message uses; `faq` when none does."""
    if HUMAN.search(text):
        return "handover"
    if (PAID_WORDS.search(text) and NO_ACCESS.search(text)) or STUCK.search(text):
        return "paid_no_access"
    if REFUND.search(text):
        return "faq" if ABOUT_REFUNDS.search(text) else "refund"
    if DECLINED.search(text):
        return "payment_declined"
    if RECEIPT.search(text):
        return "receipt"
    if HOW_TO_PAY.search(text) or (any(p.search(text) for p in CHANNEL_WORDS.values())
                                   and re.search(r"付|支付|pay", text)):
        return "how_to_pay"
    return "faq"


def answer(ctx: Context, *, buyer: User, message: str, locale: str | None = None,
           about: tuple[str, ...] = ()) -> Answer:
    """Answer one message from `buyer`; never reads another buyer's orders or payments.

    `about` names orders or payments the question concerns besides those in its text (a help page
    opened from an order); they are checked like ids typed in the message.
    """
    check_text(message, param="message", limit=MAX_MESSAGE)
    text = unicodedata.normalize("NFKC", message).lower()
    ids = [m.group(0) for m in _ID.finditer(unicodedata.normalize("NFKC", message))]
    ids += [i for i in about if _ID.fullmatch(i) and i not in ids]
    ask = Ask(message=message, text=text, lang=resolve_locale(locale, message),
              order_ids=tuple(i for i in ids if i.startswith("ord_")),
              payment_ids=tuple(i for i in ids if i.startswith("pay_")))
    intent = detect_intent(text)
    return HANDLERS[intent](ctx, buyer, ask)


# Reading the buyer's own data ----------------------------------------------------------------------

def _own_payments(session: Session, buyer: User, ask: Ask, *, statuses, since: datetime | None = None,
                  limit: int = 10) -> list[Payment]:
    """The buyer's payments in `statuses`, newest first; only those named, when the message names any."""
    stmt = select(Payment).where(Payment.buyer_id == buyer.id, Payment.status.in_(statuses))
    if ask.payment_ids or ask.order_ids:
        stmt = stmt.where(Payment.id.in_(ask.payment_ids) | Payment.order_id.in_(ask.order_ids))
    elif since is not None:
        stmt = stmt.where(Payment.created_at >= since)
    return list(session.scalars(stmt.order_by(Payment.created_at.desc(), Payment.id.desc()).limit(limit)))


def _unknown_ids(session: Session, buyer: User, ask: Ask) -> list[str]:
    """Ids in the message that are not the buyer's: answered as not found, whoever they belong to."""
    mine = set(session.scalars(select(Order.id).where(Order.id.in_(ask.order_ids), Order.buyer_id == buyer.id)))
    mine |= set(session.scalars(select(Payment.id).where(Payment.id.in_(ask.payment_ids),
                                                         Payment.buyer_id == buyer.id)))
    return [i for i in (*ask.order_ids, *ask.payment_ids) if i not in mine]


def _not_found_note(ask: Ask, unknown: list[str]) -> str:
    if not unknown:
        return ""
    return ask.t(f"我在您的订单中没有找到 {', '.join(unknown)}。", f"I could not find {', '.join(unknown)} among yours. ")


def _title(order: Order) -> str:
    return " / ".join(item.title for item in order.items) if order.items else order.id


def _money(amount: int, currency: str) -> str:
    return Money(amount, currency).format()


def _channel(ask: Ask, name: str) -> str:
    zh, en = CHANNEL_NAMES.get(name, (name, name))
    return ask.t(zh, en)


def _day(ctx: Context, moment: datetime) -> str:
    return moment.replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(ctx.settings.timezone)).strftime("%Y-%m-%d")


# Actions: what the buyer's client sends when the buyer presses the button ----------------------------

def _open_ticket(ask: Ask, *, category: str, order_id: str | None = None, payment_id: str | None = None) -> dict:
    subject = ask.message.strip().splitlines()[0][:80] or ask.t("求助", "Help")
    body = {"subject": subject, "body": ask.message, "category": category}
    if payment_id:
        body["payment_id"] = payment_id
    elif order_id:
        body["order_id"] = order_id
    return {"type": "open_ticket", "label": ask.t("联系人工客服", "Ask a person"), "method": "POST",
            "path": "/api/v1/tickets", "body": body}


def _view_library(ask: Ask) -> dict:
    return {"type": "view_entitlements", "label": ask.t("查看我的内容", "Open my library"), "method": "GET",
            "path": "/api/v1/entitlements"}


def _view_order(ask: Ask, order: Order) -> dict:
    return {"type": "view_order", "label": ask.t(f"查看订单：{_title(order)}", f"View order: {_title(order)}"),
            "method": "GET", "path": f"/api/v1/orders/{order.id}", "order_id": order.id}


# Intents -------------------------------------------------------------------------------------------

def paid_no_access(ctx: Context, buyer: User, ask: Ask) -> Answer:
    """Ask the channel about the buyer's open payments; complete those it says were paid."""
    now = ctx.clock.now()
    with ctx.db.transaction(write=False) as session:
        unknown = _unknown_ids(session, buyer, ask)
        open_payments = _own_payments(session, buyer, ask, statuses=OPEN, since=now - timedelta(days=7), limit=SHOWN)
    checks = check_open_payments(ctx, open_payments)
    note = _not_found_note(ask, unknown)
    with ctx.db.transaction(write=False) as session:
        lines: list[str] = []
        actions: list[dict] = []
        for check in checks:
            payment = session.get(Payment, check.payment_id)
            order = session.get(Order, payment.order_id)
            what = f"{_money(payment.amount, payment.currency)}（{_title(order)}）" if ask.lang == "zh-CN" else \
                f"{_money(payment.amount, payment.currency)} for “{_title(order)}”"
            if check.after == PaymentStatus.SUCCEEDED:
                lines.append(ask.t(
                    f"我刚向{_channel(ask, check.channel)}查询了您的付款 {what}：已付款成功。订单已确认，内容已为您开通。",
                    f"I just checked with {_channel(ask, check.channel)}: your payment of {what} went through. "
                    "The order is now confirmed and your access is active."))
                if not any(a["type"] == "view_entitlements" for a in actions):
                    actions.append(_view_library(ask))
            elif check.after == PaymentStatus.FAILED:
                lines.append(ask.t(
                    f"我向{_channel(ask, check.channel)}查询了您的付款 {what}：渠道显示未成功，没有扣款。您可以重新付款。",
                    f"I checked with {_channel(ask, check.channel)}: your payment of {what} did not go through, "
                    "so no money was taken. You can pay again."))
            else:
                lines.append(ask.t(
                    f"我向{_channel(ask, check.channel)}查询了您的付款 {what}：渠道尚未收到这笔钱。如果您刚刚付款，"
                    "请稍等一分钟再问我；如果钱已经扣了，请联系人工客服，我们会追查。",
                    f"I checked with {_channel(ask, check.channel)} about your payment of {what}: the channel has "
                    "not received it yet. If you have just paid, ask me again in a minute; if money has left "
                    "your account, ask a person and support will trace it."))
                actions.append(_open_ticket(ask, category="paid_no_access", payment_id=check.payment_id))
        if checks:
            return Answer(note + "\n".join(lines), "paid_no_access", actions)
        transfers = [p for p in _own_payments(session, buyer, ask, statuses=OPEN, since=now - timedelta(days=7))
                     if p.channel == "bank_transfer"]
        if transfers:
            payment = transfers[0]
            reference = (payment.action or {}).get("reference", "")
            return Answer(note + ask.t(
                f"您的银行转账 {_money(payment.amount, payment.currency)} 还在等待到账确认（附言：{reference}）。"
                "款项到账并核对后会自动开通。",
                f"Your bank transfer of {_money(payment.amount, payment.currency)} is waiting to be matched "
                f"(reference {reference}). Access opens as soon as the transfer is confirmed."),
                "paid_no_access", [_view_order(ask, session.get(Order, payment.order_id))])
        return _access_of_paid_orders(ctx, session, buyer, ask, note)


def _access_of_paid_orders(ctx: Context, session: Session, buyer: User, ask: Ask, note: str) -> Answer:
    """No open payment: say what the buyer's recent paid orders give, and hand over what looks wrong."""
    stmt = select(Order).where(Order.buyer_id == buyer.id, Order.status.in_(PAID))
    if ask.order_ids or ask.payment_ids:
        stmt = stmt.where(Order.id.in_(ask.order_ids) | Order.id.in_(
            select(Payment.order_id).where(Payment.id.in_(ask.payment_ids), Payment.buyer_id == buyer.id)))
    else:
        stmt = stmt.where(Order.paid_at >= ctx.clock.now() - RECENT)
    orders = list(session.scalars(stmt.order_by(Order.paid_at.desc()).limit(SHOWN)))
    if not orders:
        return Answer(note + ask.t(
            "我没有找到您最近待确认或已付款的订单。如果钱已经扣了，请联系人工客服，并附上支付渠道的交易单号。",
            "I found no recent payment of yours waiting or paid. If money has left your account, ask a person "
            "and include the transaction number from your payment app."),
            "paid_no_access", [_open_ticket(ask, category="paid_no_access")])
    lines, actions = [], []
    for order in orders:
        # Active, whatever its dates: a membership renewal starts when the current period ends.
        active = session.scalars(select(Entitlement.product_id).where(
            Entitlement.order_id == order.id, Entitlement.status == "active")).all()
        wanted = {item.product_id for item in order.items if item.kind != "coin_pack"}
        if wanted <= set(active):
            lines.append(ask.t(f"订单“{_title(order)}”已付款，内容已开通。",
                               f"Your order “{_title(order)}” is paid and its access is active."))
        else:
            lines.append(ask.t(f"订单“{_title(order)}”已付款，但内容没有全部开通。我已为您准备好工单，请提交给人工客服。",
                               f"Your order “{_title(order)}” is paid but its access is not all active. "
                               "I have prepared a ticket for support: press the button to send it."))
            actions.append(_open_ticket(ask, category="paid_no_access", order_id=order.id))
    if not actions:
        actions.append(_view_library(ask))
    return Answer(note + "\n".join(lines), "paid_no_access", actions)


def refund(ctx: Context, buyer: User, ask: Ask) -> Answer:
    """Whether the product's policy allows a refund now, with a button that files it (no money moves here)."""
    now = ctx.clock.now()
    with ctx.db.transaction(write=False) as session:
        note = _not_found_note(ask, _unknown_ids(session, buyer, ask))
        payments = [p for p in _own_payments(session, buyer, ask, statuses=(PaymentStatus.SUCCEEDED,), limit=20)
                    if session.get(Order, p.order_id).status in (*PAID, OrderStatus.REFUNDED)]
        named = [p for p in payments if _title(session.get(Order, p.order_id)).lower() in ask.text]
        payments = named or payments
        if not payments:
            return Answer(note + ask.t("我没有找到您可以退款的已付款订单。", "I found no paid purchase of yours to refund."),
                          "refund", [_open_ticket(ask, category="refund")])
        lines, actions = [], []
        for payment in payments:
            order = session.get(Order, payment.order_id)
            left = refundable_left(session, payment)
            window = refund_window_days(order, session)
            deadline = payment.succeeded_at + timedelta(days=window)
            paid = f"{_money(payment.amount, payment.currency)}，{_day(ctx, payment.succeeded_at)} 付款" \
                if ask.lang == "zh-CN" else \
                f"{_money(payment.amount, payment.currency)}, paid {_day(ctx, payment.succeeded_at)}"
            if left <= 0:
                lines.append(ask.t(f"“{_title(order)}”（{paid}）已经全部退款或正在退款中。",
                                   f"“{_title(order)}” ({paid}) is already refunded, or its refund is under way."))
            elif now > deadline:
                lines.append(ask.t(
                    f"“{_title(order)}”（{paid}）的 {window} 天退款期已于 {_day(ctx, deadline)} 结束，无法自助退款；"
                    "人工客服可以为您查看。",
                    f"The {window}-day refund window of “{_title(order)}” ({paid}) closed on "
                    f"{_day(ctx, deadline)}, so it cannot be refunded here; support can look at it."))
                actions.append(_open_ticket(ask, category="refund", payment_id=payment.id))
            else:
                lines.append(ask.t(
                    f"“{_title(order)}”（{paid}）可以退款：{window} 天退款期至 {_day(ctx, deadline)}，最多可退 "
                    f"{_money(left, payment.currency)}，原路退回{_channel(ask, payment.channel)}。按下按钮即可提交退款申请。",
                    f"“{_title(order)}” ({paid}) can be refunded: its {window}-day window runs until "
                    f"{_day(ctx, deadline)}, up to {_money(left, payment.currency)}, back to "
                    f"{_channel(ask, payment.channel)}. Press the button to file the refund."))
                actions.append({
                    "type": "request_refund",
                    "label": ask.t(f"申请退款 {_money(left, payment.currency)}：{_title(order)}",
                                   f"Refund {_money(left, payment.currency)}: {_title(order)}"),
                    "method": "POST", "path": "/api/v1/refunds",
                    # A fresh key per offer: pressing twice files one refund.
                    "headers": {"Idempotency-Key": f"assistant-refund-{uuid.uuid4().hex}"},
                    "body": {"payment_id": payment.id, "amount": left,
                             "reason": ask.t("买家通过助手申请退款", "Requested by the buyer through the assistant")},
                })
            if len(lines) >= SHOWN:
                break
        return Answer(note + "\n".join(lines), "refund", actions)


def payment_declined(ctx: Context, buyer: User, ask: Ask) -> Answer:
    """The recorded reason of the buyer's latest unsuccessful payment, in plain words."""
    with ctx.db.transaction(write=False) as session:
        note = _not_found_note(ask, _unknown_ids(session, buyer, ask))
        payments = _own_payments(session, buyer, ask, statuses=(
            PaymentStatus.FAILED, PaymentStatus.EXPIRED, PaymentStatus.CANCELLED), limit=1)
        if not payments:
            return Answer(note + ask.t("我没有找到您被拒绝或失败的付款。", "I found no declined or failed payment of yours."),
                          "payment_declined", [_open_ticket(ask, category="other")])
        payment = payments[0]
        order = session.get(Order, payment.order_id)
        what = ask.t(f"您 {_day(ctx, payment.created_at)} 用{_channel(ask, payment.channel)}支付的 "
                     f"{_money(payment.amount, payment.currency)}（{_title(order)}）",
                     f"Your payment of {_money(payment.amount, payment.currency)} for “{_title(order)}” with "
                     f"{_channel(ask, payment.channel)} on {_day(ctx, payment.created_at)}")
        if payment.status == PaymentStatus.EXPIRED:
            reason = ask.t("在订单的付款时限内没有完成，已过期", "was not completed before the order's time to pay ran out")
        elif payment.status == PaymentStatus.CANCELLED:
            reason = ask.t("已被取消", "was cancelled")
        else:
            zh, en = DECLINE_REASONS.get(payment.failure_code or "", (None, None))
            if zh is None and payment.failure_message:
                zh = en = f"{payment.failure_message}"
            reason = ask.t(f"没有成功：{zh or '支付渠道没有说明原因'}", f"did not go through: {en or 'the channel gave no reason'}")
        actions = []
        if order.status == OrderStatus.PENDING and order.expires_at > ctx.clock.now():
            actions.append({"type": "pay_order", "label": ask.t("重新付款", "Pay again"), "method": "POST",
                            "path": f"/api/v1/orders/{order.id}/payments", "order_id": order.id})
            tail = ask.t("订单仍可付款，您可以重试或换一种支付方式。", "The order can still be paid: try again or choose another way to pay.")
        else:
            tail = ask.t("这个订单已不能付款，您可以重新下单。", "That order can no longer be paid; you can order again.")
        sep = "，" if ask.lang == "zh-CN" else " "
        return Answer(note + what + sep + reason + ask.t("。", ". ") + tail, "payment_declined", actions)


def receipt(ctx: Context, buyer: User, ask: Ask) -> Answer:
    """Where the receipt of the buyer's recent paid orders is, with the channel's transaction number."""
    with ctx.db.transaction(write=False) as session:
        note = _not_found_note(ask, _unknown_ids(session, buyer, ask))
        payments = _own_payments(session, buyer, ask, statuses=(PaymentStatus.SUCCEEDED,), limit=SHOWN)
        if not payments:
            return Answer(note + ask.t("您还没有已付款的订单，所以没有收据。", "You have no paid order yet, so there is no receipt."),
                          "receipt", [])
        lines, actions = [], []
        for payment in payments:
            order = session.get(Order, payment.order_id)
            trade = payment.channel_trade_no or payment.id
            lines.append(ask.t(
                f"“{_title(order)}”：{_money(payment.amount, payment.currency)}，{_day(ctx, payment.succeeded_at)} "
                f"用{_channel(ask, payment.channel)}付款，交易单号 {trade}。",
                f"“{_title(order)}”: {_money(payment.amount, payment.currency)}, paid "
                f"{_day(ctx, payment.succeeded_at)} with {_channel(ask, payment.channel)}, transaction number {trade}."))
            actions.append(_view_order(ask, order))
        lines.append(ask.t("收据在买家中心的订单详情里；同一笔交易也会出现在您的支付宝或微信账单中。需要正式发票请联系人工客服。",
                           "The receipt is on the order's page in your buyer center, and the same transaction "
                           "appears in your Alipay or WeChat bill. For a formal invoice (fapiao), ask a person."))
        actions.append(_open_ticket(ask, category="receipt", order_id=payments[0].order_id))
        return Answer(note + "\n".join(lines), "receipt", actions)


def how_to_pay(ctx: Context, buyer: User, ask: Ask) -> Answer:
    """How to pay with the channel the buyer names (from the FAQ), or which ways to pay there are."""
    named = [name for name, pattern in CHANNEL_WORDS.items() if pattern.search(ask.text)]
    offered = [*ctx.channels.names(), "wallet"]
    with ctx.db.transaction(write=False) as session:
        if named:
            channel = named[0]
            entry = faq.entry_for_topic(session, f"pay.{channel}", ask.lang)
            enabled = channel in offered or (channel == "installments" and "alipay" in offered)
            lead = "" if enabled else ask.t(f"目前这里不提供{_channel(ask, channel)}。",
                                            f"{_channel(ask, channel).capitalize()} is not offered here at the moment. ")
            if entry is not None:
                return Answer(lead + entry.answer, "how_to_pay", [])
            if lead:
                return Answer(lead, "how_to_pay", [])
        entry = faq.entry_for_topic(session, "pay.methods", ask.lang)
        names = ask.t("、", ", ").join(_channel(ask, name) for name in offered)
        listed = ask.t(f"这里可以用：{names}。", f"Here you can pay with: {names}.")
        return Answer(listed + ("\n" + entry.answer if entry is not None else ""), "how_to_pay", [])


def handover(ctx: Context, buyer: User, ask: Ask) -> Answer:
    return Answer(ask.t("好的，我把您的问题转给人工客服。按下按钮提交工单，客服会在这里和邮件中回复您。",
                        "Sure: press the button to send your question to a person in support; the answer comes "
                        "here and by e-mail."), "handover", [_open_ticket(ask, category="other")])


def from_faq(ctx: Context, buyer: User, ask: Ask) -> Answer:
    """The FAQ's answer when one matches well; otherwise the closest questions and a person."""
    with ctx.db.transaction(write=False) as session:
        matches = faq.search_faq(session, ask.message, ask.lang, limit=SHOWN)
    related = [{"type": "faq", "label": m.entry.question, "entry_id": m.entry.id} for m in matches]
    if matches and matches[0].confident:
        return Answer(matches[0].entry.answer, "faq", related[1:])
    return Answer(ask.t("这个问题我不确定能答好。您可以看看下面相近的问题，或者转给人工客服。",
                        "I am not sure I can answer that well. Have a look at the related questions below, or ask "
                        "a person."), "handover", [*related, _open_ticket(ask, category="other")])


HANDLERS = {"handover": handover, "paid_no_access": paid_no_access, "refund": refund,
            "payment_declined": payment_declined, "receipt": receipt, "how_to_pay": how_to_pay, "faq": from_faq}
