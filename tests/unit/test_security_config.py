"""Production refuses development settings; the security settings read their variables."""

from __future__ import annotations

import base64

import pytest

from knowpay.config import DEV_SECRET_KEY, ConfigError, LockoutPolicy, dev_encryption_key, load_settings

GOOD = {
    "KNOWPAY_ENV": "production",
    "KNOWPAY_SECRET_KEY": "s" * 40,
    "KNOWPAY_ENCRYPTION_KEYS": "k1:" + base64.b64encode(b"1" * 32).decode(),
    "KNOWPAY_BASE_URL": "https://pay.example.com",
}


def test_good_production_settings_load():
    settings = load_settings(GOOD)
    assert settings.is_production and settings.encryption_keys[0][0] == "k1"


@pytest.mark.parametrize("change, message", [
    ({"KNOWPAY_SECRET_KEY": ""}, "KNOWPAY_SECRET_KEY"),
    ({"KNOWPAY_SECRET_KEY": DEV_SECRET_KEY}, "KNOWPAY_SECRET_KEY"),
    ({"KNOWPAY_SECRET_KEY": "short"}, "KNOWPAY_SECRET_KEY"),
    ({"KNOWPAY_ENCRYPTION_KEYS": ""}, "KNOWPAY_ENCRYPTION_KEYS"),
    ({"KNOWPAY_ENCRYPTION_KEYS": "dev:" + base64.b64encode(dev_encryption_key(DEV_SECRET_KEY)).decode()},
     "development key"),
    ({"KNOWPAY_SANDBOX_URL": "http://127.0.0.1:8100"}, "sandbox"),
    ({"KNOWPAY_SANDBOX_SECRET": "knowpay-sandbox-development-secret"}, "sandbox"),
    ({"KNOWPAY_ALIPAY_GATEWAY": "http://127.0.0.1:8100/alipay/gateway.do"}, "KNOWPAY_ALIPAY_GATEWAY"),
    ({"KNOWPAY_BASE_URL": "http://pay.example.com"}, "https"),
])
def test_production_refuses_development_settings(change, message):
    with pytest.raises(ConfigError) as refused:
        load_settings({**GOOD, **change})
    assert message in str(refused.value)


def test_development_needs_none_of_them():
    settings = load_settings({"KNOWPAY_SANDBOX_URL": "http://127.0.0.1:8100"})
    assert not settings.is_production and settings.encryption_keys[0][0] == "dev"


def test_rate_limits_lockout_and_mail_come_from_the_environment():
    settings = load_settings({"KNOWPAY_RATE_LIMIT_TOKEN": "5/minute;50/hour", "KNOWPAY_LOCKOUT_THRESHOLD": "7",
                              "KNOWPAY_TOKEN_TTL_SECONDS": "3600", "KNOWPAY_SMTP_HOST": "smtp.example.com",
                              "KNOWPAY_SMTP_PORT": "465", "KNOWPAY_SMTP_USERNAME": "knowpay"})
    assert settings.rate_limits["token"] == "5/minute;50/hour"
    assert settings.rate_limits["payments"] == "30/minute"
    assert settings.lockout.threshold == 7 and settings.token_ttl_seconds == 3600
    assert (settings.smtp.host, settings.smtp.port, settings.smtp.security) == ("smtp.example.com", 465, "ssl")
    with pytest.raises(ConfigError, match="KNOWPAY_RATE_LIMIT_ORDERS"):
        load_settings({"KNOWPAY_RATE_LIMIT_ORDERS": "lots"})
    with pytest.raises(ConfigError, match="KNOWPAY_SMTP_SECURITY"):
        load_settings({"KNOWPAY_SMTP_HOST": "smtp.example.com", "KNOWPAY_SMTP_SECURITY": "maybe"})


def test_the_lockout_doubles_from_the_threshold_up_to_the_cap():
    policy = LockoutPolicy(threshold=5, base_seconds=60, max_seconds=600)
    assert [policy.lock_seconds(n, 5) for n in range(3, 11)] == [0, 0, 60, 120, 240, 480, 600, 600]
