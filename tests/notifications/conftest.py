"""Fixtures of the notification tests: a receiver, an SMTP server and delivery workers, all real and local."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gateway.outbound.deliveries import DeliveryWorker
from tests.notifications.support import Receiver, SmtpServer

# Fast enough for a test to see several tries, and long enough (ten tries) that nothing gives up by accident.
RETRY_SECONDS = (1,) * 10


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "load: a load test, kept short enough to run with the suite")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.controller.start()
    try:
        yield server
    finally:
        server.controller.stop()


@pytest.fixture
def start_worker(clean_database: str, receiver: Receiver, smtp: SmtpServer) -> Iterator[Callable[..., DeliveryWorker]]:
    """Start a ``DeliveryWorker`` on the clean database (stopped before the receiver and the SMTP server)."""
    workers: list[DeliveryWorker] = []

    def start(**options: Any) -> DeliveryWorker:
        options.setdefault("retry_seconds", RETRY_SECONDS)
        options.setdefault("webhook_timeout_seconds", 5)
        options.setdefault("allow_private_networks", True)
        options.setdefault("mailer", smtp.mailer())
        worker = DeliveryWorker(clean_database, **options)
        worker.start()
        workers.append(worker)
        return worker

    try:
        yield start
    finally:
        receiver.released.set()  # A hanging request lets go, so a worker stops at once.
        for worker in workers:
            worker.stop()
