"""The Litestar application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from litestar import Litestar

from gateway.routes.health import HealthController
from gateway.settings import Settings
from ledger.application import Ledger


def create_app(settings: Settings, ledger: Ledger, database_url: str) -> Litestar:
    @asynccontextmanager
    async def database_pool(app: Litestar) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=settings.db_pool_size)
        app.state.pool = pool
        try:
            yield
        finally:
            await pool.close()

    app = Litestar(
        route_handlers=[HealthController],
        lifespan=[database_pool],
        debug=False,
    )
    app.state.settings = settings
    app.state.ledger = ledger
    return app
