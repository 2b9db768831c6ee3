"""The web pages: checkout, the buyer centre, the creator centre and the admin console, in Chinese
(the default) and English. Every asset is served by KnowPay; no inline script or style, so the
Content-Security-Policy holds.

`register_views(app)` is called from create_app, before the rate limiter wraps the views.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask, current_app, has_request_context, request
from flask_babel import get_locale, lazy_gettext
from flask_security import current_user
from flask_wtf.csrf import CSRFProtect

from knowpay.web.views import admin, analytics, buyer, checkout, creator, faq, risk, support, wechat_oauth
from knowpay.web.views.formatting import install_filters
from knowpay.web.views.locale import LOCALES, html_lang, init_locale
from knowpay.web.views.navigation import Navigation, NavLink, navigation

TRANSLATIONS = Path(__file__).resolve().parents[2] / "translations"


def default_navigation() -> Navigation:
    nav = Navigation()
    nav.extend("main", [
        NavLink("checkout.catalog", lazy_gettext("Explore"), public=True, also=("checkout.*",)),
        NavLink("buyer.home", lazy_gettext("My account"), also=("buyer.*", "help.*")),
        NavLink("creator.home", lazy_gettext("Creator centre"), roles=("creator",),
                also=("creator.*", "analytics_pages.creator_*")),
        NavLink("admin.home", lazy_gettext("Admin"), roles=("admin", "support"),
                also=("admin.*", "analytics_pages.admin_*", "support_pages.*", "risk_pages.*", "faq_pages.*")),
    ])
    nav.extend("buyer", [
        NavLink("buyer.home", lazy_gettext("Overview")),
        NavLink("buyer.order_list", lazy_gettext("Orders"), also=("buyer.order_detail", "buyer.receipt")),
        NavLink("buyer.payment_list", lazy_gettext("Payments")),
        NavLink("buyer.refund_list", lazy_gettext("Refunds"), also=("buyer.refund",)),
        NavLink("buyer.library", lazy_gettext("My library")),
        NavLink("buyer.memberships", lazy_gettext("Memberships")),
        NavLink("buyer.wallet", lazy_gettext("Wallet")),
        NavLink("buyer.security", lazy_gettext("Security"), also=("buyer.totp_setup", "buyer.totp_confirm",
                                                                  "buyer.recovery_codes")),
        NavLink("buyer.data", lazy_gettext("My data")),
        NavLink("help.index", lazy_gettext("Help"), also=("help.*",)),
    ])
    nav.extend("creator", [
        NavLink("creator.home", lazy_gettext("Overview"), roles=("creator",)),
        NavLink("creator.products", lazy_gettext("Products"), roles=("creator",), also=("creator.new_product",)),
        NavLink("creator.sales", lazy_gettext("Sales"), roles=("creator",)),
        NavLink("creator.earnings", lazy_gettext("Earnings and payouts"), roles=("creator",)),
        NavLink("analytics_pages.creator_dashboard", lazy_gettext("Analytics"), roles=("creator",)),
    ])
    nav.extend("admin", [
        NavLink("admin.home", lazy_gettext("Overview"), roles=("admin", "support")),
        NavLink("admin.users", lazy_gettext("Users"), roles=("admin",)),
        NavLink("admin.orders", lazy_gettext("Orders"), roles=("admin", "support"), also=("admin.order_detail",)),
        NavLink("admin.payments", lazy_gettext("Payments"), roles=("admin", "support")),
        NavLink("admin.refund_list", lazy_gettext("Refunds"), roles=("admin", "support")),
        NavLink("support_pages.queue", lazy_gettext("Tickets"), roles=("admin", "support"), also=("support_pages.*",)),
        NavLink("faq_pages.entries", lazy_gettext("Assistant answers"), roles=("admin", "support"),
                also=("faq_pages.*",)),
        NavLink("admin.bank_transfers", lazy_gettext("Bank transfers"), roles=("admin",)),
        NavLink("admin.payout_list", lazy_gettext("Payouts"), roles=("admin",)),
        NavLink("risk_pages.reviews", lazy_gettext("Risk"), roles=("admin", "support"), also=("risk_pages.*",)),
        NavLink("admin.reconciliation", lazy_gettext("Reconciliation"), roles=("admin",),
                also=("admin.reconciliation_run",)),
        NavLink("admin.webhook_list", lazy_gettext("Webhooks"), roles=("admin",), also=("admin.webhook_detail",)),
        NavLink("admin.audit_log", lazy_gettext("Audit log"), roles=("admin",)),
        NavLink("analytics_pages.admin_dashboard", lazy_gettext("Analytics"), roles=("admin",)),
    ])
    return nav


def _page_globals() -> dict:
    """What the layout needs on every page: the menus, the current page and the language switch."""
    if not has_request_context():
        return {}

    def nav_links(area: str) -> list[NavLink]:
        return navigation().links(area, current_user, current_app.view_functions)

    return {"nav_links": nav_links, "current_endpoint": request.endpoint, "locales": LOCALES,
            "current_locale": "zh_CN" if str(get_locale()).startswith("zh") else "en", "html_lang": html_lang()}


def _add_security_translations(app: Flask) -> None:
    """Our Chinese for the Flask-Security messages its own catalogue leaves untranslated (sign-in
    failures, "please sign in"...), merged over its catalogue. SECURITY_I18N_DIRNAME =
    ["builtin", <knowpay/translations>] in the app's config does the same; then this adds nothing."""
    directories = app.extensions["security"].i18n_domain.translation_directories
    if str(TRANSLATIONS) not in directories:
        directories.append(str(TRANSLATIONS))


def register_views(app: Flask) -> None:
    if "csrf" not in app.extensions:  # create_app normally protects every form post already
        CSRFProtect(app)
    init_locale(app, str(TRANSLATIONS))
    _add_security_translations(app)
    install_filters(app)
    app.extensions["knowpay_nav"] = default_navigation()
    app.context_processor(_page_globals)
    for blueprint in (checkout.bp, buyer.bp, creator.bp, admin.bp, analytics.bp, support.bp, support.staff_bp,
                      faq.bp, risk.bp, wechat_oauth.bp):
        app.register_blueprint(blueprint)
    # Now that there are pages, signing in or registering lands on them, not on the password page.
    app.config["SECURITY_POST_LOGIN_VIEW"] = "/me"
    app.config["SECURITY_POST_REGISTER_VIEW"] = "/me"
    app.config["SECURITY_POST_LOGOUT_VIEW"] = "/"
