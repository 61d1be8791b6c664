"""Liveness and readiness for orchestrators."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

READY_CHECK_TIMEOUT_SECONDS = 2.0


class Liveness(msgspec.Struct, frozen=True):
    status: str


class Readiness(msgspec.Struct, frozen=True):
    status: str
    checks: dict[str, Any]


class HealthController(Controller):
    path = "/health"
    tags = ["Operations"]  # noqa: RUF012 - Litestar reads a list here.

    @get("/live", operation_id="Liveness", summary="The process is up")
    async def live(self) -> Liveness:
        return Liveness(status="ok")

    @get("/ready", operation_id="Readiness", summary="The database answers and the views keep up")
    async def ready(self, state: State) -> Response[Readiness]:
        checks: dict[str, Any] = {}
        try:
            async with asyncio.timeout(READY_CHECK_TIMEOUT_SECONDS):
                await state.pool.fetchval("SELECT 1")
            checks["database"] = "ok"
        except (OSError, TimeoutError, Exception) as error:  # noqa: BLE001 - any failure means not ready.
            checks["database"] = f"unavailable: {type(error).__name__}"
        ok = all(value == "ok" for value in checks.values())
        return Response(
            Readiness(status="ok" if ok else "unavailable", checks=checks),
            status_code=HTTP_200_OK if ok else HTTP_503_SERVICE_UNAVAILABLE,
        )
