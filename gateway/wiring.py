"""Build the parts of the service from the settings: the database, the listening socket and the ledger."""

from __future__ import annotations

import errno
import getpass
import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from psycopg.conninfo import conninfo_to_dict

from gateway.embedded import EmbeddedPostgres
from gateway.settings import Settings
from ledger.application import Ledger
from ledger.persistence import postgres_env
from migrations import apply_migrations
from projections.outbox import Recipients

if TYPE_CHECKING:
    from gateway.outbound.deliveries import DeliveryWorker


def utc_now() -> datetime:
    return datetime.now(UTC)


class Database:
    """The database the service uses: the configured one, or an embedded one this process started."""

    def __init__(self, url: str, embedded: EmbeddedPostgres | None = None) -> None:
        self.url = url
        self.embedded = embedded

    def stop(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseUnreachable:
    """Why there is no database to use: where it was (never a password), and the one-line reason.

    ``embedded`` says the address is an embedded server's data directory that could not be started.
    """

    address: str
    reason: str
    embedded: bool = False


def open_database(settings: Settings) -> Database | DatabaseUnreachable:
    """The database, started when embedded and connected to once, so that a wrong address or a server that
    is down is one clear message before anything else starts.

    This is the one place a failed start or connection becomes a result; a database that goes away while
    the service runs fails the requests of that time instead.
    """
    if settings.database_url is not None:
        database = Database(settings.database_url)
    else:
        embedded = _start_embedded(settings.data_dir)
        if isinstance(embedded, DatabaseUnreachable):
            return embedded
        database = Database(embedded.url, embedded)
    try:
        with psycopg.connect(database.url, connect_timeout=settings.db_connect_timeout_seconds):
            return database
    except psycopg.OperationalError as error:
        database.stop()
        return DatabaseUnreachable(address=database_address(database.url), reason=_first_reason(str(error)))


def database_address(database_url: str) -> str:
    """``host:port/dbname`` as libpq resolves them from the URL and its defaults; the password is left out."""
    params = conninfo_to_dict(database_url)
    # Without a host libpq uses its Unix socket directory, and without a database name the user's name.
    host = str(params.get("host") or os.environ.get("PGHOST") or "local socket")
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
    user = str(params.get("user") or os.environ.get("PGUSER") or getpass.getuser())
    dbname = str(params.get("dbname") or os.environ.get("PGDATABASE") or user)
    return f"{host}:{port}/{dbname}"


def _first_reason(message: str) -> str:
    # libpq says 'connection to server at "h", port p failed: <reason>' and may add hints on further lines;
    # the reason is what a person acts on, and the address is named separately.
    first_line = message.strip().splitlines()[0] if message.strip() else "no reason given"
    reason = first_line.rsplit(" failed: ", 1)[-1]
    return reason.removeprefix("FATAL:").strip()


def _start_embedded(data_dir: Path) -> EmbeddedPostgres | DatabaseUnreachable:
    try:
        return EmbeddedPostgres(data_dir)
    except (subprocess.SubprocessError, psycopg.OperationalError) as error:
        return DatabaseUnreachable(address=str(data_dir / "pgdata"), reason=_start_failure(error), embedded=True)


def _start_failure(error: Exception) -> str:
    # The wheel's own log line already holds the failed program's output; the reason names the program.
    if isinstance(error, subprocess.CalledProcessError | subprocess.TimeoutExpired):
        program = Path(str(error.cmd[0] if isinstance(error.cmd, list) else error.cmd)).name
        if isinstance(error, subprocess.TimeoutExpired):
            return f"{program} did not finish within {error.timeout:g} s"
        return f"{program} exited with status {error.returncode}"
    return _first_reason(str(error))


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenRefused:
    """The address could not be listened on: the kernel's reason, and whether another socket holds it."""

    address: str
    reason: str
    in_use: bool


LISTEN_BACKLOG = 2048


def bind_listener(host: str, port: int) -> socket.socket | ListenRefused:
    """A TCP socket bound to ``host:port`` and not yet listening: the address is checked and held before
    anything slow starts, and connections are refused (not left waiting) until ``start_listening``.

    The socket is made here, with TCP's protocol number, for every worker count: uvicorn's own socket for
    several workers leaves Nagle's algorithm on for every connection, so each keep-alive response waited
    for the client's delayed ACK, about 40 ms (measured: 1.6 ms a request with one worker, 48 ms with two).
    asyncio sets TCP_NODELAY itself on sockets of the TCP protocol.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    # A restart may bind while connections of the previous run linger in TIME_WAIT; a listening socket
    # still refuses the bind.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        return _refused(host, port, error)
    return listener


def start_listening(listener: socket.socket, host: str, port: int) -> ListenRefused | None:
    try:
        listener.listen(LISTEN_BACKLOG)
    except OSError as error:  # Another socket that also allows address reuse began listening first.
        return _refused(host, port, error)
    return None


def listen_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _refused(host: str, port: int, error: OSError) -> ListenRefused:
    return ListenRefused(
        address=listen_address(host, port), reason=error.strerror or str(error), in_use=error.errno == errno.EADDRINUSE
    )


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


def recipients(settings: Settings) -> Recipients:
    """Who the notifier addresses by email: nobody while no SMTP server is configured."""
    return Recipients(
        email_enabled=settings.smtp_url is not None,
        alert_emails=settings.alert_emails,
        alert_locale=settings.alert_locale,
    )


def delivery_worker(settings: Settings, database_url: str) -> DeliveryWorker:
    """The sender of notifications; one runs beside each projection worker, sharing the work."""
    from gateway.outbound.deliveries import DeliveryWorker  # noqa: PLC0415 - only where projections run.
    from gateway.outbound.sending import Mailer  # noqa: PLC0415

    mailer = (
        Mailer(
            settings.smtp_url,
            mail_from=settings.mail_from,
            public_url=settings.public_url,
            timeout_seconds=settings.webhook_timeout_seconds,
        )
        if settings.smtp_url is not None
        else None
    )
    return DeliveryWorker(
        database_url,
        retry_seconds=settings.notification_retry_seconds,
        webhook_timeout_seconds=settings.webhook_timeout_seconds,
        allow_private_networks=settings.webhook_allow_private_networks,
        mailer=mailer,
    )


@contextmanager
def running_projections(settings: Settings, database_url: str) -> Iterator[None]:
    """The projections and the hold sweeper follow the log in this process while the block runs; where
    another process already runs them, these stand by."""
    from projections.worker import ProjectionWorker  # noqa: PLC0415 - only `serve` with projections needs it.

    sweeper_ledger = build_ledger(settings, database_url, group_commit=False)
    worker = ProjectionWorker(
        database_url,
        sweeper_ledger,
        batch_size=settings.projection_batch_size,
        interval_seconds=settings.projection_interval_ms / 1000,
        recipients=recipients(settings),
        stripe_failure_threshold=settings.stripe_failure_alert_threshold,
    )
    deliveries = delivery_worker(settings, database_url)
    worker.start()
    deliveries.start()
    try:
        yield
    finally:
        deliveries.stop()
        worker.stop()
        sweeper_ledger.close()
