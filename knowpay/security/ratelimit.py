"""Rate limits (Flask-Limiter) on sign-in, registration, password reset, order and payment creation.

Counters live in memory on the embedded default and in Redis when `KNOWPAY_REDIS_URL` is set, so
several workers share them (if Redis stops answering, each worker falls back to its own memory
rather than failing requests). The limits come from `Settings.rate_limits` (`KNOWPAY_RATE_LIMIT_*`);
tests lower them through the settings. Only POSTs count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from flask import Flask, g, request
from flask_login import current_user
from flask_limiter import Limiter, RateLimitExceeded

from knowpay.config import Settings


def client_address() -> str:
    # With KNOWPAY_PROXY_HOPS set, ProxyFix has already put the client's address here.
    return request.remote_addr or "unknown"


def caller() -> str:
    """The signed-in user or API key, else the address (the API resolves the caller before views run;
    a page's user comes from the session). A user's API and page requests share one count."""
    if g.get("user") is not None:
        return g.user.id
    if g.get("api_key") is not None:
        return g.api_key.id
    if current_user.is_authenticated:
        return current_user.id
    return "ip:" + client_address()


# endpoint -> (name in Settings.rate_limits, what is counted)
LIMITED_ENDPOINTS: dict[str, tuple[str, Callable[[], str]]] = {
    "accounts.token": ("token", client_address),
    "accounts.register": ("register", client_address),
    "security.login": ("login", client_address),
    "security.two_factor_token_validation": ("login", client_address),
    "security.register": ("register", client_address),
    "security.forgot_password": ("password_reset", client_address),
    "security.reset_password": ("password_reset", client_address),
    "security.send_confirmation": ("password_reset", client_address),
    "orders.create_order": ("orders", caller),
    "payments.create_payment": ("payments", caller),
    # The checkout pages create orders and payments too.
    "checkout.start": ("orders", caller),
    "checkout.order": ("payments", caller),
    "security_api.setup_totp": ("second_factor", caller),
    "security_api.confirm_totp": ("second_factor", caller),
    "security_api.disable_totp": ("second_factor", caller),
    "security_api.replace_recovery_codes": ("second_factor", caller),
    "security_api.step_up": ("second_factor", caller),
    "accounts.change_password": ("second_factor", caller),
    "accounts.delete_me": ("second_factor", caller),
}


def build_limiter(app: Flask, settings: Settings) -> Limiter:
    """A Limiter for this app, with each limited endpoint's view wrapped (call after every blueprint)."""
    shared = settings.redis_url is not None
    limiter = Limiter(
        client_address,
        app=app,
        storage_uri=settings.redis_url or "memory://",
        storage_options={"socket_connect_timeout": 2, "socket_timeout": 2} if shared else {},
        strategy="fixed-window",
        swallow_errors=shared,
        in_memory_fallback_enabled=shared,
        headers_enabled=False,
    )
    for endpoint, (name, key) in LIMITED_ENDPOINTS.items():
        view = app.view_functions.get(endpoint)
        if view is not None:
            # Shared: every endpoint under one name draws on one count per caller (the checkout pages
            # and the API spend the same order budget).
            limit = limiter.shared_limit(settings.rate_limits[name], scope=name, key_func=key,
                                         methods=["POST", "DELETE"])
            app.view_functions[endpoint] = limit(view)
    app.extensions["knowpay_limiter"] = limiter
    return limiter


def retry_after(app: Flask, error: RateLimitExceeded) -> int:
    """Seconds until the breached window resets."""
    limiter: Limiter | None = app.extensions.get("knowpay_limiter")
    current = limiter.current_limit if limiter is not None else None
    if current is not None and current.breached:
        return max(1, math.ceil(current.window.reset_time - time.time()))
    return max(1, int(error.limit.limit.get_expiry()))
