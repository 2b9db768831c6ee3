"""The creator centre: products (create, edit, publish, archive), sales, earnings, payout requests and the
payout bank account."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for
from flask_babel import gettext
from sqlalchemy import select

from knowpay.catalog import service as catalog
from knowpay.catalog.models import KINDS, Product
from knowpay.catalog.service import MAX_REFUND_WINDOW_DAYS, PLAN_INTERVALS
from knowpay.domain.errors import Conflict, InvalidRequest, KnowPayError, NotFound
from knowpay.domain.money import format_major
from knowpay.domain.states import OrderStatus, ProductStatus
from knowpay.orders.models import Order, OrderItem
from knowpay.payouts import service as payouts
from knowpay.payouts.models import Payout, PayoutAccount
from knowpay.web.runtime import request_session, runtime
from knowpay.web.views.pages import (
    flash_done,
    flash_error,
    form_int,
    install_error_pages,
    major_to_minor,
    message_for,
    no_store,
    page_user,
    paged,
    roles_required,
)

bp = Blueprint("creator", __name__, url_prefix="/creator")
install_error_pages(bp)
bp.after_request(no_store)

SOLD = (OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED)


def _sales_query(creator_id: str):
    return (select(OrderItem, Order).join(Order, Order.id == OrderItem.order_id)
            .where(OrderItem.creator_id == creator_id, Order.status.in_([s.value for s in SOLD]))
            .order_by(Order.paid_at.desc(), Order.id.desc()))


@bp.get("")
@roles_required("creator")
def home():
    rt = runtime()
    session = request_session()
    user = page_user()
    statuses = list(session.scalars(select(Product.status).where(Product.creator_id == user.id)))
    recent = session.execute(_sales_query(user.id).limit(5)).all()
    return render_template("creator/home.html", earnings=payouts.earnings(session, user.id, rt.settings.currency),
                           published=statuses.count(ProductStatus.PUBLISHED),
                           drafts=statuses.count(ProductStatus.DRAFT), recent=recent)


# -- products -----------------------------------------------------------------------------------------

@bp.get("/products")
@roles_required("creator")
def products():
    stmt = (select(Product).where(Product.creator_id == page_user().id)
            .order_by(Product.created_at.desc(), Product.id.desc()))
    return render_template("creator/products.html", page=paged(request_session(), stmt))


def _product_fields(currency: str, *, with_terms: bool = True) -> dict:
    """The product form as create_product's arguments (InvalidRequest names the bad field); without the
    kind, plan and coins when those are fixed (an edit of a product that has been on sale)."""
    form = request.form
    window = form_int("refund_window_days", 7)
    if window is None or window > MAX_REFUND_WINDOW_DAYS:
        raise InvalidRequest("Days from 0 to 365.", code="invalid_refund_window", param="refund_window_days")
    fields = {"title": (form.get("title") or "").strip()[:200],
              "amount": major_to_minor(form.get("price"), currency), "currency": currency,
              "description": (form.get("description") or "").strip()[:5000], "refund_window_days": window}
    if not with_terms:
        return fields
    kind = form.get("kind", "")
    if kind not in KINDS:
        raise InvalidRequest("Choose a kind.", code="invalid_kind", param="kind")
    fields["kind"] = kind
    if kind == "membership":
        fields["plan"] = {"interval": form.get("interval", "month"),
                          "interval_count": form_int("interval_count", 1) or 0}
    if kind == "coin_pack":
        fields["coins"] = form_int("coins")
        fields["bonus_coins"] = form_int("bonus_coins", 0)
        if fields["coins"] is None or fields["bonus_coins"] is None:
            raise InvalidRequest("Whole numbers of coins.", code="invalid_coins", param="coins")
    return fields


FIELD_MESSAGES = {
    "title": lambda: gettext("Give the product a title."),
    "kind": lambda: gettext("Choose what kind of product this is."),
    "price": lambda: gettext("Enter a price such as 99.00."),
    "amount": lambda: gettext("Enter a price above zero, such as 99.00."),
    "refund_window_days": lambda: gettext("Enter a number of days from 0 to 365."),
    "coins": lambda: gettext("A coin pack needs a whole number of coins above zero."),
    "bonus_coins": lambda: gettext("Bonus coins are a whole number, 0 or more."),
    "plan.interval_count": lambda: gettext("Renew every 1 to 36 periods."),
    "plan.interval": lambda: gettext("Choose how often the membership renews."),
}


def _form_errors(error: KnowPayError, product: Product | None = None) -> dict[str, str]:
    """A refused form as {field: message}, so the page can show it next to the field at fault."""
    param = "price" if error.code == "invalid_amount" and error.param in ("amount", "price") else error.param
    if error.code == "refund_window_shortened" and product is not None:
        return {"refund_window_days": gettext(
            "Once on sale, the refund window can grow but not drop below %(days)s days.",
            days=product.refund_window_days)}
    if error.code == "product_terms_fixed":
        return {"form": gettext(
            "This product has been on sale, so its kind, plan and coins stay as they are.")}
    message = FIELD_MESSAGES.get(param or "")
    return {param or "form": message() if message else message_for(error)}


def _product_values(product: Product) -> dict[str, str]:
    """A product as the form shows it: the price in major units, numbers as text."""
    plan = product.plan or {}
    return {"title": product.title, "kind": product.kind,
            "price": format_major(product.amount, product.currency), "description": product.description or "",
            "refund_window_days": str(product.refund_window_days), "interval": plan.get("interval", "month"),
            "interval_count": str(plan.get("interval_count", 1)),
            "coins": "" if product.coins is None else str(product.coins),
            "bonus_coins": str(product.bonus_coins)}


def _render_form(*, form, errors: dict[str, str], currency: str, product: Product | None = None):
    return render_template("creator/product_form.html", kinds=KINDS, intervals=PLAN_INTERVALS, errors=errors,
                           form=form, currency=currency, product=product), 400 if errors else 200


@bp.route("/products/new", methods=["GET", "POST"])
@roles_required("creator")
def new_product():
    rt = runtime()
    errors: dict[str, str] = {}
    if request.method == "POST":
        try:
            fields = _product_fields(rt.settings.currency)
            with rt.db.transaction() as tx:
                made = catalog.create_product(tx, creator=page_user(), clock=rt.clock, **fields)
                made_id = made.id
        except InvalidRequest as error:
            errors = _form_errors(error)
        else:
            flash_done(gettext("Saved as a draft. Publish it when it is ready to sell."))
            return redirect(url_for(".products", _anchor=made_id), code=303)
    return _render_form(form=request.form, errors=errors, currency=rt.settings.currency)


def _own_product(session, product_id: str) -> Product:
    found = catalog.get_product_for_editor(session, product_id, page_user())
    if found.creator_id != page_user().id:  # admins manage products through the API
        raise NotFound("No such product.", param="id")
    return found


@bp.route("/products/<product_id>/edit", methods=["GET", "POST"])
@roles_required("creator")
def edit_product(product_id: str):
    """The product form, filled in. Kind, plan and coins are shown but fixed once it has been on sale."""
    rt = runtime()
    refused: KnowPayError | None = None
    if request.method == "POST":
        try:
            with rt.db.transaction() as tx:
                editing = _own_product(tx, product_id)
                fields = _product_fields(editing.currency, with_terms=editing.status == ProductStatus.DRAFT)
                del fields["currency"]
                catalog.update_product(tx, editing, clock=rt.clock, **fields)
        except (InvalidRequest, Conflict) as error:
            refused = error
        else:
            flash_done(gettext("Changes saved. A new price applies to new orders only."))
            return redirect(url_for(".products", _anchor=product_id), code=303)
    product = _own_product(request_session(), product_id)
    form = {**_product_values(product), **request.form.to_dict()}
    return _render_form(form=form, errors=_form_errors(refused, product) if refused else {},
                        currency=product.currency, product=product)


def _change(product_id: str, target: ProductStatus, done: str):
    rt = runtime()
    try:
        with rt.db.transaction() as tx:
            catalog.change_status(tx, _own_product(tx, product_id), target, clock=rt.clock)
    except KnowPayError as error:
        if error.code == "resource_missing":
            raise
        flash_error(error)
    else:
        flash_done(done)
    return redirect(url_for(".products"), code=303)


@bp.post("/products/<product_id>/publish")
@roles_required("creator")
def publish(product_id: str):
    return _change(product_id, ProductStatus.PUBLISHED, gettext("Published: buyers can now find and buy it."))


@bp.post("/products/<product_id>/archive")
@roles_required("creator")
def archive(product_id: str):
    return _change(product_id, ProductStatus.ARCHIVED, gettext("Archived: it is no longer for sale."))


# -- sales, earnings, payouts --------------------------------------------------------------------------

@bp.get("/sales")
@roles_required("creator")
def sales():
    session = request_session()
    page = paged(session, _sales_query(page_user().id))
    return render_template("creator/sales.html", page=page)


@bp.get("/earnings")
@roles_required("creator")
def earnings():
    rt = runtime()
    session = request_session()
    user = page_user()
    stmt = select(Payout).where(Payout.creator_id == user.id).order_by(Payout.created_at.desc(), Payout.id.desc())
    return render_template("creator/earnings.html", earnings=payouts.earnings(session, user.id, rt.settings.currency),
                           account=session.get(PayoutAccount, user.id), page=paged(session, stmt),
                           currency=rt.settings.currency)


@bp.post("/payouts")
@roles_required("creator")
def request_payout():
    rt = runtime()
    try:
        amount = major_to_minor(request.form.get("amount"), rt.settings.currency)
        with rt.db.transaction() as tx:
            payouts.request_payout(tx, rt, creator=page_user(), amount=amount)
    except KnowPayError as error:
        flash_error(error)
    else:
        flash_done(gettext("Payout requested. We will let you know when it has been sent."))
    return redirect(url_for(".earnings"), code=303)


@bp.post("/payout-account")
@roles_required("creator")
def payout_account():
    rt = runtime()
    form = request.form
    number = (form.get("account_number") or "").strip()
    if not (4 <= len(number) <= 40 and all(ch.isalnum() or ch in " -" for ch in number) and number.isascii()):
        flash_error(InvalidRequest("bad account number", code="invalid_account_number"))
        return redirect(url_for(".earnings"), code=303)
    try:
        with rt.db.transaction() as tx:
            payouts.set_payout_account(tx, rt, creator=page_user(), holder_name=(form.get("holder_name") or "")[:100],
                                       bank_name=(form.get("bank_name") or "")[:100], account_number=number)
    except KnowPayError as error:
        flash_error(error)
    else:
        flash_done(gettext("Payout account saved."))
    return redirect(url_for(".earnings"), code=303)
