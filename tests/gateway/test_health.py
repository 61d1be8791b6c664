"""Liveness and readiness over HTTP, including each projection's lag."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from gateway.app import create_app
from gateway.settings import load_settings
from ledger.application import Ledger
from ledger.commands import GrantCredits
from projections.worker import all_runners
from tests.conftest import T0


@pytest.fixture
async def client(pg_ledger: Ledger, clean_database: str) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    settings = load_settings(
        {"LEDGER_DATABASE_URL": clean_database, "LEDGER_JWT_SECRET": "x" * 40, "LEDGER_READY_MAX_LAG_SECONDS": "30"}
    )
    async with AsyncTestClient(app=create_app(settings, pg_ledger, clean_database)) as test_client:
        yield test_client


async def test_live_answers_ok(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    response = await client.get("/health/live")
    assert (response.status_code, response.json()["status"]) == (200, "ok")


async def test_ready_reports_each_projection_caught_up(
    client: AsyncTestClient,
    clean_database: str,  # type: ignore[type-arg]
) -> None:
    for runner in all_runners(clean_database):
        runner.catch_up()
    response = await client.get("/health/ready")
    body = response.json()
    assert response.status_code == 200, body
    assert body["checks"]["database"] == "ok"
    assert {name: lag["lag_events"] for name, lag in body["checks"]["projections"].items()} == {
        "accounts": 0,
        "audit": 0,
        "catalogue": 0,
        "payments": 0,
    }


async def test_ready_turns_unavailable_when_a_projection_lags_past_the_bound(
    client: AsyncTestClient,
    clean_database: str,
    pg_ledger: Ledger,  # type: ignore[type-arg]
) -> None:
    for runner in all_runners(clean_database):
        runner.catch_up()
    pg_ledger.grant_credits(GrantCredits(user_id="u1", amount_millicredits=5, source="admin"), idempotency=None, now=T0)
    with psycopg.connect(clean_database, autocommit=True) as conn:
        conn.execute("UPDATE projection_positions SET updated_at = now() - interval '1 hour' WHERE name = 'accounts'")
    response = await client.get("/health/ready")
    body = response.json()
    assert response.status_code == 503, body
    accounts = body["checks"]["projections"]["accounts"]
    assert (accounts["status"], accounts["lag_events"]) == ("lagging", 2)  # The account opened, then the grant.
    assert accounts["lag_seconds"] >= 3_600
