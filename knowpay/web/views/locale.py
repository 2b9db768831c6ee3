"""Which language a page is in: Chinese (zh_CN) unless the browser prefers English, and a switch that
remembers the choice in a cookie. Dates are shown in the platform's time zone."""

from __future__ import annotations

from flask import Blueprint, Flask, redirect, request
from flask_babel import Babel, get_locale

from knowpay.web.runtime import runtime
from knowpay.web.views.pages import safe_next

DEFAULT_LOCALE = "zh_CN"
# locale → its name, written in that language (a switch is read by someone who may not read the other).
LOCALES = {"zh_CN": "中文", "en": "English"}
COOKIE = "knowpay_locale"
COOKIE_MAX_AGE = 365 * 24 * 3600

bp = Blueprint("locale", __name__)


def select_locale() -> str:
    """The cookie's choice, else the first language of Accept-Language we have, else Chinese."""
    chosen = request.cookies.get(COOKIE)
    if chosen in LOCALES:
        return chosen
    # In the browser's order of preference: werkzeug's best_match would take an exact "zh-CN;q=0.5"
    # over a preferred "en-GB".
    for tag, _quality in request.accept_languages:
        primary = tag.replace("_", "-").split("-")[0].lower()
        if primary == "zh":
            return "zh_CN"
        if primary == "en":
            return "en"
    return DEFAULT_LOCALE


def html_lang() -> str:
    """The page's `lang` attribute: zh-CN or en."""
    return "zh-CN" if str(get_locale()).startswith("zh") else "en"


@bp.post("/locale")
def switch_locale():
    """Remember the chosen language and go back to the page the switch was pressed on."""
    chosen = request.form.get("locale", "")
    response = redirect(safe_next(request.form.get("next")), code=303)
    if chosen in LOCALES:
        response.set_cookie(COOKIE, chosen, max_age=COOKIE_MAX_AGE, samesite="Lax", httponly=True,
                            secure=request.is_secure)
    return response


def init_locale(app: Flask, translations: str) -> None:
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT_LOCALE)
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", translations)
    Babel(app, locale_selector=select_locale, timezone_selector=lambda: runtime().settings.timezone)
    app.register_blueprint(bp)
