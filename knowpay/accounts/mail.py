"""Account e-mail (confirmation, password reset, notices) and where it goes.

SMTP when `KNOWPAY_SMTP_HOST` is set; otherwise each message is stored as an `.eml` file under
`<instance>/mail/`, and the log names the file (never the body: it carries one-time links).
"""

from __future__ import annotations

import logging
import secrets
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from pathlib import Path
from typing import Any, Protocol

from flask import current_app
from flask_security import MailUtil

from knowpay.config import Settings, SmtpSettings
from knowpay.domain.clock import Clock

log = logging.getLogger(__name__)
SMTP_TIMEOUT_SECONDS = 15


class Mailer(Protocol):
    def send(self, message: EmailMessage) -> None: ...


class FileMailer:
    """The embedded default: one `.eml` file per message in a folder."""

    def __init__(self, folder: Path, clock: Clock) -> None:
        self.folder = folder
        self.clock = clock

    def send(self, message: EmailMessage) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{self.clock.now():%Y%m%dT%H%M%S}-{secrets.token_hex(4)}.eml"
        path.write_bytes(bytes(message))
        path.chmod(0o600)
        log.info("mail %r to %s stored in %s", message["Subject"], message["To"], path)

    def messages(self) -> list[EmailMessage]:
        """Every stored message, oldest first (for tests and `knowpay` users reading their outbox)."""
        from email import policy
        from email.parser import BytesParser

        parser = BytesParser(policy=policy.default)
        return [parser.parsebytes(p.read_bytes()) for p in sorted(self.folder.glob("*.eml"))]  # type: ignore[misc]


class SmtpMailer:
    def __init__(self, config: SmtpSettings) -> None:
        self.config = config

    def send(self, message: EmailMessage) -> None:
        config = self.config
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if config.security == "ssl":
            smtp = smtplib.SMTP_SSL(config.host, config.port, timeout=SMTP_TIMEOUT_SECONDS, context=context)
        else:
            smtp = smtplib.SMTP(config.host, config.port, timeout=SMTP_TIMEOUT_SECONDS)
        with smtp:
            if config.security == "starttls":
                smtp.starttls(context=context)
            if config.username:
                smtp.login(config.username, config.password or "")
            smtp.send_message(message)
        log.info("mail %r sent to %s through %s", message["Subject"], message["To"], config.host)


def mailer_from_settings(settings: Settings, clock: Clock) -> Mailer:
    if settings.smtp is not None:
        return SmtpMailer(settings.smtp)
    return FileMailer(settings.instance_path / "mail", clock)


def build_message(*, subject: str, sender: str, recipient: str, text: str | None, html: str | None) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = recipient
    message["Message-ID"] = make_msgid(domain="knowpay")
    message.set_content(text or "")
    if html:
        message.add_alternative(html, subtype="html")
    return message


class KnowPayMailUtil(MailUtil):
    """Flask-Security renders the message; this hands it to the app's mailer."""

    def send_mail(self, template: str, subject: str, recipient: str | tuple[str, str],
                  sender: str | tuple[str, str], body: str | None, html: str | None, **kwargs: Any) -> None:
        to = formataddr((str(recipient[0]), str(recipient[1]))) if isinstance(recipient, tuple) else str(recipient)
        sender_text = formataddr((str(sender[0]), str(sender[1]))) if isinstance(sender, tuple) else str(sender)
        message = build_message(subject=str(subject), sender=sender_text, recipient=to, text=body, html=html)
        current_app.extensions["knowpay_mailer"].send(message)
