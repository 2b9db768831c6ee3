"""Mail to buyers about their tickets, through the same mail backend as account mail
(`knowpay.accounts.mail`): SMTP when configured, otherwise `.eml` files under `<instance>/mail/`.

Callers send after their transaction has committed, so a rolled-back change never mails anybody.
"""

from __future__ import annotations

from knowpay.accounts.mail import build_message, mailer_from_settings
from knowpay.context import Context


def send_mail(ctx: Context, to: str, subject: str, body: str) -> None:
    """Send one plain-text mail from the platform's sender (KNOWPAY_MAIL_SENDER)."""
    message = build_message(subject=subject, sender=ctx.settings.mail_sender, recipient=to, text=body, html=None)
    mailer_from_settings(ctx.settings, ctx.clock).send(message)
