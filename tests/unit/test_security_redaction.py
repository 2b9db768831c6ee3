"""No secret, key, token, password or full signature reaches the logs."""

from __future__ import annotations

import base64
import io
import logging

import pytest

from knowpay.config import load_settings
from knowpay.security.redaction import REDACTED, RedactingFilter, install_log_redaction, known_secrets, redact

TOKEN = "kpt_Zm9vYmFyYmF6cXV4cXV1eDEyMzQ1Njc4OTA"
SIGNATURE = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


@pytest.mark.parametrize("line, secret", [
    (f"Authorization: Bearer {TOKEN}", TOKEN),
    (f"issued {TOKEN} to usr_1", TOKEN),
    ("platform key sk_Ab3dEf6hIj9kLm2nOp5qRs8t", "sk_Ab3dEf6hIj9kLm2nOp5qRs8t"),
    ("endpoint secret whsec_Q2hhbmdlTWVQbGVhc2U", "whsec_Q2hhbmdlTWVQbGVhc2U"),
    ('body {"email": "a@b.c", "password": "hunter2-is-long"}', "hunter2-is-long"),
    ("form password=hunter2-is-long&email=a%40b.c", "hunter2-is-long"),
    ('{"otp": "492039"}', "492039"),
    (f"KnowPay-Signature: t=1764043200,v1={SIGNATURE}", SIGNATURE),
    (f"Stripe-Signature: t=1764043200,v1={SIGNATURE}", SIGNATURE),
    ("Wechatpay-Signature: VGhpcyBpcyBhIGZha2Ugc2lnbmF0dXJlIG9mIFdlQ2hhdA==", "VGhpcyBpcyBhIGZha2Ugc2lnbmF0dXJl"),
    ("alipay notify sign=QUxJUEFZU0lHTkFUVVJFUExFQVNFUkVEQUNU&sign_type=RSA2", "QUxJUEFZU0lHTkFUVVJFUExFQVNFUkVEQUNU"),
    ("database postgresql+psycopg://knowpay:s3cr3t-pw@db.internal/knowpay", "s3cr3t-pw"),
    ("GET /account/reset/InVzcl8xIg.aBcDeF.ghIjKlMnOp HTTP/1.1", "InVzcl8xIg.aBcDeF.ghIjKlMnOp"),
    ("stored kpe1:k1:bm9uY2UxMjM0NTY3ODkwY2lwaGVydGV4dA==", "bm9uY2UxMjM0NTY3ODkwY2lwaGVydGV4dA=="),
    ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----", "MIIEvQIBADAN"),
])
def test_known_patterns_are_redacted(line, secret):
    cleaned = redact(line)
    assert secret not in cleaned
    assert REDACTED in cleaned or "[redacted private key]" in cleaned


def test_a_signature_keeps_a_short_prefix_to_recognise_it_by():
    assert redact(f"v1={SIGNATURE}") == f"v1={SIGNATURE[:8]}…{REDACTED}"


def test_ordinary_lines_are_left_alone():
    for line in ("order ord_7kQ paid 9900 cny", "token_type=bearer expires_at=2026-11-25",
                 "webhook delivery whd_1 to https://hooks.example.com: 200 (attempt 1)"):
        assert redact(line) == line


def test_the_settings_secrets_are_redacted_wherever_they_appear():
    key = base64.b64encode(b"k" * 32).decode()
    settings = load_settings({"KNOWPAY_SECRET_KEY": "a-very-long-and-random-secret-key-123",
                              "KNOWPAY_ENCRYPTION_KEYS": f"k1:{key}", "KNOWPAY_STRIPE_SECRET_KEY": "rk_test_Stripe123456",
                              "KNOWPAY_SMTP_HOST": "smtp.example.com", "KNOWPAY_SMTP_PASSWORD": "mail-password-9"})
    known = known_secrets(settings)
    line = f"config secret a-very-long-and-random-secret-key-123 key {key} stripe rk_test_Stripe123456 mail-password-9"
    cleaned = redact(line, known)
    for secret in ("a-very-long-and-random-secret-key-123", key, "rk_test_Stripe123456", "mail-password-9"):
        assert secret not in cleaned


def test_the_filter_redacts_messages_arguments_and_tracebacks():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(["a-known-secret-value"]))
    logger = logging.getLogger("knowpay.test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("sign-in with %s and %s", f"Bearer {TOKEN}", {"password": "hunter2-is-long"})
        try:
            raise ValueError("bad a-known-secret-value")
        except ValueError:
            logger.exception("failed for %s", TOKEN)
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert TOKEN not in output and "hunter2-is-long" not in output and "a-known-secret-value" not in output
    assert "ValueError: bad [redacted]" in output


def test_installing_puts_one_filter_on_the_root_handlers():
    root = logging.getLogger()
    handler = logging.StreamHandler(io.StringIO())
    root.addHandler(handler)
    try:
        settings = load_settings({})
        install_log_redaction(settings)
        install_log_redaction(settings)
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
        logging.getLogger("knowpay.anything").error("token %s", TOKEN)
        assert TOKEN not in handler.stream.getvalue()
    finally:
        root.removeHandler(handler)
