"""The one error tree. Each error has a stable `code`; web/errors.py maps the groups to HTTP."""

from __future__ import annotations


class KnowPayError(Exception):
    """Base of every error a caller is expected to handle."""

    code = "error"
    type = "internal"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param


class InvalidRequest(KnowPayError):
    """The input is malformed or breaks a rule; retrying the same input fails the same way."""

    code = "invalid_request"
    type = "invalid_request"


class AuthenticationFailed(KnowPayError):
    """No valid credentials were presented."""

    code = "authentication_required"
    type = "authentication"


class PermissionDenied(KnowPayError):
    """The caller is known but may not do this."""

    code = "permission_denied"
    type = "permission"


class NotFound(KnowPayError):
    """No such object, or not one the caller may see."""

    code = "resource_missing"
    type = "not_found"


class Conflict(KnowPayError):
    """The object's current state forbids this; reload and decide again."""

    code = "conflict"
    type = "conflict"


class RateLimited(KnowPayError):
    """Too many attempts; wait and retry."""

    code = "rate_limited"
    type = "rate_limited"

    def __init__(self, message: str, *, retry_after: int = 60, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class PaymentDeclined(KnowPayError):
    """The payment cannot go through as asked (e.g. not enough coins)."""

    code = "payment_declined"
    type = "payment_declined"


class RiskBlocked(KnowPayError):
    """Risk management refused this payment."""

    code = "risk_blocked"
    type = "risk_blocked"


class ChannelUnavailable(KnowPayError):
    """A payment channel could not be reached or answered badly; safe to retry later."""

    code = "channel_unavailable"
    type = "internal"


class UnbalancedTransaction(KnowPayError):
    """A journal transaction whose postings do not sum to zero per currency."""

    code = "unbalanced_transaction"
    type = "internal"


class InsufficientFunds(Conflict):
    """A posting would take an account that forbids it below zero."""

    code = "insufficient_funds"
