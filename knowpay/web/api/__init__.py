"""The JSON API under /api/v1 (API.md). Each module is one area with its schemas and routes."""

from __future__ import annotations

from flask_openapi3 import OpenAPI

from knowpay.web.api import (
    access,
    accounts,
    analytics,
    bank_transfers,
    orders,
    payments,
    payouts,
    products,
    recommend,
    reconciliation,
    refunds,
    risk,
    support,
    webhooks,
)


def register_api(app: OpenAPI) -> None:
    for area in (accounts, products, orders, payments, refunds, access, payouts, reconciliation, webhooks,
                 bank_transfers):
        app.register_api(area.bp)
    app.register_api(recommend.bp)
    app.register_api(support.bp)
    app.register_api(analytics.bp)
    app.register_api(risk.bp)
