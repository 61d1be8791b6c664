"""The notifier killed mid-batch: given crossings waiting in the log, when `ledger project` is killed with SIGKILL
while it turns them into notifications and sends them, and another one carries on, then every crossing has one
notification, no more, and the receiver gets each one, repeats (at least once) only under the same webhook-id."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import pytest

from ledger.application import Ledger
from ledger.persistence import postgres_env
from tests.faults.servers import PrivatePostgres
from tests.faults.service import LedgerProcess, service_env
from tests.notifications.support import Receiver, cross_low_balance, register_endpoint, rows, value, wait_until

pytestmark = pytest.mark.postgres

USERS = 600
BATCH_SIZE = 20  # Many small batches, so that each kill comes while the notifier is at work.
KILLS = 3


def notifier_position(url: str) -> int:
    found = rows(url, "SELECT position FROM projection_positions WHERE name = 'notifier'")
    return int(found[0][0]) if found else 0


def sigkill(process: LedgerProcess) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.process.wait(timeout=5)


def test_a_notifier_killed_mid_batch_creates_each_notification_once_and_sends_it_under_one_id(
    private_postgres: PrivatePostgres, scratch: Path
) -> None:
    url = private_postgres.create_database("notifier_kill", migrated=True)
    receiver = Receiver()
    receiver.start()
    try:
        register_endpoint(url, receiver, "/hooks", ["credits.low_balance"])
        ledger = Ledger(postgres_env(url, pool_size=2, max_overflow=2))
        try:
            for number in range(USERS):
                cross_low_balance(ledger, f"user-{number}")
        finally:
            ledger.close()
        head = value(url, "SELECT max(notification_id) FROM ledger_events")
        env = service_env(url) | {
            "LEDGER_PROJECTION_BATCH_SIZE": str(BATCH_SIZE),
            "LEDGER_PROJECTION_INTERVAL_MS": "0",  # Batch after batch: a kill lands inside one.
            "LEDGER_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
            "LEDGER_NOTIFICATION_RETRY_SECONDS": "1,1,1,1,1,1,1,1,1,1",
        }
        killed_at: list[int] = []
        for kill in range(KILLS):
            projector = LedgerProcess(f"project-{kill}", ["project"], env, scratch)
            try:
                start = notifier_position(url)
                # Killed as soon as the notifier has moved on from where this run began: in the middle of its work.
                wait_until(lambda start=start: notifier_position(url) > start, timeout=60, what="the notifier to move")
                killed_at.append(notifier_position(url))
            finally:
                sigkill(projector)
        assert killed_at[-1] < head, "the notifier finished before the last kill; make the log longer"
        last = LedgerProcess("project-last", ["project"], env, scratch)
        try:
            wait_until(lambda: notifier_position(url) >= head, timeout=120, what="the notifier to catch up")
            wait_until(
                lambda: value(url, "SELECT count(*) FROM notifications WHERE status <> 'delivered'") == 0,
                timeout=120,
                what="every notification to be delivered",
            )
        finally:
            last.stop()
        requests = receiver.on("/hooks")
    finally:
        receiver.stop()

    created = rows(url, "SELECT data->>'user_id', id FROM notifications WHERE type = 'credits.low_balance'")
    assert len(created) == USERS
    assert {user for user, _ in created} == {f"user-{number}" for number in range(USERS)}
    assert all(request.verified for request in requests), [r.problem for r in requests if not r.verified][:3]
    # At least once: a send the kill interrupted comes again, under the same id.
    assert {request.webhook_id for request in requests} == {f"msg_{notification.hex}" for _, notification in created}
    for request in requests:
        same = [r for r in requests if r.webhook_id == request.webhook_id]
        assert {r.body for r in same} == {request.body}
