"""Load: a thousand low-balance crossings at once, followed live by the notifier and the delivery worker.

Speed is measured and printed (run with ``-s`` to see it), never asserted: the machine is shared."""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable
from datetime import datetime

import pytest

from ledger.application import Ledger
from ledger.commands import DebitUsage, GrantCredits
from tests.notifications.support import (
    DEBIT_TOKENS,
    Receiver,
    all_settled,
    notifier,
    now,
    register_endpoint,
    rows,
    value,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.load]

ACCOUNTS = 1_000
LOW = "credits.low_balance"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def test_given_a_thousand_crossings_when_notified_live_then_each_is_created_and_delivered_once(
    pg_ledger: Ledger,
    clean_database: str,
    receiver: Receiver,
    start_worker: Callable[..., object],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Given one endpoint, a running notifier and a running delivery worker, when 1,000 accounts are each
    granted 250 credits and then debited under the threshold (through group commit, within seconds), then
    1,000 notifications are created, one per account, and the receiver gets 1,000 distinct, validly signed
    webhooks. The latency from each event's commit (the body's ``timestamp``) to its receipt is printed."""
    caplog.set_level(logging.INFO, logger="gateway.outbound.deliveries")
    register_endpoint(clean_database, receiver, "/hooks/load", [LOW])
    start_worker()
    runner = notifier(clean_database, email=False)
    stop = threading.Event()
    following = threading.Thread(target=runner.run_forever, args=(stop,), daemon=True)
    following.start()
    pg_ledger.enable_group_commit()
    users = [f"load-{number:04d}" for number in range(ACCOUNTS)]
    try:
        wait_until(lambda: runner.active, what="the notifier to be active")
        started = time.monotonic()
        grants = [
            pg_ledger.submit(
                GrantCredits(user_id=user, amount_millicredits=250_000, source="promotional"),
                idempotency=None,
                now=now(),
            )
            for user in users
        ]
        for future in grants:
            future.result(timeout=60)
        debits = [
            pg_ledger.submit(DebitUsage(user_id=user, tokens=DEBIT_TOKENS), idempotency=None, now=now())
            for user in users
        ]
        for future in debits:
            future.result(timeout=60)
        produced_seconds = time.monotonic() - started

        wait_until(
            lambda: len(receiver.on("/hooks/load")) >= ACCOUNTS, timeout=240, what="1,000 webhooks at the receiver"
        )
        delivered_seconds = time.monotonic() - started
        wait_until(lambda: all_settled(clean_database), timeout=60, what="every notification to be settled")
    finally:
        stop.set()
        following.join(10)
    assert runner.error is None

    requests = receiver.on("/hooks/load")
    assert all(request.verified for request in requests), {request.problem for request in requests}
    ids = {request.webhook_id for request in requests}
    assert len(ids) == ACCOUNTS
    assert len(requests) == ACCOUNTS  # none delivered twice either
    assert {request.payload["data"]["user_id"] for request in requests} == set(users)
    assert rows(
        clean_database,
        "SELECT type, count(*), count(DISTINCT cause), count(DISTINCT user_id) FROM notifications GROUP BY type",
    ) == [(LOW, ACCOUNTS, ACCOUNTS, ACCOUNTS)]
    assert value(clean_database, "SELECT count(*) FROM notifications WHERE status = 'delivered'") == ACCOUNTS
    retried = [record.getMessage() for record in caplog.records if "not delivered" in record.getMessage()]
    assert value(clean_database, "SELECT max(attempts) FROM notification_deliveries") == 1, retried

    latencies_ms = [
        (request.at - datetime.fromisoformat(request.payload["timestamp"]).timestamp()) * 1000 for request in requests
    ]
    print(  # noqa: T201 - the measurement, shown with -s
        f"\nload: {ACCOUNTS} crossings produced in {produced_seconds:.1f} s, all received "
        f"{delivered_seconds:.1f} s after the first command; event-to-receipt latency "
        f"p50 {percentile(latencies_ms, 0.50):.0f} ms, p99 {percentile(latencies_ms, 0.99):.0f} ms, "
        f"max {max(latencies_ms):.0f} ms, mean {statistics.fmean(latencies_ms):.0f} ms; "
        f"{len(requests)} requests, {len(ids)} distinct webhook-ids"
    )
