"""Settings from `KNOWPAY_*` environment variables (API.md), validated once at start-up."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEV_SECRET_KEY = "knowpay-development-secret-key-do-not-use-in-production"


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
    if mode == "production":
        if secret == DEV_SECRET_KEY or len(secret) < 32:
            raise ConfigError("production needs KNOWPAY_SECRET_KEY: a random string of 32+ characters")
        if not keys:
            raise ConfigError("production needs KNOWPAY_ENCRYPTION_KEYS")
    if not keys:
        # Development derives a stable key from the secret so a restart can still decrypt.
        keys = [("dev", hashlib.sha256(("enc:" + secret).encode()).digest())]
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
        base_url=(env.get("KNOWPAY_BASE_URL") or "http://127.0.0.1:8000").rstrip("/"),
        order_ttl_seconds=_int(env, "KNOWPAY_ORDER_TTL_SECONDS", 900, minimum=30),
        timezone=tz,
        currency=currency,
        platform_fee_bps=_int(env, "KNOWPAY_PLATFORM_FEE_BPS", 1000),
        settlement_days=_int(env, "KNOWPAY_SETTLEMENT_DAYS", 7),
        channel=channel,
    )
