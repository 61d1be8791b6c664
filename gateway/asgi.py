"""The application built from the environment, for ASGI servers that start several worker processes.

``ledger serve --workers N`` hands this factory to uvicorn, which imports it in each worker. Every
worker has its own ledger and pools; they meet only in PostgreSQL (and Redis), which is what keeps
balances, idempotency and rate limits right across them.
"""

from __future__ import annotations

from litestar import Litestar

from gateway.app import create_app
from gateway.logs import configure_logging
from gateway.settings import SettingsError, load_settings
from gateway.wiring import build_ledger


def app_from_environment() -> Litestar:
    settings = load_settings()
    if settings.database_url is None:
        raise SettingsError("worker processes need LEDGER_DATABASE_URL (ledger serve sets it for them)")
    configure_logging(settings.log_level)
    ledger = build_ledger(settings, settings.database_url)
    app = create_app(settings, ledger, settings.database_url)
    app.on_shutdown.append(ledger.close)
    return app
