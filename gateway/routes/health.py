"""Liveness and readiness for orchestrators."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import msgspec
from litestar import Response, get
from litestar.datastructures import State
from litestar.openapi import ResponseSpec
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from gateway.openapi import NO_TOKEN, ApiController

READY_CHECK_TIMEOUT_SECONDS = 2.0


class Liveness(msgspec.Struct, frozen=True):
    status: str
    pid: int


class Readiness(msgspec.Struct, frozen=True):
    status: str
    checks: dict[str, Any]


NOTIFIER = "notifier"

# Counting unapplied events stops here: past it the projection is far behind whatever the exact number.
LAG_COUNT_LIMIT = 100_000


async def _projection_lag(pool: Any, max_lag_seconds: int) -> dict[str, dict[str, Any]]:
    """Each projection's lag: events not yet applied, and seconds since it last moved while behind."""
    lags: dict[str, dict[str, Any]] = {}
    rows = await pool.fetch(
        "SELECT name, position, extract(epoch FROM now() - updated_at)::float8 AS idle_seconds"
        " FROM projection_positions ORDER BY name"
    )
    for row in rows:
        behind = await pool.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM ledger_events WHERE notification_id > $1 LIMIT $2) AS pending",
            row["position"],
            LAG_COUNT_LIMIT,
        )
        lag_seconds = round(row["idle_seconds"], 3) if behind else 0.0
        lags[row["name"]] = {
            "status": "ok" if lag_seconds <= max_lag_seconds else "lagging",
            "lag_events": behind,
            "lag_seconds": lag_seconds,
            "position": row["position"],
        }
    return lags


class HealthController(ApiController):
    path = "/health"
    tags = ["Operations"]  # noqa: RUF012 - Litestar reads a list here.

    @get("/live", operation_id="Liveness", summary="The process is up", exclude_from_auth=True, security=NO_TOKEN)
    async def live(self) -> Liveness:
        # The process id tells which worker answered, when several share the port.
        return Liveness(status="ok", pid=os.getpid())

    @get(
        "/ready",
        operation_id="Readiness",
        summary="The database answers and the views keep up",
        exclude_from_auth=True,
        security=NO_TOKEN,
        responses={503: ResponseSpec(Readiness, description="The database does not answer, or a view lags too far")},
    )
    async def ready(self, state: State) -> Response[Readiness]:
        checks: dict[str, Any] = {}
        try:
            async with asyncio.timeout(READY_CHECK_TIMEOUT_SECONDS):
                await state.pool.fetchval("SELECT 1")
            checks["database"] = "ok"
        except (OSError, TimeoutError, Exception) as error:  # noqa: BLE001 - any failure means not ready.
            checks["database"] = f"unavailable: {type(error).__name__}"
        if checks["database"] == "ok":
            lags = await _projection_lag(state.pool, state.settings.ready_max_lag_seconds)
            # The notifier's lag is reported on its own: late notifications do not make the API unready.
            notifier = lags.pop(NOTIFIER, None)
            checks["projections"] = lags
            if notifier is not None:
                checks["notifier"] = notifier
        if state.redis is not None:
            # Redis down does not make the ledger unready (rate limits fail open), but it is reported.
            try:
                async with asyncio.timeout(READY_CHECK_TIMEOUT_SECONDS):
                    await state.redis.ping()
                checks["redis"] = "ok"
            except Exception as error:  # noqa: BLE001
                checks["redis"] = f"unavailable: {type(error).__name__}"
        ok = checks["database"] == "ok" and all(lag["status"] == "ok" for lag in checks.get("projections", {}).values())
        return Response(
            Readiness(status="ok" if ok else "unavailable", checks=checks),
            status_code=HTTP_200_OK if ok else HTTP_503_SERVICE_UNAVAILABLE,
        )
