"""Run every projection, and the hold sweeper, in threads of one process until stopped or one fails."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg

from ledger.application import Ledger
from projections.accounts import AccountsProjection
from projections.audit import AuditProjection
from projections.catalogue import CatalogueProjection
from projections.notifier import Notifier
from projections.outbox import Outbox, Recipients
from projections.payments import PaymentsProjection
from projections.runner import DEFAULT_BATCH_SIZE, DEFAULT_INTERVAL_SECONDS, Projection, ProjectionRunner
from projections.sweeper import HoldSweeper
from projections.watch import DEFAULT_FAILURE_THRESHOLD, SystemWatch


def all_projections() -> list[Projection]:
    """The views: what ``rebuild`` and ``verify`` know and readiness waits for. The notifier is not one."""
    return [AccountsProjection(), CatalogueProjection(), PaymentsProjection(), AuditProjection()]


def all_runners(
    database_url: str, batch_size: int = DEFAULT_BATCH_SIZE, interval_seconds: float = DEFAULT_INTERVAL_SECONDS
) -> list[ProjectionRunner]:
    return [
        ProjectionRunner(database_url, projection, batch_size=batch_size, interval_seconds=interval_seconds)
        for projection in all_projections()
    ]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ProjectionWorker:
    def __init__(
        self,
        database_url: str,
        ledger: Ledger | None = None,
        *,
        clock: Callable[[], datetime] = _utc_now,
        batch_size: int = DEFAULT_BATCH_SIZE,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        recipients: Recipients | None = None,
        stripe_failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
    ) -> None:
        self.database_url = database_url
        outbox = Outbox(recipients)
        # The views and the notifier in one runner: one read of the log, one decoding of each event and one
        # transaction per batch for all of them.
        self.runners = [
            ProjectionRunner(
                database_url,
                *all_projections(),
                Notifier(outbox),
                batch_size=batch_size,
                interval_seconds=interval_seconds,
            )
        ]
        self.sweeper = HoldSweeper(database_url, ledger, clock) if ledger is not None else None
        self.watch = (
            SystemWatch(database_url, ledger, outbox, clock, failure_threshold=stripe_failure_threshold)
            if ledger is not None
            else None
        )
        self.stop_event = threading.Event()
        self.failed = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        jobs: list[tuple[str, Callable[[threading.Event], None]]] = [
            (f"projection-{runner.name}", runner.run_forever) for runner in self.runners
        ]
        if self.sweeper is not None:
            jobs.append(("hold-sweeper", self.sweeper.run_forever))
        if self.watch is not None:
            jobs.append(("system-watch", self.watch.run_forever))
        for name, job in jobs:
            thread = threading.Thread(target=self._run, args=(job,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run(self, job: Callable[[threading.Event], None]) -> None:
        try:
            job(self.stop_event)
        except BaseException:  # noqa: BLE001 - recorded on the runner and reported by readiness.
            self.failed.set()

    def stop(self) -> None:
        self.stop_event.set()
        # An idle runner waits up to a second for the log's notification; one now lets it see the stop
        # at once. If the database is away, the runners are not waiting on it anyway.
        with contextlib.suppress(psycopg.Error), psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute("NOTIFY ledger_events")
        for thread in self._threads:
            thread.join(timeout=5)
