"""The FAQ the payment assistant answers from, edited by admins in the console (support staff read it)."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for
from flask_babel import gettext

from knowpay.domain.errors import InvalidRequest
from knowpay.support import faq
from knowpay.web.runtime import request_session, runtime
from knowpay.web.views.pages import flash_done, install_error_pages, message_for, no_store, page_user, roles_required

bp = Blueprint("faq_pages", __name__, url_prefix="/admin/faq")
install_error_pages(bp)
bp.after_request(no_store)

FIELDS = ("locale", "topic", "question", "answer", "keywords")


def _form_entry() -> dict:
    """The form's fields as the FAQ service takes them (a blank topic is none)."""
    values = {name: (request.form.get(name) or "").strip() for name in FIELDS}
    values["topic"] = values["topic"] or None
    values["published"] = request.form.get("published") == "on"
    return values


def _form_page(values: dict, *, entry_id: int | None, error: InvalidRequest | None = None):
    errors = {error.param or "question": message_for(error)} if error else {}
    return render_template("faq/form.html", values=values, entry_id=entry_id, errors=errors,
                           faq_locales=faq.LOCALES), 400 if error else 200


@bp.get("")
@roles_required("admin", "support")
def entries():
    locale = request.args.get("locale")
    locale = locale if locale in faq.LOCALES else None
    rows = faq.list_entries(request_session(), locale=locale, published_only=False)
    return render_template("faq/list.html", rows=rows, locale=locale, faq_locales=faq.LOCALES)


@bp.route("/new", methods=["GET", "POST"])
@roles_required("admin")
def new_entry():
    if request.method == "GET":
        return _form_page({"locale": faq.LOCALES[0], "published": True}, entry_id=None)
    values = _form_entry()
    rt = runtime()
    try:
        with rt.db.transaction() as tx:
            faq.add_entry(tx, editor_id=page_user().id, clock=rt.clock, **values)
    except InvalidRequest as error:
        return _form_page(values, entry_id=None, error=error)
    flash_done(gettext("The answer was added; the assistant uses it at once."))
    return redirect(url_for(".entries", locale=values["locale"]), code=303)


@bp.route("/<int:entry_id>", methods=["GET", "POST"])
@roles_required("admin")
def edit_entry(entry_id: int):
    if request.method == "GET":
        entry = faq.get_entry(request_session(), entry_id)
        return _form_page({name: getattr(entry, name) for name in (*FIELDS, "published")}, entry_id=entry_id)
    values = _form_entry()
    rt = runtime()
    try:
        with rt.db.transaction() as tx:
            faq.edit_entry(tx, entry_id, changes=values, editor_id=page_user().id, clock=rt.clock)
    except InvalidRequest as error:
        return _form_page(values, entry_id=entry_id, error=error)
    flash_done(gettext("The answer was saved."))
    return redirect(url_for(".entries", locale=values["locale"]), code=303)


@bp.post("/<int:entry_id>/delete")
@roles_required("admin")
def delete_entry(entry_id: int):
    rt = runtime()
    with rt.db.transaction() as tx:
        faq.delete_entry(tx, entry_id)
    flash_done(gettext("The answer was deleted."))
    return redirect(url_for(".entries"), code=303)
