"""The ``ledger`` command line: serve, migrate, seed, project, verify, rebuild, token."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence

import jwt

from gateway.logs import configure_logging
from gateway.settings import Settings, SettingsError, load_settings
from gateway.wiring import Database, build_ledger, prepare_database, utc_now

ROLES = ("user", "admin", "service")
MAX_TOKEN_TTL_SECONDS = 366 * 86_400


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ledger", description="An event-sourced credit ledger for AI products.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the HTTP API (embedded PostgreSQL when none is configured)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, choices=range(1, 65), metavar="1-64")
    serve.add_argument(
        "--no-projections",
        action="store_true",
        help="do not run the projections and the hold sweeper in this process (when `ledger project` runs them)",
    )

    commands.add_parser("migrate", help="apply the SQL migrations")
    commands.add_parser("seed", help="create the default billing configuration and packages")
    commands.add_parser("project", help="run the projection worker (a second one stands by)")
    commands.add_parser("verify", help="recompute every balance from the events and compare with the view")
    rebuild = commands.add_parser("rebuild", help="rebuild projections from the first event, then switch")
    rebuild.add_argument("name", nargs="?", help="one projection (default: all)")

    stripe_commands = commands.add_parser("stripe", help="Stripe tasks").add_subparsers(dest="task", required=True)
    sync = stripe_commands.add_parser("sync-products", help="one Stripe product and price per package")
    sync.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")

    token = commands.add_parser("token", help="mint a JWT for development and tests")
    token.add_argument("--role", choices=ROLES, required=True)
    token.add_argument("--sub", required=True, help="the user or service id (1 to 128 characters)")
    token.add_argument("--ttl-seconds", type=int, default=3600)

    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"ledger: configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)

    if args.command == "token":
        return _token(settings, args.role, args.sub, args.ttl_seconds)
    if args.command == "serve":
        return _serve(settings, args.host, args.port, args.workers, projections=not args.no_projections)
    database = Database(settings)
    try:
        return DATABASE_COMMANDS[args.command](settings, database.url, args)
    finally:
        database.stop()


def _migrate(_: Settings, database_url: str, __: argparse.Namespace) -> int:
    from migrations import apply_migrations  # noqa: PLC0415

    applied = apply_migrations(database_url)
    print(f"applied {len(applied)} migration(s){': ' + ', '.join(applied) if applied else ''}")
    return 0


def _seed(settings: Settings, database_url: str, _: argparse.Namespace) -> int:
    ledger = build_ledger(settings, database_url, group_commit=False)
    try:
        print("seeded" if ledger.seed(now=utc_now()) else "already seeded")
    finally:
        ledger.close()
    return 0


def _verify(_: Settings, database_url: str, __: argparse.Namespace) -> int:
    from projections.verify import verify  # noqa: PLC0415

    differences = verify(database_url)
    for line in differences:
        print(line)
    print(f"{len(differences)} difference(s)")
    return 1 if differences else 0


def _project(settings: Settings, database_url: str, _: argparse.Namespace) -> int:
    from projections.worker import ProjectionWorker  # noqa: PLC0415

    ledger = build_ledger(settings, database_url, group_commit=False)
    worker = ProjectionWorker(
        database_url,
        ledger,
        batch_size=settings.projection_batch_size,
        interval_seconds=settings.projection_interval_ms / 1000,
    )
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    worker.start()
    print("ledger: projection worker started (standing by if another is active)", flush=True)
    while not stopping.is_set() and not worker.failed.is_set():
        stopping.wait(0.5)
    worker.stop()
    ledger.close()
    if worker.failed.is_set():
        print("ledger: a projection stopped on an error (see the log); fix it and restart", file=sys.stderr)
        return 1
    return 0


def _rebuild(_: Settings, database_url: str, args: argparse.Namespace) -> int:
    from projections.rebuild import rebuild  # noqa: PLC0415
    from projections.worker import all_projections  # noqa: PLC0415

    name: str | None = args.name
    projections = {projection.name: projection for projection in all_projections()}
    if name is not None and name not in projections:
        print(f"ledger: no projection named {name!r}; there are {', '.join(projections)}", file=sys.stderr)
        return 2
    for projection in [projections[name]] if name else projections.values():
        result = rebuild(database_url, projection, progress=_progress_bar(projection.name))
        print(
            f"\nrebuilt {result.name}: {result.events:,} events in {result.seconds:.2f} s"
            f" ({result.events_per_second:,.0f} events/s)",
            flush=True,
        )
    return 0


def _serve_workers(host: str, port: int, workers: int, log_level: str) -> None:
    """Several uvicorn worker processes on one listening socket, made here with TCP_NODELAY's protocol.

    uvicorn's own socket for several workers leaves Nagle's algorithm on for every connection, so each
    keep-alive response waited for the client's delayed ACK, about 40 ms (measured: 1.6 ms a request with
    one worker, 48 ms with two). asyncio sets TCP_NODELAY itself on sockets of the TCP protocol.
    """
    import socket  # noqa: PLC0415

    import uvicorn  # noqa: PLC0415
    from uvicorn.supervisors import Multiprocess  # noqa: PLC0415

    config = uvicorn.Config(
        "gateway.asgi:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(config.backlog)
    listener.set_inheritable(True)
    Multiprocess(config, sockets=[listener]).run()


def _progress_bar(name: str) -> Callable[[int, int], None]:
    width = 30

    def show(done: int, total: int) -> None:
        filled = width * done // total if total else width
        percent = 100 * done // total if total else 100
        bar = "#" * filled + "-" * (width - filled)
        print(f"\r{name} [{bar}] {percent:3d}% {done:,}/{total:,} events", end="", file=sys.stderr, flush=True)

    return show


def _stripe(settings: Settings, database_url: str, args: argparse.Namespace) -> int:
    import stripe  # noqa: PLC0415

    from gateway.stripe_sync import sync_products  # noqa: PLC0415

    if settings.stripe_secret_key is None:
        print("ledger: STRIPE_SECRET_KEY is not set", file=sys.stderr)
        return 2
    client = stripe.StripeClient(
        settings.stripe_secret_key,
        max_network_retries=2,
        base_addresses={"api": settings.stripe_api_base} if settings.stripe_api_base else {},
    )
    ledger = build_ledger(settings, database_url, group_commit=False)
    try:
        for line in sync_products(client, ledger, dry_run=args.dry_run, now=utc_now()):
            print(line)
    except stripe.StripeError as error:
        print(f"ledger: Stripe refused: {error.user_message or type(error).__name__}", file=sys.stderr)
        return 1
    finally:
        ledger.close()
    return 0


DATABASE_COMMANDS: dict[str, Callable[[Settings, str, argparse.Namespace], int]] = {
    "migrate": _migrate,
    "seed": _seed,
    "project": _project,
    "verify": _verify,
    "rebuild": _rebuild,
    "stripe": _stripe,
}


def mint_token(secret: str, *, role: str, sub: str, ttl_seconds: int) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "role": role, "iat": now, "exp": now + ttl_seconds}, secret, algorithm="HS256")


def _token(settings: Settings, role: str, sub: str, ttl_seconds: int) -> int:
    if not 1 <= len(sub) <= 128:  # noqa: PLR2004
        print("ledger: --sub must be 1 to 128 characters", file=sys.stderr)
        return 2
    if not 1 <= ttl_seconds <= MAX_TOKEN_TTL_SECONDS:
        print(f"ledger: --ttl-seconds must be from 1 to {MAX_TOKEN_TTL_SECONDS}", file=sys.stderr)
        return 2
    print(mint_token(settings.jwt_secret, role=role, sub=sub, ttl_seconds=ttl_seconds))
    return 0


def _serve(settings: Settings, host: str, port: int, workers: int, *, projections: bool) -> int:
    import uvicorn  # noqa: PLC0415

    from gateway.app import create_app  # noqa: PLC0415

    database = Database(settings)
    try:
        applied = prepare_database(settings, database.url)
        if database.embedded is not None:
            print(f"ledger: embedded PostgreSQL, data in {database.embedded.pgdata}", flush=True)
            print(f"ledger: development JWT secret in {settings.data_dir / 'dev-jwt-secret'}", flush=True)
        if applied:
            print(f"ledger: applied migrations {', '.join(applied)}", flush=True)
        worker = None
        if projections:
            # One command runs everything: the projections and the hold sweeper follow the log in this
            # process. Where `ledger project` (or another server) already runs them, these stand by.
            from projections.worker import ProjectionWorker  # noqa: PLC0415

            sweeper_ledger = build_ledger(settings, database.url, group_commit=False)
            worker = ProjectionWorker(
                database.url,
                sweeper_ledger,
                batch_size=settings.projection_batch_size,
                interval_seconds=settings.projection_interval_ms / 1000,
            )
            worker.start()
        print(f"ledger: serving on http://{host}:{port} with {workers} worker(s) (Ctrl-C stops)", flush=True)
        if workers == 1:
            ledger = build_ledger(settings, database.url)
            app = create_app(settings, ledger, database.url)
            uvicorn.run(app, host=host, port=port, log_level=settings.log_level.lower(), access_log=False)
            ledger.close()
        else:
            # Each worker process builds its own app from the environment; an embedded database's URL and
            # development secret are passed on to them.
            os.environ["LEDGER_DATABASE_URL"] = database.url
            os.environ["LEDGER_JWT_SECRET"] = settings.jwt_secret
            _serve_workers(host, port, workers, settings.log_level.lower())
        if worker is not None:
            worker.stop()
            sweeper_ledger.close()
    finally:
        # A terminal's Ctrl-C can reach this process twice (directly and through `uv run`): the second
        # must not interrupt stopping the database halfway.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        database.stop()
    print("ledger: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
