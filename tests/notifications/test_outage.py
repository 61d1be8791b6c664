"""A receiver that is down for a minute: given notifications due to an endpoint whose port is closed, when it
comes back, then everything arrives, once, signed, and each user's notifications in the order they were
created."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from ledger.application import Ledger
from tests.notifications.support import (
    Receiver,
    all_settled,
    debit,
    grant,
    notifier,
    register_endpoint,
    rows,
    value,
    wait_until,
)

pytestmark = pytest.mark.postgres

TYPES = ["credits.purchased", "credits.low_balance"]
OUTAGE_SECONDS = 60
# Growing waits, as the default schedule's, compressed: the tries span about 90 s at the least (jitter
# included), so none gives up during the outage, and one comes within 10 s of its end.
OUTAGE_RETRY_SECONDS = (1, 2, 5, *(10,) * 10)


def purchases_and_crossings(ledger: Ledger, user: str, rounds: int) -> None:
    """Each round: a purchase lifting the balance over the threshold, then usage taking it under."""
    for number in range(rounds):
        grant(ledger, user, 250_000 if number == 0 else 50_000, source="purchase", reference=f"cs_{user}_{number}")
        debit(ledger, user)


def test_given_a_receiver_down_when_it_comes_back_then_every_notification_arrives_in_order_per_user(
    pg_ledger: Ledger, clean_database: str, receiver: Receiver, start_worker: Callable[..., object]
) -> None:
    """Given an endpoint whose port is closed and two users with three purchases and three low-balance
    crossings each, when the receiver has been down for a minute and then starts, then it receives all
    twelve notifications, each once and validly signed, each user's in the order of creation; every
    notification ends ``delivered`` after more than one attempt for the first ones."""
    down = Receiver()  # Not started: its port refuses connections.
    register_endpoint(clean_database, down, "/hooks/later", TYPES)
    went_down = time.monotonic()
    start_worker(retry_seconds=OUTAGE_RETRY_SECONDS)
    users = ("hana", "ines")
    for user in users:
        purchases_and_crossings(pg_ledger, user, rounds=3)
    notifier(clean_database).catch_up()
    created = rows(clean_database, "SELECT user_id, type, data, seq FROM notifications ORDER BY seq")
    assert len(created) == 12

    def most_tries() -> int:
        return int(value(clean_database, "SELECT coalesce(max(attempts), 0) FROM notification_deliveries"))

    wait_until(lambda: most_tries() >= 3, timeout=20, what="three refused tries")
    time.sleep(max(OUTAGE_SECONDS - (time.monotonic() - went_down), 0))
    assert most_tries() >= 6  # Tried all along the minute.
    assert value(clean_database, "SELECT count(*) FROM notification_deliveries WHERE status = 'delivered'") == 0
    down.start()
    try:
        wait_until(lambda: all_settled(clean_database), timeout=90, what="every notification to be delivered")
        requests = down.on("/hooks/later")
    finally:
        down.stop()

    assert all(request.verified for request in requests), [request.problem for request in requests]
    assert len(requests) == len({request.webhook_id for request in requests}) == 12
    for user in users:
        expected = [(kind, data) for owner, kind, data, _ in created if owner == user]
        got = [
            (request.payload["type"], request.payload["data"])
            for request in requests
            if request.payload["data"]["user_id"] == user
        ]
        assert got == expected
        assert [kind for kind, _ in got] == [*TYPES * 3]
        assert [data.get("checkout_session_id") for kind, data in got if kind == "credits.purchased"] == [
            f"cs_{user}_{number}" for number in range(3)
        ]
    assert rows(clean_database, "SELECT DISTINCT status FROM notifications") == [("delivered",)]
    assert value(clean_database, "SELECT max(attempts) FROM notifications") >= 3
    assert value(clean_database, "SELECT count(*) FROM notification_deliveries WHERE status <> 'delivered'") == 0
