"""Keep secrets out of logs: a logging filter that redacts them from every record it sees.

It removes bearer tokens (`kpt_`), API keys (`sk_`), webhook secrets (`whsec_`), Authorization
headers, `password=`/`"otp": ...`-style fields, private keys, encrypted field values, credentials in
URLs and one-time links, and cuts signatures (KnowPay-, Stripe-, Wechatpay-, Sandbox-Signature,
Alipay `sign`) to a short prefix. Values known from the settings (the secret key, encryption keys,
channel keys and secrets, the SMTP password) are removed wherever they appear.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterable

from knowpay.config import Settings

REDACTED = "[redacted]"
_SENSITIVE_NAMES = (r"password|passwd|new_password|current_password|otp|secret|client_secret|"
                    r"api_?key|apiv3_key|private_key|access_token|refresh_token|token|sign|signature|"
                    r"secret_key|encryption_keys")

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL),
     "[redacted private key]"),
    (re.compile(r"(?i)\b((?:Wechatpay|Sandbox)-Signature['\"]?\s*[:=]\s*['\"]?)([^\s'\",]{8})[^\s'\"]*"),
     r"\1\2…" + REDACTED),
    (re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(bearer|basic)\s+[^\s'\",]+"), r"\1\2 " + REDACTED),
    (re.compile(r"\b(kpt|sk|whsec)_[A-Za-z0-9_\-]{6,}"), r"\1_" + REDACTED),
    (re.compile(r"\bkpe1:([\w\-]+):[A-Za-z0-9+/=]+"), r"kpe1:\1:" + REDACTED),
    (re.compile(r"\b(v\d=)([0-9a-f]{8})[0-9a-f]{8,}"), r"\1\2…" + REDACTED),
    (re.compile(r"\b(\w[\w+.\-]*://[^\s:/@]+:)[^\s@/]+@"), r"\1" + REDACTED + "@"),
    (re.compile(r"(/account/(?:reset|confirm|verify|tf-validate)/)[^\s/?\"']+"), r"\1" + REDACTED),
    (re.compile(rf"(?i)([\"']?(?<![\w-])(?:{_SENSITIVE_NAMES})\b[\"']?\s*[:=]\s*)(?!{re.escape(REDACTED)})"
                r"(\"[^\"]*\"|'[^']*'|[^\s,&}\])]+)"),
     r"\1" + REDACTED),
)
MIN_KNOWN_SECRET_LENGTH = 8


def redact(text: str, known: Iterable[str] = ()) -> str:
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def known_secrets(settings: Settings) -> frozenset[str]:
    """Secret values from the settings, in the forms they could be logged in."""
    values = {settings.secret_key}
    for _, raw in settings.encryption_keys:
        values.add(base64.b64encode(raw).decode())
    for name, value in settings.channel.items():
        if any(word in name for word in ("key", "secret", "password", "private")):
            values.add(value)
    if settings.smtp is not None and settings.smtp.password:
        values.add(settings.smtp.password)
    return frozenset(v for v in values if v and len(v) >= MIN_KNOWN_SECRET_LENGTH)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and traceback) with the secrets taken out; never drops a record."""

    def __init__(self, known: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is removed whole.
        self.known = tuple(sorted(set(known), key=len, reverse=True))

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's to report, not ours
            return True
        record.msg, record.args = redact(message, self.known), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.known)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.known)
        return True


LOGGERS = ("", "gunicorn.error", "gunicorn.access", "huey")


def install_log_redaction(settings: Settings) -> RedactingFilter:
    """Put one RedactingFilter on every handler of the root, gunicorn and huey loggers (replacing an
    earlier one), so records from any logger that reach them are redacted."""
    redacting = RedactingFilter(known_secrets(settings))
    for name in LOGGERS:
        for handler in logging.getLogger(name).handlers:
            for old in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
                handler.removeFilter(old)
            handler.addFilter(redacting)
    return redacting
