"""Run every projection in threads of one process until stopped, or until one of them fails."""

from __future__ import annotations

import threading

from projections.accounts import AccountsProjection
from projections.catalogue import CatalogueProjection
from projections.runner import ProjectionRunner


def all_runners(database_url: str) -> list[ProjectionRunner]:
    return [
        ProjectionRunner(database_url, AccountsProjection()),
        ProjectionRunner(database_url, CatalogueProjection()),
    ]


class ProjectionWorker:
    def __init__(self, database_url: str) -> None:
        self.runners = all_runners(database_url)
        self.stop_event = threading.Event()
        self.failed = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for runner in self.runners:
            thread = threading.Thread(
                target=self._run, args=(runner,), name=f"projection-{runner.projection.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _run(self, runner: ProjectionRunner) -> None:
        try:
            runner.run_forever(self.stop_event)
        except BaseException:  # noqa: BLE001 - recorded in runner.error and reported by readiness.
            self.failed.set()

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self._threads:
            thread.join(timeout=5)
