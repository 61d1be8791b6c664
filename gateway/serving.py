"""``ledger serve``: the port bound first, the database opened and migrated, then the app on one or more
worker processes, with the projections beside it; stopped by Ctrl-C or SIGTERM within seconds.

A port in use, a database that does not answer, an embedded server that does not start: each is said in
one or two lines a person can act on, and the command exits 1.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from typing import Any

from gateway import collector
from gateway.settings import Settings
from gateway.wiring import (
    Database,
    DatabaseUnreachable,
    ListenRefused,
    bind_listener,
    build_ledger,
    listen_address,
    open_database,
    prepare_database,
    running_projections,
    start_listening,
)

ROLES = ("user", "admin", "service")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# uvicorn waits this long for open requests once asked to stop, then cancels them. Balance streams end by
# themselves when the stop signal arrives (gateway.live), so this bounds only a request that hangs.
GRACEFUL_SHUTDOWN_SECONDS = 2
HOW_TO_RUN = "python3 -m uv run ledger"
# Set by `ledger serve` for its workers (gateway.asgi): the master's process id.
MASTER_PID_VARIABLE = "LEDGER_SERVE_MASTER_PID"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeOptions:
    host: str
    port: int
    workers: int
    projections: bool


def say_unreachable(unreachable: DatabaseUnreachable) -> None:
    if unreachable.embedded:
        print(f"ledger: could not start the embedded PostgreSQL: {unreachable.reason}", file=sys.stderr)
        print(f"ledger: its data and its log are in {unreachable.address}", file=sys.stderr)
        return
    print(f"ledger: could not connect to PostgreSQL at {unreachable.address}: {unreachable.reason}", file=sys.stderr)
    print(
        "ledger: check that PostgreSQL runs there and that LEDGER_DATABASE_URL names the right host, port and database",
        file=sys.stderr,
    )


def say_refused(refused: ListenRefused, port: int) -> None:
    if refused.in_use:
        print(f"ledger: {refused.address} is already in use by another program", file=sys.stderr)
        print(f"ledger: stop that, or choose another port: {HOW_TO_RUN} serve --port {port + 1}", file=sys.stderr)
        return
    print(f"ledger: cannot listen on {refused.address}: {refused.reason}", file=sys.stderr)
    print("ledger: choose another address with --host, or another port with --port", file=sys.stderr)


def serve(settings: Settings, options: ServeOptions) -> int:
    # Until the server takes SIGINT and SIGTERM over, and again while everything stops, a stop request is
    # noted, not raised: start-up ends its current step and does not serve, and stopping PostgreSQL is
    # never cut off halfway (a terminal's Ctrl-C can arrive twice: directly and through `uv run`).
    stop_requested = threading.Event()
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda *_: stop_requested.set())
    # The port first: a port in use is reported before an embedded PostgreSQL is started for nothing.
    listener = bind_listener(options.host, options.port)
    if isinstance(listener, ListenRefused):
        say_refused(listener, options.port)
        return 1
    database = open_database(settings)
    if isinstance(database, DatabaseUnreachable):
        listener.close()
        if stop_requested.is_set():  # Interrupted while it started (a terminal's Ctrl-C reaches initdb too).
            print("ledger: stopped", flush=True)
            return 0
        say_unreachable(database)
        return 1
    try:
        code = _prepare_and_serve(settings, options, database, listener, stop_requested)
    finally:
        listener.close()
        database.stop()
    if code == 0:
        # A stop asked for by Ctrl-C or SIGTERM is how a server normally ends, so it exits 0 (not 130):
        # supervisors and `set -e` scripts would otherwise report every requested stop as a failure.
        print("ledger: stopped", flush=True)
    return code


def _prepare_and_serve(
    settings: Settings,
    options: ServeOptions,
    database: Database,
    listener: socket.socket,
    stop_requested: threading.Event,
) -> int:
    applied = prepare_database(settings, database.url)
    if database.embedded is not None:
        print(f"ledger: embedded PostgreSQL, data in {database.embedded.pgdata}", flush=True)
        print(f"ledger: development JWT secret in {settings.data_dir / 'dev-jwt-secret'}", flush=True)
    if applied:
        print(f"ledger: applied migrations {', '.join(applied)}", flush=True)
    if stop_requested.is_set():
        return 0
    refused = start_listening(listener, options.host, options.port)
    if refused is not None:
        say_refused(refused, options.port)
        return 1
    _print_banner(options)
    # One command runs everything: the projections and the hold sweeper follow the log in this process.
    # Where `ledger project` (or another server) already runs them, these stand by.
    with running_projections(settings, database.url) if options.projections else contextlib.nullcontext():
        return _serve_app(settings, database.url, listener, options.workers, stop_requested)


def _print_banner(options: ServeOptions) -> None:
    url = f"http://{listen_address(options.host, options.port)}"
    lines = [
        f"serving on {url} with {options.workers} worker(s) (Ctrl-C stops)",
        f"API docs: {url}/schema/swagger",
        f"pages: {url}/login (sign in with a token: admins reach {url}/admin/credits, users {url}/credits)",
        f"a token for the API: {HOW_TO_RUN} token --role admin --sub you (roles: {', '.join(ROLES)})",
    ]
    for line in lines:
        print(f"ledger: {line}", flush=True)


def _serve_app(
    settings: Settings, database_url: str, listener: socket.socket, workers: int, stop_requested: threading.Event
) -> int:
    import uvicorn  # noqa: PLC0415
    from uvicorn.config import STARTUP_FAILURE  # noqa: PLC0415
    from uvicorn.supervisors import Multiprocess  # noqa: PLC0415

    from gateway.app import create_app  # noqa: PLC0415

    common: dict[str, Any] = {
        "log_level": settings.log_level.lower(),
        "access_log": False,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
    }
    if workers == 1:
        ledger = build_ledger(settings, database_url)
        try:
            server = uvicorn.Server(uvicorn.Config(create_app(settings, ledger, database_url), **common))
            collector.freeze_startup()
            server.should_exit = stop_requested.is_set()  # Asked to stop while starting: start, then stop.
            server.run(sockets=[listener])
        finally:
            ledger.close()
        return 0
    # Each worker process builds its own app from the environment; an embedded database's URL and the
    # development secret are passed on to them.
    os.environ["LEDGER_DATABASE_URL"] = database_url
    os.environ["LEDGER_JWT_SECRET"] = settings.jwt_secret
    # Each worker compares its parent with this, so a worker whose master died while it was still
    # starting (before it could note its parent) knows it too.
    os.environ[MASTER_PID_VARIABLE] = str(os.getpid())
    config = uvicorn.Config("gateway.asgi:app_from_environment", factory=True, workers=workers, **common)
    listener.set_inheritable(True)
    supervisor = Multiprocess(config, sockets=[listener])  # From here on it handles the stop signals.
    if stop_requested.is_set():
        supervisor.should_exit.set()
    supervisor.run()
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        print("ledger: a worker process could not start; its error is in the log above", file=sys.stderr)
        return 1
    return 0
