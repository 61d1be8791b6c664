"""Created exactly once: whatever the notifier goes through (caught up again, replayed from the start, crashed
mid-batch, replaced by a standby) and however often Stripe repeats itself, each cause makes one
notification, with its deliveries fanned out once."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from ledger.application import Ledger
from ledger.payments import SessionCompleted, SessionDetails
from projections.notifier import Notifier
from projections.outbox import Outbox, Recipients
from projections.runner import ProjectionRunner
from tests.notifications.support import (
    Receiver,
    cross_low_balance,
    debit,
    grant,
    notifier,
    now,
    register_endpoint,
    rows,
    store_contact,
    value,
    wait_until,
)

pytestmark = pytest.mark.postgres

COUNTS = "SELECT count(*), count(DISTINCT cause), count(DISTINCT (type, cause)) FROM notifications"


def history(ledger: Ledger, users: list[str]) -> int:
    """Two low-balance crossings per user; returns how many notifications they must make."""
    for user in users:
        cross_low_balance(ledger, user)  # 190,000
        grant(ledger, user, 50_000)  # 240,000: armed again
        debit(ledger, user)  # 180,000: the second crossing
    return 2 * len(users)


def outbox_snapshot(url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    return (
        rows(url, "SELECT id, seq, type, cause FROM notifications ORDER BY seq"),
        rows(url, "SELECT id, notification_id, channel FROM notification_deliveries ORDER BY id"),
    )


def test_given_a_notifier_caught_up_when_it_runs_again_or_replays_the_log_then_nothing_is_created_twice(
    pg_ledger: Ledger, clean_database: str
) -> None:
    """Given the notifier caught up on a history with four crossings (an endpoint and a contact each
    getting them), when it catches up again, and when its position is reset to the start of the log and
    it replays everything, then the notifications and their deliveries are exactly those of the first
    run, and its own view of each balance is still the ledger's."""
    register_endpoint(clean_database, Receiver(), "/hooks/all", ["*"])
    store_contact(clean_database, "jo", "jo@example.com", "en")
    expected = history(pg_ledger, ["jo", "kai"])
    runner = notifier(clean_database)
    assert runner.catch_up() > 0
    first = outbox_snapshot(clean_database)
    assert len(first[0]) == expected
    assert len(first[1]) == expected + 2  # every notification to the endpoint, jo's also by email

    assert runner.catch_up() == 0
    with psycopg.connect(clean_database, autocommit=True) as conn:
        conn.execute("UPDATE projection_positions SET position = 0 WHERE name = 'notifier'")
    assert notifier(clean_database, batch_size=3).catch_up() > 0

    assert outbox_snapshot(clean_database) == first
    assert rows(clean_database, COUNTS) == [(expected, expected, expected)]
    for user in ("jo", "kai"):
        seen = value(clean_database, "SELECT balance_millicredits FROM notifier_accounts WHERE user_id = %s", (user,))
        assert seen == pg_ledger.get_balance(user, now=now()).balance_millicredits == 180_000


class CrashingNotifier(Notifier):
    """Crashes once, after its notifications were written in the batch's transaction, on the given batch."""

    def __init__(self, crash_on_batch: int) -> None:
        super().__init__(Outbox(Recipients()))
        self.batches = 0
        self.crash_on_batch = crash_on_batch

    def apply(self, conn: psycopg.Connection[Any], events: list[tuple[int, Any]]) -> None:
        super().apply(conn, events)
        self.batches += 1
        if self.batches == self.crash_on_batch:
            raise RuntimeError("the process died here")


def test_given_a_notifier_that_crashes_mid_batch_when_it_runs_again_then_each_cause_is_notified_once(
    pg_ledger: Ledger, clean_database: str
) -> None:
    """Given a notifier that dies in its second batch, after the outbox insert but before the commit, when
    a notifier runs again from the committed position, then the crashed batch's notifications are created
    once (the first batch's are not created again) and the total is one per cause."""
    expected = history(pg_ledger, [f"crash-{number}" for number in range(4)])
    crashing = ProjectionRunner(clean_database, CrashingNotifier(crash_on_batch=2), batch_size=5)
    with pytest.raises(RuntimeError, match="died"):
        crashing.catch_up()
    committed = value(clean_database, "SELECT position FROM projection_positions WHERE name = 'notifier'")
    before = value(clean_database, "SELECT count(*) FROM notifications")
    assert committed > 0
    assert value(clean_database, "SELECT count(*) FROM notifications WHERE log_position > %s", (committed,)) == 0

    notifier(clean_database, batch_size=5).catch_up()
    assert rows(clean_database, COUNTS) == [(expected, expected, expected)]
    assert value(clean_database, "SELECT count(*) FROM notifications") > before


def test_given_a_notifier_whose_batch_failed_when_the_same_notifier_goes_on_then_its_memory_is_not_trusted(
    pg_ledger: Ledger, clean_database: str
) -> None:
    """Given a notifier that dies in its second batch after changing its copy of the state in memory (the
    transaction rolls back), when the same notifier catches up again on a new connection, then it works
    from its tables: one notification per cause, and its view of each balance is the ledger's."""
    expected = history(pg_ledger, [f"again-{number}" for number in range(4)])
    crashing = CrashingNotifier(crash_on_batch=2)
    # Batches of seven: after the seed's five events, the second batch changes the first user's balance
    # without opening the account again.
    runner = ProjectionRunner(clean_database, crashing, batch_size=7)
    with pytest.raises(RuntimeError, match="died"):
        runner.catch_up()
    runner.catch_up()
    assert rows(clean_database, COUNTS) == [(expected, expected, expected)]
    for number in range(4):
        user = f"again-{number}"
        seen = value(clean_database, "SELECT balance_millicredits FROM notifier_accounts WHERE user_id = %s", (user,))
        assert seen == pg_ledger.get_balance(user, now=now()).balance_millicredits


def test_given_two_notifiers_when_the_active_one_stops_mid_stream_then_the_standby_takes_over_without_duplicates(
    pg_ledger: Ledger, clean_database: str
) -> None:
    """Given two notifier runners following the log (one holds the lock, the other stands by) while users
    keep crossing the threshold, when the active one is stopped mid-stream, then the standby becomes
    active, and once the stream ends there is exactly one notification per crossing."""
    runners = [notifier(clean_database, batch_size=4), notifier(clean_database, batch_size=4)]
    stops = [threading.Event(), threading.Event()]
    threads = [
        threading.Thread(target=runner.run_forever, args=(stop,), daemon=True)
        for runner, stop in zip(runners, stops, strict=True)
    ]
    for thread in threads:
        thread.start()
    users = [f"stream-{number}" for number in range(24)]
    try:
        active = wait_until(lambda: [runner for runner in runners if runner.active], what="one active notifier")
        assert len(active) == 1
        first = runners.index(active[0])
        expected = history(pg_ledger, users[:12])
        wait_until(lambda: value(clean_database, "SELECT count(*) FROM notifications") > 0, what="some notices")
        stops[first].set()
        threads[first].join(10)
        assert not threads[first].is_alive()
        expected += history(pg_ledger, users[12:])
        wait_until(lambda: runners[1 - first].active, what="the standby to take over")
        wait_until(
            lambda: value(clean_database, "SELECT count(*) FROM notifications") >= expected,
            what="every crossing to be notified",
        )
        time.sleep(0.5)  # Nothing more should come: the standby runs on, caught up.
    finally:
        for stop in stops:
            stop.set()
        for thread in threads:
            thread.join(10)
    assert all(runner.error is None for runner in runners)
    assert rows(clean_database, COUNTS) == [(expected, expected, expected)]
    per_user = rows(clean_database, "SELECT user_id, count(*) FROM notifications GROUP BY user_id")
    assert dict(per_user) == dict.fromkeys(users, 2)  # type: ignore[arg-type]


DETAILS = SessionDetails(user_id="lia", package_id="starter", credits=100, amount_minor=3_000, currency="BRL")


def test_given_a_purchase_when_stripe_repeats_its_event_then_one_credits_purchased_is_created(
    pg_ledger: Ledger, clean_database: str
) -> None:
    """Given a checkout started for a package, when Stripe sends its completion twice with the same event
    id and once more under another id, then the buyer is granted once and the notifier creates exactly one
    ``credits.purchased``, naming the package, the credits and the session."""
    pg_ledger.start_checkout("cs_lia", DETAILS, now=now())
    completed = SessionCompleted(
        stripe_event_id="evt_1",
        session_id="cs_lia",
        details=DETAILS,
        paid=True,
        payment_intent_id="pi_lia",
        payment_method="card",
    )
    assert not pg_ledger.record_payment(completed, now=now()).replayed
    assert pg_ledger.record_payment(completed, now=now()).replayed
    resent = SessionCompleted(
        stripe_event_id="evt_2", session_id="cs_lia", paid=True, payment_intent_id="pi_lia", payment_method="card"
    )
    pg_ledger.record_payment(resent, now=now())
    runner = notifier(clean_database)
    runner.catch_up()
    runner.catch_up()

    assert pg_ledger.get_balance("lia", now=now()).balance_millicredits == 100_000
    assert rows(clean_database, "SELECT type, user_id, data FROM notifications WHERE type = 'credits.purchased'") == [
        (
            "credits.purchased",
            "lia",
            {
                "user_id": "lia",
                "package_id": "starter",
                "granted_millicredits": 100_000,
                "checkout_session_id": "cs_lia",
            },
        )
    ]
