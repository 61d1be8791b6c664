"""The service's settings, read once from the environment at start, failing fast with a clear message.

No secret has a default. The one exception is the embedded development mode (no database configured):
there a random JWT secret is created once and kept beside the embedded database's data, so tokens
minted with ``ledger token`` keep working across restarts on that machine.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path

import msgspec

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# After the first try, seven more, the last about 31.6 hours in (25 to 38 with the jitter of +-20%):
# Standard Webhooks' example schedule, cut at eight tries.
DEFAULT_RETRY_SECONDS = (5, 300, 1_800, 7_200, 18_000, 36_000, 50_400)
MAX_RETRIES = 30
MAX_RETRY_DELAY_SECONDS = 7 * 86_400
EMAIL = re.compile(r"[^@\s,]{1,64}@[^@\s,]{1,255}")
MAIL_LOCALES = ("pt-BR", "en")


class SettingsError(Exception):
    """A setting is missing or malformed; the message names it."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str | None
    data_dir: Path
    redis_url: str | None
    jwt_secret: str
    public_url: str
    db_pool_size: int
    db_max_overflow: int
    db_connect_timeout_seconds: int
    db_lock_timeout_seconds: int
    cache_maxsize: int
    ready_max_lag_seconds: int
    projection_batch_size: int
    projection_interval_ms: int
    group_commit_max_batch: int
    group_commit_wait_ms: int
    ledger_threads: int
    rate_limit_user_per_minute: int
    rate_limit_service_per_minute: int
    rate_limit_admin_per_minute: int
    log_level: str
    stripe_secret_key: str | None
    stripe_webhook_secret: str | None
    stripe_api_base: str | None
    pix_expires_after_seconds: int
    checkout_success_url: str
    checkout_cancel_url: str
    smtp_url: str | None
    mail_from: str
    alert_emails: tuple[str, ...]
    alert_locale: str
    webhook_allow_private_networks: bool
    webhook_timeout_seconds: int
    notification_retry_seconds: tuple[int, ...]
    stripe_failure_alert_threshold: int

    @property
    def embedded(self) -> bool:
        """True when no database is configured: the service runs its own PostgreSQL."""
        return self.database_url is None


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be from {low} to {high}, got {value}")
    return value


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    value = env.get(name) or None
    if value is not None and not value.startswith(tuple(f"{scheme}://" for scheme in schemes)):
        raise SettingsError(f"{name} must start with {' or '.join(s + '://' for s in schemes)}")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "false").lower()
    if raw not in {"true", "false", "1", "0", "yes", "no"}:
        raise SettingsError(f"{name} must be true or false, got {raw!r}")
    return raw in {"true", "1", "yes"}


def _emails(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    addresses = tuple(part.strip() for part in (env.get(name) or "").split(",") if part.strip())
    for address in addresses:
        if not EMAIL.fullmatch(address):
            raise SettingsError(f"{name} must be email addresses separated by commas, got {address!r}")
    return addresses


def _retry_schedule(env: Mapping[str, str]) -> tuple[int, ...]:
    name = "LEDGER_NOTIFICATION_RETRY_SECONDS"
    raw = env.get(name) or ",".join(str(delay) for delay in DEFAULT_RETRY_SECONDS)
    try:
        delays = tuple(int(part) for part in raw.split(","))
    except ValueError:
        raise SettingsError(f"{name} must be whole seconds separated by commas, got {raw!r}") from None
    if not 1 <= len(delays) <= MAX_RETRIES or not all(0 <= delay <= MAX_RETRY_DELAY_SECONDS for delay in delays):
        raise SettingsError(
            f"{name} must list 1 to {MAX_RETRIES} delays of 0 to {MAX_RETRY_DELAY_SECONDS} seconds, got {raw!r}"
        )
    return delays


def _log_level(env: Mapping[str, str]) -> str:
    raw = env.get("LEDGER_LOG_LEVEL") or "INFO"
    if raw.upper() not in LOG_LEVELS:
        raise SettingsError(f"LEDGER_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {raw!r}")
    return raw.upper()


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    database_url = _url(env, "LEDGER_DATABASE_URL", ("postgresql", "postgres"))
    data_dir = Path(env.get("LEDGER_DATA_DIR") or ".ledger").resolve()
    jwt_secret = env.get("LEDGER_JWT_SECRET") or None
    if jwt_secret is None:
        if database_url is not None:
            raise SettingsError("LEDGER_JWT_SECRET is required when LEDGER_DATABASE_URL is set")
        jwt_secret = _development_secret(data_dir)
    if len(jwt_secret) < 32:  # noqa: PLR2004 - HS256 wants a key at least as long as its hash.
        raise SettingsError("LEDGER_JWT_SECRET must be at least 32 characters")
    public_url = (env.get("LEDGER_PUBLIC_URL") or "http://127.0.0.1:8000").rstrip("/")
    return Settings(
        database_url=database_url,
        data_dir=data_dir,
        redis_url=_url(env, "LEDGER_REDIS_URL", ("redis", "rediss", "unix")),
        jwt_secret=jwt_secret,
        public_url=public_url,
        db_pool_size=_int(env, "LEDGER_DB_POOL_SIZE", 4, 1, 200),
        db_max_overflow=_int(env, "LEDGER_DB_MAX_OVERFLOW", 4, 0, 200),
        db_connect_timeout_seconds=_int(env, "LEDGER_DB_CONNECT_TIMEOUT_SECONDS", 2, 1, 60),
        db_lock_timeout_seconds=_int(env, "LEDGER_DB_LOCK_TIMEOUT_SECONDS", 5, 1, 60),
        cache_maxsize=_int(env, "LEDGER_CACHE_MAXSIZE", 10_000, 1, 10_000_000),
        ready_max_lag_seconds=_int(env, "LEDGER_READY_MAX_LAG_SECONDS", 30, 1, 86_400),
        projection_batch_size=_int(env, "LEDGER_PROJECTION_BATCH_SIZE", 1_000, 1, 100_000),
        projection_interval_ms=_int(env, "LEDGER_PROJECTION_INTERVAL_MS", 50, 0, 1_000),
        group_commit_max_batch=_int(env, "LEDGER_GROUP_COMMIT_MAX_BATCH", 256, 0, 10_000),
        group_commit_wait_ms=_int(env, "LEDGER_GROUP_COMMIT_WAIT_MS", 0, 0, 100),
        ledger_threads=_int(env, "LEDGER_THREADS", 64, 1, 1_000),
        rate_limit_user_per_minute=_int(env, "LEDGER_RATE_LIMIT_USER_PER_MINUTE", 600, 1, 10**9),
        rate_limit_service_per_minute=_int(env, "LEDGER_RATE_LIMIT_SERVICE_PER_MINUTE", 1_000_000, 1, 10**9),
        rate_limit_admin_per_minute=_int(env, "LEDGER_RATE_LIMIT_ADMIN_PER_MINUTE", 6_000, 1, 10**9),
        log_level=_log_level(env),
        stripe_secret_key=env.get("STRIPE_SECRET_KEY") or None,
        stripe_webhook_secret=env.get("STRIPE_WEBHOOK_SECRET") or None,
        stripe_api_base=_url(env, "STRIPE_API_BASE", ("http", "https")),
        pix_expires_after_seconds=_int(env, "LEDGER_PIX_EXPIRES_AFTER_SECONDS", 3_600, 60, 1_209_600),
        checkout_success_url=env.get("LEDGER_CHECKOUT_SUCCESS_URL")
        or f"{public_url}/credits/success?session_id={{CHECKOUT_SESSION_ID}}",
        checkout_cancel_url=env.get("LEDGER_CHECKOUT_CANCEL_URL") or f"{public_url}/credits/cancel",
        smtp_url=_url(env, "LEDGER_SMTP_URL", ("smtp", "smtp+starttls", "smtps")),
        mail_from=env.get("LEDGER_MAIL_FROM") or "ledger@localhost",
        alert_emails=_emails(env, "LEDGER_ALERT_EMAILS"),
        alert_locale=_choice(env, "LEDGER_ALERT_LOCALE", MAIL_LOCALES),
        webhook_allow_private_networks=_bool(env, "LEDGER_WEBHOOK_ALLOW_PRIVATE_NETWORKS"),
        webhook_timeout_seconds=_int(env, "LEDGER_WEBHOOK_TIMEOUT_SECONDS", 10, 1, 60),
        notification_retry_seconds=_retry_schedule(env),
        stripe_failure_alert_threshold=_int(env, "LEDGER_STRIPE_FAILURE_ALERT_THRESHOLD", 5, 0, 1_000_000),
    )


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name) or choices[0]
    if raw not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _development_secret(data_dir: Path) -> str:
    path = data_dir / "dev-jwt-secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()
