"""The application built from the environment, for ASGI servers that start several worker processes.

``ledger serve --workers N`` hands this factory to uvicorn, which imports it in each worker. Every
worker has its own ledger and pools; they meet only in PostgreSQL (and Redis), which is what keeps
balances, idempotency and rate limits right across them.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from litestar import Litestar

from gateway import collector
from gateway.app import create_app
from gateway.logs import configure_logging
from gateway.serving import MASTER_PID_VARIABLE
from gateway.settings import SettingsError, load_settings
from gateway.wiring import build_ledger

# How often a worker looks whether the process that started it is still there.
PARENT_POLL_SECONDS = 0.5
# uvicorn's graceful wait (gateway.serving) and a moment to close the pools.
ORPHAN_EXIT_DEADLINE_SECONDS = 3.0


def stop_when_orphaned(parent_pid: int) -> None:
    """End this worker when its master is gone (killed with SIGKILL, say), instead of serving on alone.

    An orphaned worker keeps the listening socket open, so the next ``ledger serve`` could not bind its
    port. SIGTERM lets uvicorn stop the way Ctrl-C does (open requests get their graceful moment).
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)
        # A stop that has not ended the process by then (a request that hangs, a pool that will not
        # close) must not keep the port: the process ends regardless.
        time.sleep(ORPHAN_EXIT_DEADLINE_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def app_from_environment() -> Litestar:
    stop_when_orphaned(int(os.environ.get(MASTER_PID_VARIABLE) or os.getppid()))
    settings = load_settings()
    if settings.database_url is None:
        raise SettingsError("worker processes need LEDGER_DATABASE_URL (ledger serve sets it for them)")
    configure_logging(settings.log_level)
    ledger = build_ledger(settings, settings.database_url)
    app = create_app(settings, ledger, settings.database_url)
    app.on_shutdown.append(ledger.close)
    collector.tune()
    collector.freeze_startup()
    return app
