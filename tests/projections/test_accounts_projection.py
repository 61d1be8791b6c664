"""The accounts projection: exact rows for a scripted history, batching-independent, verified, fail-stop."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import migrations
from ledger.application import Ledger
from ledger.commands import (
    AdjustCredits,
    DebitUsage,
    GrantCredits,
    InitializeAccount,
    ReleaseReservation,
    ReserveCredits,
    RevokeCredits,
    SettleReservation,
)
from projections import verify as verify_module
from projections.accounts import AccountsProjection, ProjectionError
from projections.recovery import Backoff
from projections.runner import ProjectionRunner
from projections.sweeper import HoldSweeper
from projections.verify import verify
from tests.conftest import T0
from tests.ledger.test_properties import run, step


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()  # type: ignore[arg-type]


def script(ledger: Ledger) -> None:
    ledger.grant_credits(
        GrantCredits(user_id="u1", amount_millicredits=500_000, source="purchase", reference="cs_1"),
        idempotency=None,
        now=T0,
    )
    hold = ledger.reserve_credits(
        ReserveCredits(user_id="u1", estimated_tokens=200_000, ttl_seconds=60), idempotency=None, now=T0
    )
    ledger.debit_usage(
        DebitUsage(user_id="u1", tokens=1_000, model="gemini", analysis_id="an-1"), idempotency=None, now=T0
    )
    second = ledger.reserve_credits(ReserveCredits(user_id="u1", estimated_tokens=100_000), idempotency=None, now=T0)
    ledger.settle_reservation(
        SettleReservation(user_id="u1", reservation_id=second.reservation_id, tokens=50_000), idempotency=None, now=T0
    )
    ledger.debit_usage(DebitUsage(user_id="u1", tokens=1_000), idempotency=None, now=T0 + timedelta(hours=1))
    ledger.adjust_credits(
        AdjustCredits(user_id="u1", amount_millicredits=-8_000, reason="fix", admin_id="ops"),
        idempotency=None,
        now=T0 + timedelta(hours=1),
    )
    ledger.revoke_credits(
        RevokeCredits(user_id="u1", amount_millicredits=40_000, reason="refund", reference="ch_1"),
        idempotency=None,
        now=T0 + timedelta(hours=1),
    )
    third = ledger.reserve_credits(
        ReserveCredits(user_id="u1", estimated_tokens=1_000), idempotency=None, now=T0 + timedelta(hours=1)
    )
    ledger.release_reservation(
        ReleaseReservation(user_id="u1", reservation_id=third.reservation_id),
        idempotency=None,
        now=T0 + timedelta(hours=1),
    )
    del hold


def test_a_scripted_history_gives_exact_rows(pg_ledger: Ledger, clean_database: str) -> None:
    script(pg_ledger)
    ProjectionRunner(clean_database, AccountsProjection()).catch_up()
    assert rows(
        clean_database,
        "SELECT user_id, balance_millicredits, reserved_millicredits,"
        " lifetime_purchased_millicredits, lifetime_used_millicredits FROM user_credits",
    ) == [("u1", 400_000, 0, 500_000, 52_000)]
    assert rows(
        clean_database,
        "SELECT kind, amount_millicredits, balance_after_millicredits, description"
        " FROM credit_transactions ORDER BY position",
    ) == [
        ("purchase", 500_000, 500_000, None),
        ("reservation", -200_000, 500_000, None),
        ("debit", -1_000, 499_000, "gemini"),
        ("reservation", -100_000, 499_000, None),
        ("settlement", -50_000, 449_000, None),
        ("release", 200_000, 449_000, "expired"),
        ("debit", -1_000, 448_000, None),
        ("adjustment", -8_000, 440_000, "fix"),
        ("refund", -40_000, 400_000, None),
        ("reservation", -1_000, 400_000, None),
        ("release", 1_000, 400_000, None),
    ]
    assert rows(clean_database, "SELECT count(*) FROM credit_holds") == [(0,)]
    assert rows(
        clean_database,
        "SELECT user_id, granularity, tokens, amount_millicredits, events, analyses FROM usage_rollups"
        " ORDER BY user_id, granularity, bucket_start",
    ) == [
        ("", "day", 52_000, 52_000, 3, 1),
        ("", "hour", 51_000, 51_000, 2, 1),
        ("", "hour", 1_000, 1_000, 1, 0),
        ("u1", "day", 52_000, 52_000, 3, 1),
        ("u1", "hour", 51_000, 51_000, 2, 1),
        ("u1", "hour", 1_000, 1_000, 1, 0),
    ]
    assert rows(clean_database, "SELECT hour, accounts FROM account_activity") == [(T0 + timedelta(hours=1), 1)]
    assert verify(clean_database) == []


def _views(url: str) -> list[list[tuple[Any, ...]]]:
    return [
        rows(url, "SELECT * FROM user_credits ORDER BY user_id"),
        rows(url, "SELECT * FROM credit_holds ORDER BY reservation_id"),
        rows(url, "SELECT * FROM credit_transactions ORDER BY position, seq"),
        rows(url, "SELECT * FROM token_usage_logs ORDER BY position"),
        rows(url, "SELECT * FROM usage_rollups ORDER BY user_id, granularity, bucket_start"),
        rows(url, "SELECT * FROM account_totals"),
        rows(url, "SELECT * FROM account_activity ORDER BY hour"),
    ]


def test_rebuilding_in_other_batch_sizes_gives_the_same_rows(pg_ledger: Ledger, clean_database: str) -> None:
    script(pg_ledger)
    run(pg_ledger, "u2", [("grant", 300_000), ("reserve", 100_000), ("debit", 5), ("settle", 7), ("wait", 999)])
    ProjectionRunner(clean_database, AccountsProjection(), batch_size=1).catch_up()
    incremental = _views(clean_database)
    with psycopg.connect(clean_database, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(AccountsProjection.tables)}")  # type: ignore[arg-type]
        conn.execute("DELETE FROM projection_positions WHERE name = 'accounts'")
    ProjectionRunner(clean_database, AccountsProjection(), batch_size=500).catch_up()
    assert _views(clean_database) == incremental


def analyses_script(ledger: Ledger) -> None:
    """One analysis over three hours and two days, the same id used again by another user, a second one."""
    for user in ("u1", "u2"):
        ledger.grant_credits(
            GrantCredits(user_id=user, amount_millicredits=10**6, source="purchase"), idempotency=None, now=T0
        )
    for user, analysis, hours in (
        ("u1", "an-1", 23),
        ("u1", "an-1", 24),
        ("u1", None, 24),
        ("u2", "an-1", 25),
        ("u2", "an-2", 25),
        ("u1", "an-1", 26),
        ("u2", "an-2", 49),
    ):
        ledger.debit_usage(
            DebitUsage(user_id=user, tokens=10, analysis_id=analysis),
            idempotency=None,
            now=T0 + timedelta(hours=hours),
        )


ROLLUP_ANALYSES = (
    "SELECT user_id, granularity, bucket_start, events, analyses FROM usage_rollups"
    " ORDER BY user_id, granularity, bucket_start"
)


@pytest.mark.parametrize("batch_size", [1, 2, 500])
def test_an_analysis_counts_once_in_the_buckets_of_its_first_usage(
    pg_ledger: Ledger, clean_database: str, batch_size: int
) -> None:
    analyses_script(pg_ledger)
    ProjectionRunner(clean_database, AccountsProjection(), batch_size=batch_size).catch_up()
    hour = [T0 + timedelta(hours=n) for n in range(50)]
    day = [T0 + timedelta(days=n) for n in range(3)]
    assert rows(clean_database, ROLLUP_ANALYSES) == [
        ("", "day", day[0], 1, 1),
        ("", "day", day[1], 5, 1),  # an-1 started the day before; an-2 starts here (with u2).
        ("", "day", day[2], 1, 0),
        ("", "hour", hour[23], 1, 1),
        ("", "hour", hour[24], 2, 0),
        ("", "hour", hour[25], 2, 1),
        ("", "hour", hour[26], 1, 0),
        ("", "hour", hour[49], 1, 0),
        ("u1", "day", day[0], 1, 1),
        ("u1", "day", day[1], 3, 0),
        ("u1", "hour", hour[23], 1, 1),
        ("u1", "hour", hour[24], 2, 0),
        ("u1", "hour", hour[26], 1, 0),
        ("u2", "day", day[1], 2, 1),  # an-1 was u1's first: only an-2 counts for u2.
        ("u2", "day", day[2], 1, 0),
        ("u2", "hour", hour[25], 2, 1),
        ("u2", "hour", hour[49], 1, 0),
    ]
    assert rows(clean_database, "SELECT hour, accounts FROM account_activity ORDER BY hour") == [
        (hour[26], 1),
        (hour[49], 1),
    ]


def test_migration_0009_fills_the_counts_the_projection_keeps(pg_ledger: Ledger, clean_database: str) -> None:
    analyses_script(pg_ledger)
    run(pg_ledger, "u3", [("grant", 300_000), ("reserve", 100_000), ("debit", 5), ("settle", 7), ("wait", 999)])
    ProjectionRunner(clean_database, AccountsProjection(), batch_size=3).catch_up()
    projected = _views(clean_database)
    migration = Path(migrations.__file__).with_name("0009_dashboard_counts.sql").read_text()
    with psycopg.connect(clean_database) as conn:
        conn.execute("UPDATE usage_rollups SET analyses = 0")
        conn.execute("DROP TABLE account_activity")
        conn.execute(migration.encode())
    assert _views(clean_database) == projected


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(histories=st.lists(st.lists(step, min_size=1, max_size=15), min_size=1, max_size=4))
def test_after_random_commands_the_view_equals_the_events(
    pg_ledger: Ledger, clean_database: str, histories: list[list[tuple[str, int]]]
) -> None:
    for n, steps in enumerate(histories):
        run(pg_ledger, f"prop-view-{time.monotonic_ns()}-{n}", steps)
    ProjectionRunner(clean_database, AccountsProjection(), batch_size=7).catch_up()
    assert verify(clean_database) == []


def test_an_event_the_view_contradicts_stops_the_projection(pg_ledger: Ledger, clean_database: str) -> None:
    pg_ledger.grant_credits(
        GrantCredits(user_id="u1", amount_millicredits=500, source="admin"), idempotency=None, now=T0
    )
    runner = ProjectionRunner(clean_database, AccountsProjection())
    runner.catch_up()
    with psycopg.connect(clean_database, autocommit=True) as conn:
        conn.execute("DELETE FROM user_credits")  # The view no longer knows the account.
        before = conn.execute("SELECT position FROM projection_positions WHERE name = 'accounts'").fetchone()
    pg_ledger.debit_usage(DebitUsage(user_id="u1", tokens=1), idempotency=None, now=T0)
    with pytest.raises(ProjectionError):
        runner.catch_up()
    after = rows(clean_database, "SELECT position FROM projection_positions WHERE name = 'accounts'")
    assert after == [before]
    assert verify(clean_database)  # And verify names the difference.


def test_two_workers_one_active_and_the_standby_takes_over(pg_ledger: Ledger, clean_database: str) -> None:
    first, second = (ProjectionRunner(clean_database, AccountsProjection()) for _ in range(2))
    stop_first, stop_second = threading.Event(), threading.Event()
    threads = [
        threading.Thread(target=first.run_forever, args=(stop_first,), daemon=True),
        threading.Thread(target=second.run_forever, args=(stop_second,), daemon=True),
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while not (first.active or second.active) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)  # Long enough for the standby to have tried the lock again.
    assert first.active != second.active
    active_stop, standby = (stop_first, second) if first.active else (stop_second, first)
    active_stop.set()
    pg_ledger.grant_credits(
        GrantCredits(user_id="late", amount_millicredits=7, source="admin"), idempotency=None, now=T0
    )
    deadline = time.monotonic() + 10
    while rows(clean_database, "SELECT count(*) FROM user_credits WHERE user_id = 'late'") != [(1,)]:
        assert time.monotonic() < deadline, "the standby did not take over within 10 s"
        time.sleep(0.1)
    assert standby.active
    stop_first.set()
    stop_second.set()
    for thread in threads:
        thread.join(timeout=5)
    assert verify(clean_database) == []


def _terminate_backends_of(url: str, application_name: str) -> int:
    """Cut, as an administrator or a network would, every connection of that application name."""
    with psycopg.connect(url, autocommit=True) as conn:
        cut = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            (application_name,),
        ).fetchall()
    return len(cut)


def test_a_lost_connection_is_survived_and_the_lock_taken_again(pg_ledger: Ledger, clean_database: str) -> None:
    first, second = (ProjectionRunner(clean_database, AccountsProjection()) for _ in range(2))
    stop = threading.Event()
    threads = [threading.Thread(target=r.run_forever, args=(stop,), daemon=True) for r in (first, second)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 10
        while not (first.active or second.active):
            assert time.monotonic() < deadline, "no runner became active"
            time.sleep(0.05)
        # Given the active runner waiting for the log's notification, when its connection is cut,
        assert _terminate_backends_of(clean_database, "ledger projection accounts") == 2
        pg_ledger.grant_credits(
            GrantCredits(user_id="after-cut", amount_millicredits=7, source="admin"), idempotency=None, now=T0
        )
        # then one of the two applies the events written since, and neither has stopped on an error.
        deadline = time.monotonic() + 15
        while rows(clean_database, "SELECT count(*) FROM user_credits WHERE user_id = 'after-cut'") != [(1,)]:
            assert time.monotonic() < deadline, "no runner caught up after the connection was cut"
            time.sleep(0.05)
        assert (first.error, second.error) == (None, None)
        assert first.reconnects + second.reconnects >= 1
        assert all(thread.is_alive() for thread in threads)
        for _ in range(20):  # Never two active at once, whichever holds the lock now.
            assert not (first.active and second.active)
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
    assert verify(clean_database) == []


@pytest.mark.parametrize("job", ["projection accounts", "hold sweeper"])
def test_a_job_whose_connection_is_lost_is_not_active_while_it_waits_to_reconnect(
    job: str, pg_ledger: Ledger, clean_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock goes with the connection, so the flag must too: a standby may take the lock during the pause."""
    monkeypatch.setattr(Backoff, "next_seconds", lambda self: 5.0)
    worker: ProjectionRunner | HoldSweeper = (
        ProjectionRunner(clean_database, AccountsProjection())
        if job == "projection accounts"
        else HoldSweeper(clean_database, pg_ledger, clock=lambda: T0)
    )
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not worker.active:
            assert time.monotonic() < deadline, "the job never became active"
            time.sleep(0.05)
        # Given the active job, when its connection is cut,
        assert _terminate_backends_of(clean_database, f"ledger {job}") == 1
        # then it reports itself inactive long before its five-second pause to reconnect is over (the
        # sweeper notices at its next sweep, a second at most).
        deadline = time.monotonic() + 2.5
        while worker.active:
            assert time.monotonic() < deadline, "still active after its connection (and lock) was lost"
            time.sleep(0.02)
        assert worker.reconnects == 1
    finally:
        stop.set()
        thread.join(timeout=10)


def test_verify_refuses_an_event_type_it_has_no_rule_for(
    pg_ledger: Ledger, clean_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given an event verify has no rule for, when verify runs, then it says so instead of passing it over."""
    pg_ledger.initialize_account(InitializeAccount(user_id="u1"), idempotency=None, now=T0)
    ProjectionRunner(clean_database, AccountsProjection()).catch_up()
    assert verify(clean_database) == []
    monkeypatch.setattr(verify_module, "NEUTRAL_EVENTS", ())
    [refusal] = verify(clean_database)
    assert "of a type verify does not know: ledger.CreditAccount.Initialized" in refusal
