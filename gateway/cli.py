"""The ``ledger`` command line: serve, migrate, seed, project, verify, rebuild, config, stripe, token.

An error a person can fix (a setting, a database that does not answer, a port in use) is one or two
lines on stderr and a non-zero exit: 2 for a configuration or usage error, 1 for anything else.
"""

from __future__ import annotations

import argparse
import faulthandler
import getpass
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import jwt

from gateway import collector
from gateway.logs import configure_logging
from gateway.serving import ROLES, ServeOptions, say_unreachable, serve
from gateway.settings import Settings, SettingsError, load_settings
from gateway.wiring import DatabaseUnreachable, build_ledger, delivery_worker, open_database, recipients, utc_now
from ledger.config import SETTING_BOUNDS

MAX_TOKEN_TTL_SECONDS = 366 * 86_400


def _int_from(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            message = f"must be from {low} to {high}"
            raise argparse.ArgumentTypeError(message)
        return value

    parse.__name__ = "integer"  # argparse names the type in its message for a value that is not one.
    return parse


def _parser() -> argparse.ArgumentParser:
    from projections.worker import all_projections  # noqa: PLC0415 - the names, read when the parser is built.

    parser = argparse.ArgumentParser(prog="ledger", description="An event-sourced credit ledger for AI products.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    def command(name: str, summary: str, under: Any = commands) -> argparse.ArgumentParser:
        return under.add_parser(name, help=summary, description=summary)  # type: ignore[no-any-return]

    serve = command("serve", "serve the HTTP API (an embedded PostgreSQL when LEDGER_DATABASE_URL is not set)")
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: %(default)s)")
    serve.add_argument(
        "--port", type=_int_from(1, 65_535), default=8000, help="the TCP port to listen on (default: %(default)s)"
    )
    serve.add_argument(
        "--workers",
        type=_int_from(1, 64),
        default=1,
        metavar="1-64",
        help="worker processes on the one port (default: %(default)s)",
    )
    serve.add_argument(
        "--no-projections",
        action="store_true",
        help="do not run the projections and the hold sweeper in this process (when `ledger project` runs them)",
    )

    command("migrate", "apply the SQL migrations")
    command("seed", "create the default billing configuration and packages")
    command("project", "run the projection worker (a second one stands by)")
    command("verify", "recompute balances, billing settings and packages from the events and compare with the views")
    rebuild = command("rebuild", "rebuild projections from the first event, then switch")
    names = [projection.name for projection in all_projections()]
    rebuild.add_argument("name", nargs="?", choices=names, help="one projection (default: all of them)")

    config_tasks = command("config", "billing settings, changed through the ledger (an audited event)").add_subparsers(
        dest="task", required=True, metavar="task"
    )
    setting = command("set", "change one billing setting, as the actor cli:<your login name>", config_tasks)
    setting.add_argument(
        "key",
        choices=sorted(SETTING_BOUNDS),
        metavar="KEY",
        help="; ".join(f"{key} ({low} to {high})" for key, (low, high) in sorted(SETTING_BOUNDS.items())),
    )
    setting.add_argument("value", type=int, metavar="VALUE", help="a whole number within the key's range")

    stripe_commands = command("stripe", "Stripe tasks").add_subparsers(dest="task", required=True, metavar="task")
    sync = command("sync-products", "one Stripe product and price per package", stripe_commands)
    sync.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")

    token = command("token", "mint a JWT for development and tests (signed with LEDGER_JWT_SECRET)")
    token.add_argument(
        "--role",
        choices=ROLES,
        required=True,
        help="user: their own credits; admin: /api/admin; service: /api/usage, /api/users",
    )
    token.add_argument("--sub", required=True, help="the user or service id (1 to 128 characters)")
    token.add_argument(
        "--ttl-seconds",
        type=_int_from(1, MAX_TOKEN_TTL_SECONDS),
        default=3600,
        help=f"how long the token is valid, at most {MAX_TOKEN_TTL_SECONDS} (default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"ledger: configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    collector.tune()
    # `kill -USR1 <pid>` writes every thread's stack to stderr: what a process that seems stuck is doing.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    if args.command == "token":
        return _token(settings, args.role, args.sub, args.ttl_seconds)
    if args.command == "serve":
        options = ServeOptions(
            host=args.host, port=args.port, workers=args.workers, projections=not args.no_projections
        )
        return serve(settings, options)
    database = open_database(settings)
    if isinstance(database, DatabaseUnreachable):
        say_unreachable(database)
        return 1
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
    """Exit 0: an intact log, and views that agree with it and have applied all of it; 1: the log was
    tampered with, or the views differ from it; 2: the views are only behind."""
    from projections.chain import check_chain  # noqa: PLC0415
    from projections.verify import lags, verify  # noqa: PLC0415
    from projections.worker import all_projections  # noqa: PLC0415

    chain = check_chain(database_url)
    if not chain.intact:
        print(chain.verdict())
        for line in chain.explanation():
            print(line)
        print("the views were not compared: the log they would be compared with was tampered with", file=sys.stderr)
        return 1
    # On stderr, as a note for the operator to record outside the database; stdout stays the views' report.
    print(chain.verdict(), file=sys.stderr)
    differences = verify(database_url)
    for line in differences:
        print(line)
    print(f"{len(differences)} difference(s)")
    behind = [lag for lag in lags(database_url, [p.name for p in all_projections()]) if lag.behind_events]
    for lag in behind:
        print(f"{lag.projection}: {lag.behind_events:,} event(s) behind the log (at position {lag.position:,})")
    if differences:
        return 1
    if behind:
        print(
            "the views are behind: is `ledger project` (or `ledger serve` with its projections) running?",
            file=sys.stderr,
        )
        return 2
    return 0


def _project(settings: Settings, database_url: str, _: argparse.Namespace) -> int:
    from projections.worker import ProjectionWorker  # noqa: PLC0415

    ledger = build_ledger(settings, database_url, group_commit=False)
    worker = ProjectionWorker(
        database_url,
        ledger,
        batch_size=settings.projection_batch_size,
        interval_seconds=settings.projection_interval_ms / 1000,
        recipients=recipients(settings),
        stripe_failure_threshold=settings.stripe_failure_alert_threshold,
    )
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())

    def describe(*_: object) -> None:
        # What each runner last did, then every thread's stack: why a view seems stuck.
        print("\n".join(runner.describe() for runner in worker.runners), file=sys.stderr, flush=True)
        faulthandler.dump_traceback(all_threads=True)

    faulthandler.unregister(signal.SIGUSR1)
    signal.signal(signal.SIGUSR1, describe)
    deliveries = delivery_worker(settings, database_url)
    collector.freeze_startup()
    worker.start()
    deliveries.start()
    print("ledger: projection worker started (standing by if another is active)", flush=True)
    while not stopping.is_set() and not worker.failed.is_set():
        stopping.wait(0.5)
    deliveries.stop()
    worker.stop()
    ledger.close()
    if worker.failed.is_set():
        print("ledger: a projection stopped on an error (see the log); fix it and restart", file=sys.stderr)
        return 1
    return 0


def _rebuild(_: Settings, database_url: str, args: argparse.Namespace) -> int:
    """Exit 0: rebuilt; 1: refused, because the log's hash chain is broken."""
    from projections.chain import TamperedLogError, require_intact_chain  # noqa: PLC0415
    from projections.rebuild import rebuild  # noqa: PLC0415
    from projections.worker import all_projections  # noqa: PLC0415

    name: str | None = args.name  # One of the names the parser offers, or None for all.
    projections = {projection.name: projection for projection in all_projections()}
    try:
        require_intact_chain(database_url)  # Once for all the projections rebuilt below.
    except TamperedLogError as error:
        print(f"ledger: refusing to rebuild: {error}", file=sys.stderr)
        for line in error.check.explanation():
            print(line, file=sys.stderr)
        return 1
    for projection in [projections[name]] if name else projections.values():
        result = rebuild(database_url, projection, progress=_progress_bar(projection.name), check_chain=False)
        print(
            f"\nrebuilt {result.name}: {result.events:,} events in {result.seconds:.2f} s"
            f" ({result.events_per_second:,.0f} events/s)",
            flush=True,
        )
    return 0


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


def _config(settings: Settings, database_url: str, args: argparse.Namespace) -> int:
    """Exit 0: changed (or already so); 2: a value the setting does not take; 1: refused by the others."""
    from ledger.commands import ChangeBillingSettings, Origin  # noqa: PLC0415
    from ledger.errors import InvalidCommandError, LedgerError  # noqa: PLC0415

    ledger = build_ledger(settings, database_url, group_commit=False)
    try:
        old = ledger.billing_settings()
        receipt = ledger.change_billing_settings(
            ChangeBillingSettings(changes={args.key: args.value}, changed_by=f"cli:{getpass.getuser()}"),
            now=utc_now(),
            origin=Origin(actor_role="system"),
        )
    except LedgerError as error:
        print(f"ledger: refused: {error}", file=sys.stderr)
        return 2 if isinstance(error, InvalidCommandError) else 1
    finally:
        ledger.close()
    before = getattr(old, args.key)
    if receipt.changed:
        print(f"{args.key}: {before} -> {args.value} (position {receipt.position})")
    else:
        print(f"{args.key}: already {args.value}")
    return 0


DATABASE_COMMANDS: dict[str, Callable[[Settings, str, argparse.Namespace], int]] = {
    "migrate": _migrate,
    "seed": _seed,
    "project": _project,
    "verify": _verify,
    "rebuild": _rebuild,
    "stripe": _stripe,
    "config": _config,
}


def mint_token(secret: str, *, role: str, sub: str, ttl_seconds: int) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "role": role, "iat": now, "exp": now + ttl_seconds}, secret, algorithm="HS256")


def _token(settings: Settings, role: str, sub: str, ttl_seconds: int) -> int:
    if not 1 <= len(sub) <= 128:  # noqa: PLR2004
        print("ledger: --sub must be 1 to 128 characters", file=sys.stderr)
        return 2
    print(mint_token(settings.jwt_secret, role=role, sub=sub, ttl_seconds=ttl_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
