"""Checkout pages: the catalogue and a product, the order summary, choosing how to pay, and the payment
page that follows the payment live (an event stream, with polling as a fallback) until it succeeds,
fails or expires. Channels send the buyer back to /checkout/payments/<id>."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from flask import Blueprint, Response, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_security import current_user
from sqlalchemy import or_, select

from knowpay.access.service import active_entitlement
from knowpay.analytics import service as analytics
from knowpay.analytics.channel_ranking import rank_channels
from knowpay.analytics.source import device_class_of
from knowpay.catalog.models import KINDS, Product
from knowpay.catalog.service import get_visible_product, list_products_query
from knowpay.context import Context
from knowpay.domain.errors import KnowPayError, NotFound
from knowpay.domain.states import OrderStatus, PaymentStatus, is_final
from knowpay.orders import service as orders
from knowpay.orders.models import Coupon, Order
from knowpay.payments import service as payments
from knowpay.payments.models import Payment
from knowpay.wallet.service import coin_balance
from knowpay.web.api.payments import STREAM_KEEPALIVE_SECONDS, STREAM_MAX_SECONDS, STREAM_POLL_SECONDS
from knowpay.web.runtime import request_session, runtime
from knowpay.web.views import recommended, wechat_oauth
from knowpay.web.views.formatting import coins
from knowpay.web.views.mobile import phone_method
from knowpay.web.views.pages import (
    flash_error,
    install_error_pages,
    message_for,
    no_store,
    page_user,
    paged,
    signed_in,
)
from knowpay.web.views.qr import qr_svg

bp = Blueprint("checkout", __name__)
install_error_pages(bp)

# The order channels are offered in: the ones buyers in China use most come first.
CHANNEL_ORDER = ("alipay", "wechat", "wallet", "stripe", "bank_transfer", "sandbox")
# Cards are paid on Stripe's hosted Checkout page: the PaymentIntent flow would need Stripe.js, loaded from
# Stripe's CDN into our page, which the CSP (and serving every asset ourselves) rules out.
PAGE_METHODS = {"stripe": "checkout"}
# A random id per browser, so risk rules can see one device behind several accounts.
DEVICE_COOKIE = "knowpay_device"
DEVICE_COOKIE_MAX_AGE = 2 * 365 * 24 * 3600
CATALOG_PAGE = 24


@dataclass(frozen=True)
class ChannelChoice:
    """A way to pay offered on the order page; `unavailable` says why it cannot pay this order."""

    name: str
    unavailable: str | None = None
    note: str | None = None


def _now() -> datetime:
    return runtime().clock.now()


# -- catalogue -------------------------------------------------------------------------------------

@bp.get("/")
def catalog():
    """Published products, newest first; `?kind=` narrows to one kind."""
    kind = request.args.get("kind")
    if kind not in KINDS:
        kind = None
    stmt = list_products_query(kind=kind).order_by(Product.created_at.desc(), Product.id.desc())
    return render_template("checkout/catalog.html", page=paged(request_session(), stmt, size=CATALOG_PAGE),
                           kinds=KINDS, kind=kind)


@bp.get("/products/<product_id>")
def product(product_id: str):
    session = request_session()
    user = page_user() if current_user.is_authenticated else None
    item = get_visible_product(session, product_id, user)
    analytics.record_product_view(runtime(), product_id=item.id, user_id=user.id if user else None,
                                  user_agent=request.headers.get("User-Agent"), client_ip=request.remote_addr)
    owned = (active_entitlement(session, user.id, item.id, now=_now()) is not None) if user else False
    return render_template("checkout/product.html", product=item, owned=owned,
                           recommended=recommended.also_bought(session, item, user))


# -- order summary and choosing a channel ----------------------------------------------------------

def _coupons_exist(session) -> bool:
    now = _now()
    return session.scalar(select(Coupon.id).where(
        Coupon.active.is_(True), or_(Coupon.expires_at.is_(None), Coupon.expires_at > now)).limit(1)) is not None


def channel_choices(ctx: Context, session, *, buyer_id: str, currency: str, kinds: list[str],
                    total: int, device_class: str = "unknown") -> list[ChannelChoice]:
    """The enabled channels (and the wallet), with the reason one cannot pay this order; best first for
    this buyer's device and amount as learned by analytics (CHANNEL_ORDER when that setting is off)."""
    enabled = set(ctx.channels.names()) | {"wallet"}
    ranked = rank_channels(ctx, buyer_id=buyer_id, device_class=device_class, amount=total,
                           enabled=[name for name in CHANNEL_ORDER if name in enabled])
    choices = []
    for name, _score, _reason in ranked:
        unavailable, note = None, None
        if name == "wallet":
            balance = coin_balance(session, buyer_id, ctx.settings.currency)
            note = gettext("Balance: %(coins)s", coins=coins(balance))
            if "coin_pack" in kinds:
                unavailable = gettext("Coins cannot buy coins.")
            elif currency != ctx.settings.currency:
                unavailable = gettext("Coins pay only for orders in the platform currency.")
            elif balance < total:
                unavailable = gettext("Not enough coins.")
        elif name == "bank_transfer":
            note = gettext("Confirmed by us within 1–3 working days after your transfer arrives.")
        elif name == "wechat":
            note = gettext("Scan the QR code with WeChat.")
        elif name == "stripe":
            note = gettext("Enter your card on Stripe's secure page.")
        elif name == "sandbox":
            note = gettext("For trying KnowPay out: no real money moves.")
        choices.append(ChannelChoice(name, unavailable, note))
    return choices


def _first_open(choices: list[ChannelChoice]) -> str | None:
    return next((c.name for c in choices if c.unavailable is None), None)


def _device_class() -> str:
    return device_class_of(request.headers.get("User-Agent"))


def _record_checkout_view(order_id: str, user_id: str) -> None:
    """For the funnel, and to know which device the order is paid on when the method does not say."""
    analytics.record_checkout_view(runtime(), order_id=order_id, user_id=user_id,
                                   user_agent=request.headers.get("User-Agent"), client_ip=request.remote_addr)


@bp.route("/checkout/products/<product_id>", methods=["GET", "POST"])
@signed_in
def start(product_id: str):
    """The order summary of one product: price, coupon, refund policy and how to pay, in one form."""
    rt = runtime()
    user = page_user()
    form_error: dict[str, str] = {}
    if request.method == "POST":
        channel = request.form.get("channel", "")
        coupon = (request.form.get("coupon") or "").strip() or None
        try:
            with rt.db.transaction() as tx:
                order = orders.create_order(tx, buyer=user, items=[orders.ItemRequest(product_id)], coupon=coupon,
                                            ttl_seconds=rt.settings.order_ttl_seconds, clock=rt.clock)
                order_id = order.id
        except KnowPayError as error:
            if error.param == "coupon":
                form_error["coupon"] = message_for(error)
            else:
                flash_error(error)
                return redirect(url_for(".product", product_id=product_id), code=303)
        else:
            # This page was the new order's checkout page.
            _record_checkout_view(order_id, user.id)
            return _pay(order_id, channel)
    elif (asked := wechat_oauth.authorisation_redirect()) is not None:
        return asked  # inside WeChat: learn the buyer's openid first, so WeChat Pay opens right here
    session = request_session()
    item = get_visible_product(session, product_id, user)
    owned = active_entitlement(session, user.id, item.id, now=_now()) is not None
    choices = channel_choices(rt, session, buyer_id=user.id, currency=item.currency, kinds=[item.kind],
                              total=item.amount, device_class=_device_class())
    status = 400 if form_error else 200
    return render_template("checkout/start.html", product=item, owned=owned, choices=choices,
                           selected=request.form.get("channel") or _first_open(choices),
                           coupons=_coupons_exist(session), coupon=request.form.get("coupon", ""),
                           form_error=form_error), status


@bp.route("/checkout/orders/<order_id>", methods=["GET", "POST"])
@signed_in
def order(order_id: str):
    """Pay a pending order (again): after a failed attempt, or from the order list."""
    rt = runtime()
    user = page_user()
    if request.method == "POST":
        return _pay(order_id, request.form.get("channel", ""))
    if (asked := wechat_oauth.authorisation_redirect()) is not None:
        return asked
    session = request_session()
    found = orders.get_order_for(session, order_id, user)
    if found.buyer_id != user.id:
        raise NotFound("No such order.", param="id")
    if found.status != OrderStatus.PENDING or found.expires_at <= _now():
        return redirect(url_for("buyer.order_detail", order_id=found.id), code=303)
    _record_checkout_view(found.id, user.id)
    choices = channel_choices(rt, session, buyer_id=user.id, currency=found.currency,
                              kinds=[i.kind for i in found.items], total=found.amount_total,
                              device_class=_device_class())
    windows = dict(session.execute(select(Product.id, Product.refund_window_days).where(
        Product.id.in_([i.product_id for i in found.items]))).all())
    return render_template("checkout/order.html", order=found, choices=choices, selected=_first_open(choices),
                           refund_window=min(windows.values(), default=0))


@bp.app_template_global()
def phone_flow(channel: str) -> str | None:
    """For the channel list: the method this buyer's phone pays `channel` with (None: the QR code)."""
    return phone_method(channel, request.headers.get("User-Agent"),
                        wechat_openid=wechat_oauth.openid_here(channel))


def _device_id() -> str:
    known = request.cookies.get(DEVICE_COOKIE, "")
    return known if known.isascii() and known.isalnum() and 16 <= len(known) <= 64 else secrets.token_hex(16)


def _pay(order_id: str, channel: str, *, method: str | None = None, otp: str | None = None) -> Response:
    """Open a payment through `channel`; back to the order page with the reason when it cannot be. On a
    phone, Alipay and WeChat Pay open their app (wap, H5), and inside WeChat, WeChat Pay opens on the page
    (JSAPI, with the openid learnt before), unless the buyer asked for a QR code instead."""
    device = _device_id()
    openid = wechat_oauth.openid_here(channel)
    if method is None and not request.form.get("qr"):
        method = phone_method(channel, request.headers.get("User-Agent"), wechat_openid=openid)
    method = method or PAGE_METHODS.get(channel)
    ask = payments.PaymentAsk(channel=channel, method=method, client_ip=request.remote_addr, device_id=device,
                              otp=otp, openid=openid if method == "jsapi" else None)
    try:
        payment = payments.create_payment(runtime(), buyer=page_user(), order_id=order_id, ask=ask)
    except NotFound:
        raise
    except KnowPayError as error:
        flash_error(error)
        back = "buyer.order_detail" if error.code == "order_not_pending" else ".order"
        return redirect(url_for(back, order_id=order_id), code=303)
    # A cashier on another site (Alipay wap, WeChat Pay H5, Stripe Checkout) is opened from our payment page
    # rather than by this form's answer: the CSP's form-action 'self' stops a form from landing on another origin.
    opens = (payment.action or {}).get("type") in ("redirect", "jsapi")  # jsapi: WeChat Pay opens in the page
    response = redirect(url_for(".payment", payment_id=payment.id, open=1 if opens else None), code=303)
    response.set_cookie(DEVICE_COOKIE, device, max_age=DEVICE_COOKIE_MAX_AGE, samesite="Lax", httponly=True,
                        secure=request.is_secure)
    return response


# -- the payment page ------------------------------------------------------------------------------

def _own_payment(session, payment_id: str) -> Payment:
    user = page_user()
    payment = payments.get_payment_for(session, payment_id, user)
    if payment.buyer_id != user.id:  # staff look payments up in the admin console, not here
        raise NotFound("No such payment.", param="id")
    return payment


def _panel_context(session, payment: Payment) -> dict:
    found = session.get(Order, payment.order_id)
    action = payment.action or {}
    kind = action.get("type")
    pay_url = None
    qr = None
    # A payment risk held for review is still `processing` when, approved, its channel gives an action.
    if payment.status in (PaymentStatus.REQUIRES_ACTION, PaymentStatus.PROCESSING):
        if kind == "qr_code":
            code_url = action.get("code_url", "")
            qr = qr_svg(code_url, label=gettext("QR code to scan with the payment app"))
            # On the phone itself a QR code cannot be scanned: an http(s) code URL opens the app or page.
            pay_url = code_url if code_url.startswith(("https://", "http://")) else None
        elif kind == "redirect":
            pay_url = action.get("url")
        elif kind == "client_secret":
            pay_url = (payment.channel_extra or {}).get("pay_url")
    order_open = found.status == OrderStatus.PENDING and found.expires_at > _now()
    return {"payment": payment, "order": found, "action": action, "action_type": kind, "qr": qr,
            "pay_url": pay_url, "final": is_final(PaymentStatus(payment.status)), "order_open": order_open,
            "product_id": found.items[0].product_id if found.items else None,
            "coin_pack": any(i.kind == "coin_pack" for i in found.items),
            "recommended": recommended.after_payment(session, found) if payment.status == PaymentStatus.SUCCEEDED
            else []}


@bp.get("/checkout/payments/<payment_id>")
@signed_in
def payment(payment_id: str):
    session = request_session()
    context = _panel_context(session, _own_payment(session, payment_id))
    # ?open=1: the buyer has just chosen to pay on the channel's own page, which opens at once.
    open_cashier = (request.args.get("open") == "1" and context["action_type"] == "redirect"
                    and context["pay_url"])
    return no_store(Response(render_template("checkout/payment.html", open_cashier=open_cashier, **context)))


@bp.get("/checkout/payments/<payment_id>/panel")
@signed_in
def payment_panel(payment_id: str):
    """The status part of the payment page alone, fetched by the page's script when the status moves."""
    session = request_session()
    context = _panel_context(session, _own_payment(session, payment_id))
    return no_store(Response(render_template("checkout/_payment_panel.html", **context)))


@bp.get("/checkout/payments/<payment_id>/status")
@signed_in
def payment_status(payment_id: str):
    """The polling fallback: the payment's status now."""
    found = _own_payment(request_session(), payment_id)
    return no_store(jsonify(status=found.status, version=found.version,
                            final=is_final(PaymentStatus(found.status))))


@bp.get("/checkout/payments/<payment_id>/events")
@signed_in
def payment_events(payment_id: str):
    """Server-Sent Events for the signed-in buyer: a `status` event whenever the payment changes (its
    status, or its action: an approved review sends it to its channel), closing after a final status.
    Reads the database like the API's stream, so any web node can serve it."""
    rt = runtime()
    with rt.db.transaction(write=False) as session:
        found_id = _own_payment(session, payment_id).id
    return Response(status_events(rt, found_id), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def status_events(rt: Context, payment_id: str) -> Iterator[str]:
    last = None
    started = last_sent = time.monotonic()
    yield "retry: 2000\n\n"
    while time.monotonic() - started < STREAM_MAX_SECONDS:
        with rt.db.transaction(write=False) as session:
            status, version, action = session.execute(
                select(Payment.status, Payment.version, Payment.action).where(Payment.id == payment_id)).one()
        if (status, version, action) != last:
            last = (status, version, action)
            final = is_final(PaymentStatus(status))
            body = json.dumps({"status": status, "version": version, "final": final})
            yield f"id: {version}\nevent: status\ndata: {body}\n\n"
            last_sent = time.monotonic()
            if final:
                return
        elif time.monotonic() - last_sent > STREAM_KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        time.sleep(STREAM_POLL_SECONDS)


@bp.post("/checkout/payments/<payment_id>/confirm")
@signed_in
def confirm_payment(payment_id: str):
    """Answer a risk check's request for the buyer's second factor, and carry the payment on."""
    with runtime().db.transaction(write=False) as session:
        found = _own_payment(session, payment_id)
        order_id, channel, method = found.order_id, found.channel, found.method
    return _pay(order_id, channel, method=method, otp=(request.form.get("otp") or "").strip() or None)
