"""Settings from `KNOWPAY_*` environment variables (API.md), validated once at start-up.

Accounts and security (all optional):
  KNOWPAY_TOKEN_TTL_SECONDS       bearer token lifetime (43200, twelve hours)
  KNOWPAY_RATE_LIMIT_<NAME>       Flask-Limiter limits, e.g. `20/minute;200/hour`, for TOKEN, LOGIN, REGISTER,
                                  PASSWORD_RESET, ORDERS, PAYMENTS and SECOND_FACTOR (see DEFAULT_RATE_LIMITS);
                                  counted in Redis when KNOWPAY_REDIS_URL is set, else in each process
  KNOWPAY_LOCKOUT_THRESHOLD       failed sign-ins of one account before it locks (5)
  KNOWPAY_LOCKOUT_IP_THRESHOLD    failed sign-ins from one address before it locks (50)
  KNOWPAY_LOCKOUT_BASE_SECONDS    the first lock (60); each further failure doubles it ...
  KNOWPAY_LOCKOUT_MAX_SECONDS     ... up to this (3600)
  KNOWPAY_LOCKOUT_WINDOW_SECONDS  quiet time after which failures are forgotten (3600)
  KNOWPAY_STEP_UP_SECONDS         how long a proved second factor allows admin money and role actions (600)
  KNOWPAY_SMTP_HOST, KNOWPAY_SMTP_PORT (587), KNOWPAY_SMTP_USERNAME, KNOWPAY_SMTP_PASSWORD,
  KNOWPAY_SMTP_SECURITY (starttls; ssl on port 465; none)
                                  account mail through SMTP; unset: stored as .eml files in <instance>/mail/
  KNOWPAY_MAIL_SENDER             the From of account mail ("KnowPay <no-reply@localhost>")
  KNOWPAY_PROXY_HOPS              trusted reverse proxies in front (0): client addresses come from
                                  X-Forwarded-For only through this many
  KNOWPAY_TRUSTED_HOSTS           production: host names accepted besides KNOWPAY_BASE_URL's (comma-separated)
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEV_SECRET_KEY = "knowpay-development-secret-key-do-not-use-in-production"  # nosec B105 # development only

# Flask-Limiter rate limit strings per protected action (KNOWPAY_RATE_LIMIT_<NAME> overrides each one).
# token, login, register and password_reset count per client address; the others per caller.
DEFAULT_RATE_LIMITS = MappingProxyType({
    "token": "20/minute;200/hour",
    "login": "20/minute;200/hour",
    "register": "10/minute;100/hour",
    "password_reset": "5/minute;30/hour",
    "orders": "60/minute",
    "payments": "30/minute",
    "second_factor": "10/minute",
})
# Gateways of the local sandbox: a production channel pointing there is the sandbox in disguise.
SANDBOX_HOSTS = ("127.0.0.1:8100", "localhost:8100")


class ConfigError(RuntimeError):
    """The configuration cannot be used; the message says which variable and why."""


def _default_instance_path() -> Path:
    return Path(os.environ.get("KNOWPAY_INSTANCE_PATH", Path.cwd() / "instance")).resolve()


def normalise_database_url(url: str) -> str:
    """`postgresql://` and `postgres://` mean psycopg 3, as API.md promises."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain):]
    return url


def parse_encryption_keys(text: str) -> list[tuple[str, bytes]]:
    """`keyid:base64-of-32-bytes,...`, newest first."""
    keys: list[tuple[str, bytes]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        key_id, sep, encoded = part.partition(":")
        if not sep or not key_id:
            raise ConfigError("KNOWPAY_ENCRYPTION_KEYS entries must look like keyid:base64-of-32-bytes")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except ValueError as exc:
            raise ConfigError(f"KNOWPAY_ENCRYPTION_KEYS key {key_id!r} is not base64") from exc
        if len(raw) != 32:
            raise ConfigError(f"KNOWPAY_ENCRYPTION_KEYS key {key_id!r} must be 32 bytes, not {len(raw)}")
        keys.append((key_id, raw))
    return keys


@dataclass(frozen=True)
class LockoutPolicy:
    """Repeated failed sign-ins lock an account (and, with a higher threshold, an address).

    From the `threshold`-th failure within `window_seconds`, every further failure locks for
    `base_seconds * 2**(failures - threshold)`, at most `max_seconds`.
    """

    threshold: int = 5
    ip_threshold: int = 50
    base_seconds: int = 60
    max_seconds: int = 3600
    window_seconds: int = 3600

    def lock_seconds(self, failures: int, threshold: int) -> int:
        if failures < threshold:
            return 0
        return min(self.base_seconds * 2 ** min(failures - threshold, 30), self.max_seconds)


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int = 587
    username: str | None = None
    password: str | None = None
    security: str = "starttls"  # starttls, ssl or none


@dataclass(frozen=True)
class Settings:
    env: str = "development"
    instance_path: Path = field(default_factory=_default_instance_path)
    database_url: str = ""
    redis_url: str | None = None
    secret_key: str = DEV_SECRET_KEY
    encryption_keys: list[tuple[str, bytes]] = field(default_factory=list)
    base_url: str = "http://127.0.0.1:8000"
    order_ttl_seconds: int = 900
    timezone: str = "Asia/Shanghai"
    currency: str = "cny"
    platform_fee_bps: int = 1000
    settlement_days: int = 7
    channel: dict[str, str] = field(default_factory=dict)
    token_ttl_seconds: int = 12 * 3600
    rate_limits: Mapping[str, str] = field(default_factory=lambda: DEFAULT_RATE_LIMITS)
    lockout: LockoutPolicy = field(default_factory=LockoutPolicy)
    step_up_seconds: int = 600
    smtp: SmtpSettings | None = None
    mail_sender: str = "KnowPay <no-reply@localhost>"
    proxy_hops: int = 0
    trusted_hosts: tuple[str, ...] = ()

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def _int(env: dict[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}")
    return value


def _rate_limits(env: dict[str, str]) -> Mapping[str, str]:
    from limits import parse_many

    limits = dict(DEFAULT_RATE_LIMITS)
    for name in DEFAULT_RATE_LIMITS:
        variable = f"KNOWPAY_RATE_LIMIT_{name.upper()}"
        raw = env.get(variable)
        if raw:
            try:
                parse_many(raw)
            except ValueError:
                raise ConfigError(f"{variable} must look like '10/minute' or '5/minute;50/hour', got {raw!r}") from None
            limits[name] = raw
    return MappingProxyType(limits)


def _lockout(env: dict[str, str]) -> LockoutPolicy:
    policy = LockoutPolicy(
        threshold=_int(env, "KNOWPAY_LOCKOUT_THRESHOLD", 5, minimum=1),
        ip_threshold=_int(env, "KNOWPAY_LOCKOUT_IP_THRESHOLD", 50, minimum=1),
        base_seconds=_int(env, "KNOWPAY_LOCKOUT_BASE_SECONDS", 60, minimum=1),
        max_seconds=_int(env, "KNOWPAY_LOCKOUT_MAX_SECONDS", 3600, minimum=1),
        window_seconds=_int(env, "KNOWPAY_LOCKOUT_WINDOW_SECONDS", 3600, minimum=1),
    )
    if policy.max_seconds < policy.base_seconds:
        raise ConfigError("KNOWPAY_LOCKOUT_MAX_SECONDS must be at least KNOWPAY_LOCKOUT_BASE_SECONDS")
    return policy


def _smtp(env: dict[str, str]) -> SmtpSettings | None:
    host = env.get("KNOWPAY_SMTP_HOST")
    if not host:
        return None
    port = _int(env, "KNOWPAY_SMTP_PORT", 587, minimum=1)
    security = env.get("KNOWPAY_SMTP_SECURITY") or ("ssl" if port == 465 else "starttls")
    if security not in ("starttls", "ssl", "none"):
        raise ConfigError("KNOWPAY_SMTP_SECURITY must be 'starttls', 'ssl' or 'none'")
    return SmtpSettings(host=host, port=port, username=env.get("KNOWPAY_SMTP_USERNAME") or None,
                        password=env.get("KNOWPAY_SMTP_PASSWORD") or None, security=security)


def dev_encryption_key(secret: str) -> bytes:
    return hashlib.sha256(("enc:" + secret).encode()).digest()


def _refuse_development_settings(env: dict[str, str], secret: str, keys: list[tuple[str, bytes]],
                                 base_url: str) -> None:
    """Production must not run with anything that only makes sense on a developer's machine."""
    if secret == DEV_SECRET_KEY or len(secret) < 32:
        raise ConfigError("production needs KNOWPAY_SECRET_KEY: a random string of 32+ characters")
    if not keys:
        raise ConfigError("production needs KNOWPAY_ENCRYPTION_KEYS")
    if any(raw in (dev_encryption_key(DEV_SECRET_KEY), dev_encryption_key(secret)) for _, raw in keys):
        raise ConfigError("KNOWPAY_ENCRYPTION_KEYS holds a development key; generate random keys for production")
    sandbox = sorted(k for k, v in env.items() if k.startswith("KNOWPAY_SANDBOX_") and v)
    if sandbox:
        raise ConfigError(f"the sandbox gateway does not run in production: unset {', '.join(sandbox)}")
    for name in ("KNOWPAY_ALIPAY_GATEWAY", "KNOWPAY_WECHAT_GATEWAY", "KNOWPAY_WECHAT_OAUTH_BASE",
                 "KNOWPAY_STRIPE_API_BASE"):
        if urlsplit(env.get(name, "")).netloc in SANDBOX_HOSTS:
            raise ConfigError(f"{name} points at the sandbox gateway; production talks to the real channel")
    if not base_url.startswith("https://"):
        raise ConfigError("production needs KNOWPAY_BASE_URL with https:// (cookies are Secure, HSTS is sent)")


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read and check every `KNOWPAY_*` variable; raise ConfigError naming the bad one."""
    env = dict(os.environ if environ is None else environ)
    mode = env.get("KNOWPAY_ENV", "development")
    if mode not in ("development", "production"):
        raise ConfigError("KNOWPAY_ENV must be 'development' or 'production'")
    instance = Path(env.get("KNOWPAY_INSTANCE_PATH") or (Path.cwd() / "instance")).resolve()
    database_url = normalise_database_url(
        env.get("KNOWPAY_DATABASE_URL") or f"sqlite:///{instance / 'knowpay.sqlite3'}")
    secret = env.get("KNOWPAY_SECRET_KEY") or DEV_SECRET_KEY
    keys = parse_encryption_keys(env.get("KNOWPAY_ENCRYPTION_KEYS", ""))
    base_url = (env.get("KNOWPAY_BASE_URL") or "http://127.0.0.1:8000").rstrip("/")
    if mode == "production":
        _refuse_development_settings(env, secret, keys, base_url)
    if not keys:
        # Development derives a stable key from the secret so a restart can still decrypt.
        keys = [("dev", dev_encryption_key(secret))]
    tz = env.get("KNOWPAY_TIMEZONE", "Asia/Shanghai")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"KNOWPAY_TIMEZONE {tz!r} is not a known time zone") from None
    currency = env.get("KNOWPAY_CURRENCY", "cny").lower()
    from knowpay.domain.money import EXPONENTS

    if currency not in EXPONENTS or currency == "coin":
        raise ConfigError(f"KNOWPAY_CURRENCY {currency!r} is not supported")
    channel = {k[len("KNOWPAY_"):].lower(): v for k, v in env.items()
               if k.startswith(("KNOWPAY_ALIPAY_", "KNOWPAY_WECHAT_", "KNOWPAY_STRIPE_", "KNOWPAY_SANDBOX_",
                                "KNOWPAY_BANK_"))}
    return Settings(
        env=mode,
        instance_path=instance,
        database_url=database_url,
        redis_url=env.get("KNOWPAY_REDIS_URL") or None,
        secret_key=secret,
        encryption_keys=keys,
        base_url=base_url,
        order_ttl_seconds=_int(env, "KNOWPAY_ORDER_TTL_SECONDS", 900, minimum=30),
        timezone=tz,
        currency=currency,
        platform_fee_bps=_int(env, "KNOWPAY_PLATFORM_FEE_BPS", 1000),
        settlement_days=_int(env, "KNOWPAY_SETTLEMENT_DAYS", 7),
        channel=channel,
        token_ttl_seconds=_int(env, "KNOWPAY_TOKEN_TTL_SECONDS", 12 * 3600, minimum=60),
        rate_limits=_rate_limits(env),
        lockout=_lockout(env),
        step_up_seconds=_int(env, "KNOWPAY_STEP_UP_SECONDS", 600, minimum=30),
        smtp=_smtp(env),
        mail_sender=env.get("KNOWPAY_MAIL_SENDER") or "KnowPay <no-reply@localhost>",
        proxy_hops=_int(env, "KNOWPAY_PROXY_HOPS", 0),
        trusted_hosts=tuple(h.strip() for h in env.get("KNOWPAY_TRUSTED_HOSTS", "").split(",") if h.strip()),
    )
