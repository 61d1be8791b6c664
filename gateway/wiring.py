"""Build the parts of the service from the settings: the database URL and the ledger application."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.embedded import EmbeddedPostgres
from gateway.settings import Settings
from ledger.application import Ledger
from ledger.persistence import postgres_env
from migrations import apply_migrations


def utc_now() -> datetime:
    return datetime.now(UTC)


class Database:
    """The database the service uses: the configured one, or an embedded one started on demand."""

    def __init__(self, settings: Settings) -> None:
        self.embedded: EmbeddedPostgres | None = None
        if settings.database_url is None:
            self.embedded = EmbeddedPostgres(settings.data_dir)
            self.url = self.embedded.url
        else:
            self.url = settings.database_url

    def stop(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()


def build_ledger(settings: Settings, database_url: str, *, group_commit: bool = True) -> Ledger:
    ledger = Ledger(
        postgres_env(
            database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            connect_timeout_seconds=settings.db_connect_timeout_seconds,
            lock_timeout_seconds=settings.db_lock_timeout_seconds,
            cache_maxsize=settings.cache_maxsize,
        )
    )
    if group_commit and settings.group_commit_max_batch > 0:
        ledger.enable_group_commit(
            max_batch=settings.group_commit_max_batch, max_wait_seconds=settings.group_commit_wait_ms / 1000
        )
    return ledger


def prepare_database(settings: Settings, database_url: str) -> list[str]:
    """Apply migrations and seed the defaults; safe to run from several processes at once."""
    applied = apply_migrations(database_url)
    ledger = build_ledger(settings, database_url, group_commit=False)
    try:
        ledger.seed(now=utc_now())
    finally:
        ledger.close()
    return applied
