"""The buyer centre: orders and payments, receipts, refund requests, the library, memberships, the
coin wallet, two-factor sign-in, and the buyer's own data (export, account deletion)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import Blueprint, Response, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_security import logout_user
from passlib.totp import TOTP
from sqlalchemy import select

from knowpay.access.models import Entitlement
from knowpay.access.service import effective_status, entitlements_of
from knowpay.accounts import service as accounts
from knowpay.accounts import totp
from knowpay.accounts.models import User
from knowpay.catalog.models import Product
from knowpay.catalog.service import list_products_query
from knowpay.domain.errors import AuthenticationFailed, KnowPayError, NotFound
from knowpay.domain.states import OrderStatus, PaymentStatus
from knowpay.fieldcrypt import FieldCipher
from knowpay.orders import service as orders
from knowpay.orders.models import Order
from knowpay.payments.models import Payment
from knowpay.refunds import service as refunds
from knowpay.refunds.models import Refund
from knowpay.security import audit
from knowpay.security.personal_data import delete_account, export_personal_data
from knowpay.security.signin import record_failed_second_factor, record_failed_sign_in
from knowpay.wallet.service import coin_balance
from knowpay.web.runtime import request_session, runtime
from knowpay.web.views import recommended
from knowpay.web.views.pages import (
    flash_done,
    flash_error,
    install_error_pages,
    major_to_minor,
    message_for,
    no_store,
    page_user,
    paged,
    signed_in,
)
from knowpay.web.views.qr import qr_svg

bp = Blueprint("buyer", __name__, url_prefix="/me")
install_error_pages(bp)
bp.after_request(no_store)  # every page here is personal

RECEIPT_STATUSES = (OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED)


@dataclass(frozen=True)
class RefundChance:
    """Whether the buyer may still ask for a refund of a payment, how much, and until when."""

    payment: Payment
    left: int
    until: datetime | None

    @property
    def open(self) -> bool:
        return self.left > 0 and self.until is not None and runtime().clock.now() <= self.until


def refund_chance(session, payment: Payment, order: Order) -> RefundChance:
    if payment.status != PaymentStatus.SUCCEEDED or payment.succeeded_at is None:
        return RefundChance(payment, 0, None)
    window = refunds.refund_window_days(order, session)
    return RefundChance(payment, refunds.refundable_left(session, payment),
                        payment.succeeded_at + timedelta(days=window))


def _own_order(session, order_id: str) -> Order:
    user = page_user()
    found = orders.get_order_for(session, order_id, user)
    if found.buyer_id != user.id:  # staff see other people's orders in the admin console
        raise NotFound("No such order.", param="id")
    return found


@bp.get("")
@signed_in
def home():
    rt = runtime()
    user = page_user()
    session = request_session()
    recent = list(session.scalars(orders.orders_of_query(user.id).order_by(Order.created_at.desc()).limit(5)))
    library = len(entitlements_of(session, user.id))
    return render_template("buyer/home.html", recent=recent, library_count=library,
                           balance=coin_balance(session, user.id, rt.settings.currency))


# -- orders, payments, receipts, refunds -----------------------------------------------------------

@bp.get("/orders")
@signed_in
def order_list():
    status = request.args.get("status") or None
    if status not in {s.value for s in OrderStatus}:
        status = None
    stmt = orders.orders_of_query(page_user().id, status=status).order_by(Order.created_at.desc(), Order.id.desc())
    return render_template("buyer/orders.html", page=paged(request_session(), stmt), status=status,
                           statuses=[s.value for s in OrderStatus])


@bp.get("/orders/<order_id>")
@signed_in
def order_detail(order_id: str):
    session = request_session()
    found = _own_order(session, order_id)
    attempts = list(session.scalars(select(Payment).where(Payment.order_id == found.id)
                                    .order_by(Payment.created_at.desc())))
    chances = {p.id: refund_chance(session, p, found) for p in attempts}
    found_refunds = list(session.scalars(select(Refund).where(Refund.order_id == found.id)
                                         .order_by(Refund.created_at.desc())))
    payable = found.status == OrderStatus.PENDING and found.expires_at > runtime().clock.now()
    return render_template("buyer/order.html", order=found, payments=attempts, chances=chances,
                           refunds=found_refunds, payable=payable,
                           receipt=found.status in RECEIPT_STATUSES)


@bp.post("/orders/<order_id>/cancel")
@signed_in
def cancel_order(order_id: str):
    rt = runtime()
    try:
        with rt.db.transaction() as tx:
            orders.cancel_order(tx, _own_order(tx, order_id), clock=rt.clock)
    except KnowPayError as error:
        if error.code == "resource_missing":
            raise
        flash_error(error)
    else:
        flash_done(gettext("The order was cancelled."))
    return redirect(url_for(".order_detail", order_id=order_id), code=303)


@bp.get("/orders/<order_id>/receipt")
@signed_in
def receipt(order_id: str):
    """A printable receipt of a paid order."""
    session = request_session()
    found = _own_order(session, order_id)
    if found.status not in RECEIPT_STATUSES:
        return redirect(url_for(".order_detail", order_id=order_id), code=303)
    paid_with = session.scalar(select(Payment).where(Payment.order_id == found.id,
                                                     Payment.status == PaymentStatus.SUCCEEDED)
                               .order_by(Payment.succeeded_at).limit(1))
    found_refunds = list(session.scalars(select(Refund).where(Refund.order_id == found.id,
                                                              Refund.status == "succeeded")
                                         .order_by(Refund.created_at)))
    return render_template("buyer/receipt.html", order=found, payment=paid_with, refunds=found_refunds,
                           buyer=page_user())


@bp.get("/payments")
@signed_in
def payment_list():
    stmt = select(Payment).where(Payment.buyer_id == page_user().id).order_by(Payment.created_at.desc(),
                                                                              Payment.id.desc())
    return render_template("buyer/payments.html", page=paged(request_session(), stmt))


@bp.route("/payments/<payment_id>/refund", methods=["GET", "POST"])
@signed_in
def refund(payment_id: str):
    """Ask for a refund of a payment, within the product's refund window."""
    rt = runtime()
    user = page_user()
    error_text = None
    if request.method == "POST":
        try:
            with rt.db.transaction(write=False) as session:
                found = _own_payment(session, payment_id)
                currency = found.currency
            raw = (request.form.get("amount") or "").strip()
            amount = major_to_minor(raw, currency) if raw else None
            refunds.request_refund(rt, actor=user, payment_id=payment_id, amount=amount,
                                   reason=(request.form.get("reason") or "").strip() or None)
        except KnowPayError as error:
            if error.code == "resource_missing":
                raise
            error_text = message_for(error)
        else:
            flash_done(gettext("Your refund request was sent."))
            return redirect(url_for(".refund_list"), code=303)
    session = request_session()
    found = _own_payment(session, payment_id)
    found_order = session.get(Order, found.order_id)
    chance = refund_chance(session, found, found_order)
    return render_template("buyer/refund.html", payment=found, order=found_order, chance=chance,
                           error=error_text), 400 if error_text else 200


def _own_payment(session, payment_id: str) -> Payment:
    found = session.get(Payment, payment_id)
    if found is None or found.buyer_id != page_user().id:
        raise NotFound("No such payment.", param="id")
    return found


@bp.get("/refunds")
@signed_in
def refund_list():
    stmt = refunds.refunds_query(page_user(), None).order_by(Refund.created_at.desc(), Refund.id.desc())
    return render_template("buyer/refunds.html", page=paged(request_session(), stmt))


# -- library, memberships, wallet -------------------------------------------------------------------

def _owned(kind: str | None = None) -> list[tuple[Entitlement, Product, str]]:
    session = request_session()
    now = runtime().clock.now()
    stmt = (select(Entitlement, Product).join(Product, Product.id == Entitlement.product_id)
            .where(Entitlement.user_id == page_user().id)
            .order_by(Entitlement.created_at.desc(), Entitlement.id.desc()))
    if kind:
        stmt = stmt.where(Product.kind == kind)
    return [(ent, prod, effective_status(ent, now)) for ent, prod in session.execute(stmt).all()]


@bp.get("/library")
@signed_in
def library():
    return render_template("buyer/library.html", items=_owned(),
                           recommended=recommended.for_buyer(request_session(), page_user()))


@bp.get("/memberships")
@signed_in
def memberships():
    return render_template("buyer/memberships.html", items=_owned("membership"))


@bp.get("/wallet")
@signed_in
def wallet():
    rt = runtime()
    session = request_session()
    packs = list(session.scalars(list_products_query(kind="coin_pack").order_by(Product.amount)))
    return render_template("buyer/wallet.html", balance=coin_balance(session, page_user().id, rt.settings.currency),
                           packs=packs, currency=rt.settings.currency)


# -- two-factor sign-in -----------------------------------------------------------------------------

def _cipher() -> FieldCipher:
    return FieldCipher(runtime().settings.encryption_keys)


def _pending_uri(user: User) -> tuple[str, str]:
    """The key being set up and its otpauth:// URI, to show again after a mistyped code."""
    key = _cipher().decrypt(user.totp_pending_secret, context=totp.secret_context(user.id))
    return key, TOTP(key=key, format="base32", issuer=totp.ISSUER).to_uri(label=user.email)


def _setup_page(secret: str, uri: str, *, error: str | None = None, status: int = 200):
    return render_template("buyer/totp_setup.html", secret=secret, error=error,
                           qr=qr_svg(uri, label=gettext("QR code for your authenticator app"))), status


def _wrong_code(user: User) -> None:
    record_failed_second_factor(runtime(), user_id=user.id, email=user.email, address=request.remote_addr,
                                via="page")


@bp.get("/security")
@signed_in
def security():
    session = request_session()
    user = session.get(User, page_user().id)
    return render_template("buyer/security.html", user=user,
                           recovery_left=totp.unused_recovery_codes(session, user.id))


@bp.post("/security/2fa/setup")
@signed_in
def totp_setup():
    """A new key for an authenticator app, as a QR code; it turns on once a code from it is confirmed."""
    rt = runtime()
    try:
        with rt.db.transaction() as tx:
            setup = totp.begin_totp_setup(tx.get(User, page_user().id), cipher=_cipher())
    except KnowPayError as error:
        flash_error(error)
        return redirect(url_for(".security"), code=303)
    return _setup_page(setup.secret, setup.uri)


@bp.post("/security/2fa/confirm")
@signed_in
def totp_confirm():
    rt = runtime()
    code = (request.form.get("otp") or "").strip()
    with rt.db.transaction() as tx:
        user = tx.get(User, page_user().id)
        if user.totp_enabled or not user.totp_pending_secret:
            return redirect(url_for(".security"), code=303)
        try:
            codes = totp.confirm_totp_setup(tx, user, code, cipher=_cipher(), clock=rt.clock)
        except AuthenticationFailed:
            codes = None
            secret, uri = _pending_uri(user)
        else:
            audit.record(tx, user.id, audit.TOTP_ENABLED, user.id, {"via": "page"}, rt.clock)
    if codes is None:
        _wrong_code(user)
        return _setup_page(secret, uri, error=gettext("This code is not valid; check the app and the phone's "
                                                      "clock."), status=400)
    return render_template("buyer/recovery_codes.html", codes=codes, first_time=True)


def _checked_code(tx, user: User) -> str | None:
    """The form's TOTP or recovery code, spent: which kind it was, or None when it is not valid."""
    return totp.check_second_factor(tx, user, request.form.get("otp"), runtime().clock, cipher=_cipher())


def _refused_code(user: User):
    """Back to the security page; a wrong code (two-factor on) is said and counts towards the lockout."""
    if user.totp_enabled:
        _wrong_code(user)
        flash_error(AuthenticationFailed("wrong code", code="invalid_otp"))
    return redirect(url_for(".security"), code=303)


@bp.post("/security/2fa/disable")
@signed_in
def totp_disable():
    rt = runtime()
    with rt.db.transaction() as tx:
        user = tx.get(User, page_user().id)
        used = _checked_code(tx, user) if user.totp_enabled else None
        if used is not None:
            totp.disable_totp(tx, user)
            audit.record(tx, user.id, audit.TOTP_DISABLED, user.id, {"with": used, "via": "page"}, rt.clock)
    if used is None:
        return _refused_code(user)
    flash_done(gettext("Two-factor sign-in is off."))
    return redirect(url_for(".security"), code=303)


@bp.post("/security/2fa/recovery-codes")
@signed_in
def recovery_codes():
    rt = runtime()
    with rt.db.transaction() as tx:
        user = tx.get(User, page_user().id)
        used = _checked_code(tx, user) if user.totp_enabled else None
        codes = totp.replace_recovery_codes(tx, user, clock=rt.clock) if used is not None else None
        if codes is not None:
            audit.record(tx, user.id, audit.RECOVERY_CODES_REPLACED, user.id, {"via": "page"}, rt.clock)
    if codes is None:
        return _refused_code(user)
    return render_template("buyer/recovery_codes.html", codes=codes, first_time=False)


# -- my data -----------------------------------------------------------------------------------------

@bp.get("/data")
@signed_in
def data():
    return render_template("buyer/data.html", user=request_session().get(User, page_user().id))


@bp.post("/data/export")
@signed_in
def export():
    """Everything KnowPay holds about the buyer, as a JSON download."""
    rt = runtime()
    with rt.db.transaction() as tx:
        user = tx.get(User, page_user().id)
        body = export_personal_data(tx, user, currency=rt.settings.currency, clock=rt.clock,
                                    cipher=FieldCipher(rt.settings.encryption_keys))
        audit.record(tx, user.id, audit.DATA_EXPORTED, user.id, {"via": "page"}, rt.clock)
    filename = f"knowpay-data-{rt.clock.now():%Y%m%d}.json"
    return Response(json.dumps(body, ensure_ascii=False, indent=2), mimetype="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@bp.post("/data/delete")
@signed_in
def delete():
    """Delete the account (personal fields anonymised; orders and the ledger are kept by law)."""
    rt = runtime()
    password = request.form.get("password") or ""
    with rt.db.transaction() as tx:
        user = tx.get(User, page_user().id)
        try:
            accounts.check_current_password(user, password)
        except AuthenticationFailed:
            wrong = "password"
        else:
            wrong = None
            if user.totp_enabled and _checked_code(tx, user) is None:
                wrong = "otp"
            else:
                delete_account(tx, user, clock=rt.clock)
                audit.record(tx, user.id, audit.USER_DELETED, user.id, {"via": "page"}, rt.clock)
    if wrong == "password":
        record_failed_sign_in(rt, email=user.email, address=request.remote_addr, reason="password",
                              via="delete_account")
        flash_error(AuthenticationFailed("wrong password", code="invalid_credentials"))
        return redirect(url_for(".data"), code=303)
    if wrong == "otp":
        _wrong_code(user)
        flash_error(AuthenticationFailed("wrong code", code="invalid_otp"))
        return redirect(url_for(".data"), code=303)
    logout_user()
    flash_done(gettext("Your account was deleted. Thank you for learning with us."))
    return redirect(url_for("checkout.catalog"), code=303)
