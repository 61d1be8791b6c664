"""A real gateway for end-to-end tests: uvicorn on a loopback port, the projection worker beside it,
a clock the test can move, and an HTTP client that mints tokens per role."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import uvicorn

from gateway.app import create_app
from gateway.cli import mint_token
from gateway.settings import Settings, load_settings
from ledger.application import Ledger
from ledger.persistence import postgres_env
from migrations import apply_migrations
from projections.worker import ProjectionWorker

SECRET = "e2e-secret-" + "x" * 40


@dataclass
class Clock:
    """Real time plus an offset the test may move forward."""

    offset: timedelta = field(default_factory=timedelta)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Gateway:
    def __init__(
        self, database_url: str, *, redis_url: str | None = None, lean_routes: bool = True, **env: str
    ) -> None:
        self.database_url = database_url
        values = {"LEDGER_DATABASE_URL": database_url, "LEDGER_JWT_SECRET": SECRET, **env}
        if redis_url:
            values["LEDGER_REDIS_URL"] = redis_url
        self.settings: Settings = load_settings(values)
        self.clock = Clock()
        self.ledger = Ledger(postgres_env(database_url, pool_size=4, max_overflow=4))
        if self.settings.group_commit_max_batch > 0:
            self.ledger.enable_group_commit(max_batch=self.settings.group_commit_max_batch)
        self.ledger.seed(now=self.clock())
        self.worker = ProjectionWorker(
            database_url,
            self.ledger,
            clock=self.clock,
            batch_size=500,
            stripe_failure_threshold=self.settings.stripe_failure_alert_threshold,
        )
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(self.settings, self.ledger, database_url, clock=self.clock, lean_routes=lean_routes)
        self.server = uvicorn.Server(
            # As `ledger serve` runs it: the gateway writes its own access lines (gateway.logs).
            uvicorn.Config(
                self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", access_log=False
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> Gateway:
        self.worker.start()
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.worker.stop()
        self.ledger.close()

    def client(self, role: str | None = None, sub: str = "caller", **token: Any) -> Api:
        headers = {}
        if role is not None:
            bearer = token.get("raw") or mint_token(SECRET, role=role, sub=sub, ttl_seconds=600)
            headers["Authorization"] = f"Bearer {bearer}"
        return Api(base_url=self.base_url, headers=headers, timeout=30)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url) as conn:
            return conn.execute(sql).fetchall()  # type: ignore[arg-type]

    def events(self) -> int:
        """The events written so far by requests: the system watch's own (sales paused or resumed, the API-usage
        alert), which follow the figures in the background whenever they cross a line, are not counted."""
        return int(
            self.rows(
                "SELECT count(*) FROM ledger_events WHERE topic NOT IN ("
                "'ledger.BillingConfig.SalesPaused', 'ledger.BillingConfig.SalesResumed',"
                " 'ledger.BillingConfig.ApiUsageReachedThreshold', 'ledger.BillingConfig.ApiUsageBelowThreshold')"
            )[0][0]
        )


class Api(httpx.Client):
    """An httpx client with the few shortcuts the tests repeat."""

    def last_position(self, response: httpx.Response) -> dict[str, str]:
        return {"Ledger-Min-Position": response.headers.get("Ledger-Position", "0")}


@contextmanager
def private_database(server_url: str, name: str) -> Iterator[str]:
    """A migrated database of the module's own on the test server, dropped afterwards.

    Other runs share the test database and truncate it before their tests; counting events there would count
    theirs too. Where the server refuses CREATE DATABASE, the shared database is emptied once instead, which is
    what `clean_database` does before every test.
    """
    url = urlsplit(server_url)._replace(path=f"/{name}").geturl()
    try:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {name}")
    except psycopg.errors.InsufficientPrivilege:
        with psycopg.connect(server_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT tablename FROM pg_tables"
                " WHERE schemaname = current_schema() AND tablename <> 'schema_migrations'"
            ).fetchall()
            conn.execute(f"TRUNCATE {', '.join(row[0] for row in rows)} RESTART IDENTITY")
        yield server_url
        return
    try:
        apply_migrations(url)
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def running(database_url: str, **options: Any) -> Iterator[Gateway]:
    gateway = Gateway(database_url, **options).start()
    try:
        yield gateway
    finally:
        gateway.stop()
