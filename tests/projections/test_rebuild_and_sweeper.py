"""Rebuilding a projection gives row for row what following the log gave; the sweeper records expiries;
a worker killed in the middle of a catch-up resumes without applying anything twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg

from ledger.application import Ledger
from ledger.commands import AdjustCredits, DebitUsage, GrantCredits, ReserveCredits
from ledger.payments import DisputeChanged, SessionCompleted, SessionDetails
from projections.accounts import AccountsProjection
from projections.catalogue import CatalogueProjection
from projections.payments import PaymentsProjection
from projections.rebuild import rebuild
from projections.runner import ProjectionRunner
from projections.sweeper import HoldSweeper
from projections.verify import verify
from tests.conftest import T0
from tests.ledger.test_properties import run
from tests.projections.history import write_history
from tests.projections.test_accounts_projection import rows, script

VIEWS = {
    "user_credits": "user_id",
    "credit_holds": "reservation_id",
    "credit_transactions": "position, seq",
    "token_usage_logs": "position",
    "usage_rollups": "user_id, granularity, bucket_start",
    "account_totals": "name",
    "account_activity": "hour",
    "billing_config": "key",
    "credit_packages": "id",
    "stripe_payments": "checkout_session_id",
    "credit_lots": "user_id, lot_id",
}


def views(url: str) -> dict[str, list[tuple[Any, ...]]]:
    return {table: rows(url, f"SELECT * FROM {table} ORDER BY {order}") for table, order in VIEWS.items()}


def pay(ledger: Ledger) -> None:
    details = SessionDetails(user_id="buyer", package_id="starter", credits=100, amount_minor=3_000, currency="BRL")
    ledger.start_checkout("cs_1", details, now=T0)
    ledger.record_payment(SessionCompleted(stripe_event_id="e1", session_id="cs_1", paid=True), now=T0)
    ledger.record_payment(
        DisputeChanged(stripe_event_id="e2", session_id="cs_1", dispute_id="dp", amount_minor=3_000, status="open"),
        now=T0,
    )


def lots(ledger: Ledger) -> None:
    """Three lots, one of which expires before a debit that records its expiry and takes from the others."""
    for amount, kind, expires_at in (
        (1_000, "promo", T0 + timedelta(days=1)),
        (2_000, "paid", None),
        (3_000, None, None),
    ):
        ledger.adjust_credits(
            AdjustCredits(
                user_id="lots",
                amount_millicredits=amount,
                reason="lots",
                admin_id="a",
                kind=kind,
                expires_at=expires_at,
            ),
            idempotency=None,
            now=T0,
        )
    ledger.debit_usage(DebitUsage(user_id="lots", tokens=2_500), idempotency=None, now=T0 + timedelta(days=2))


def indexes(url: str) -> list[tuple[Any, ...]]:
    return rows(
        url,
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2",
    )


def test_a_rebuild_gives_row_for_row_the_tables_the_log_gave(pg_ledger: Ledger, clean_database: str) -> None:
    script(pg_ledger)
    run(pg_ledger, "u2", [("grant", 300_000), ("reserve", 100_000), ("debit", 5), ("settle", 7), ("wait", 999)])
    write_history(pg_ledger, users=30, events_per_user=40)
    pay(pg_ledger)
    lots(pg_ledger)
    for projection in (AccountsProjection(), CatalogueProjection(), PaymentsProjection()):
        ProjectionRunner(clean_database, projection, batch_size=13).catch_up()
    assert rows(clean_database, "SELECT count(*) FROM credit_lots WHERE user_id = 'lots'") == [(2,)]
    incremental, index_shapes = views(clean_database), indexes(clean_database)
    seen: list[tuple[int, int]] = []
    for projection in (AccountsProjection(), CatalogueProjection(), PaymentsProjection()):
        result = rebuild(clean_database, projection, progress=lambda done, total: seen.append((done, total)))
        assert result.events > 0
    assert views(clean_database) == incremental
    assert indexes(clean_database) == index_shapes
    assert seen[-1][0] == seen[-1][1]
    assert rows(clean_database, "SELECT count(*) FROM pg_namespace WHERE nspname = 'ledger_rebuild'") == [(0,)]
    # The live runner carries on from the rebuilt position.
    pg_ledger.grant_credits(
        GrantCredits(user_id="after", amount_millicredits=5, source="admin"), idempotency=None, now=T0
    )
    ProjectionRunner(clean_database, AccountsProjection()).catch_up()
    assert rows(clean_database, "SELECT balance_millicredits FROM user_credits WHERE user_id = 'after'") == [(5,)]
    assert verify(clean_database) == []


def test_a_rebuild_while_the_live_runner_follows_the_log(pg_ledger: Ledger, clean_database: str) -> None:
    write_history(pg_ledger, users=40, events_per_user=50)
    live = ProjectionRunner(clean_database, AccountsProjection(), batch_size=100)
    stop = threading.Event()
    follower = threading.Thread(target=live.run_forever, args=(stop,), daemon=True)
    follower.start()
    writing = threading.Thread(
        target=lambda: [
            pg_ledger.grant_credits(
                GrantCredits(user_id=f"during-{n}", amount_millicredits=n + 1, source="admin"),
                idempotency=None,
                now=T0,
            )
            for n in range(50)
        ]
    )
    writing.start()
    rebuild(clean_database, AccountsProjection(), batch_size=300)
    writing.join()
    deadline = time.monotonic() + 20
    while rows(clean_database, "SELECT count(*) FROM user_credits WHERE user_id LIKE 'during-%'") != [(50,)]:
        assert time.monotonic() < deadline, "the live runner did not carry on after the switch"
        time.sleep(0.05)
    stop.set()
    follower.join(timeout=5)
    assert live.error is None
    assert verify(clean_database) == []


def test_the_sweeper_records_the_expiry_of_holds_past_their_time(pg_ledger: Ledger, clean_database: str) -> None:
    pg_ledger.grant_credits(
        GrantCredits(user_id="u1", amount_millicredits=500_000, source="purchase"), idempotency=None, now=T0
    )
    short = pg_ledger.reserve_credits(
        ReserveCredits(user_id="u1", estimated_tokens=100_000, ttl_seconds=60), idempotency=None, now=T0
    )
    pg_ledger.reserve_credits(
        ReserveCredits(user_id="u1", estimated_tokens=100_000, ttl_seconds=600), idempotency=None, now=T0
    )
    accounts = ProjectionRunner(clean_database, AccountsProjection())
    accounts.catch_up()
    sweeper = HoldSweeper(clean_database, pg_ledger, clock=lambda: T0 + timedelta(seconds=61))
    with psycopg.connect(clean_database, autocommit=True) as conn:
        assert sweeper.sweep(conn) == 1
        accounts.catch_up()
        assert sweeper.sweep(conn) == 0  # Already recorded: nothing more to do.
    assert rows(clean_database, "SELECT reservation_id FROM credit_holds") != [(short.reservation_id,)]
    assert rows(clean_database, "SELECT count(*) FROM credit_holds") == [(1,)]
    assert rows(
        clean_database, "SELECT kind, amount_millicredits, description FROM credit_transactions ORDER BY position"
    )[-1] == ("release", 100_000, "expired")
    assert verify(clean_database) == []


def _project_process(url: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "STRIPE_"))}
    env.update(
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
        LEDGER_DATABASE_URL=url,
        LEDGER_JWT_SECRET="s" * 40,
        LEDGER_PROJECTION_BATCH_SIZE="200",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "project"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_worker_killed_mid_catch_up_resumes_and_applies_nothing_twice(pg_ledger: Ledger, clean_database: str) -> None:
    events = write_history(pg_ledger, users=200, events_per_user=100)
    head = rows(clean_database, "SELECT max(notification_id) FROM ledger_events")[0][0]
    worker = _project_process(clean_database)
    deadline = time.monotonic() + 60
    while True:
        position = rows(
            clean_database, "SELECT coalesce(max(position), 0) FROM projection_positions WHERE name = 'accounts'"
        )[0][0]
        if position > 0:
            break
        assert time.monotonic() < deadline, "the worker never started"
        time.sleep(0.005)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    assert 0 < position < head, "the kill did not land in the middle of the catch-up"
    restarted = _project_process(clean_database)
    try:
        deadline = time.monotonic() + 60
        # The restarted worker's sweeper also records the expiry of the history's old holds, so the log
        # grows past the head seen before.
        while rows(clean_database, "SELECT position FROM projection_positions WHERE name = 'accounts'")[0][0] < head:
            assert restarted.poll() is None, restarted.communicate()[0]
            assert time.monotonic() < deadline, "the restarted worker did not catch up"
            time.sleep(0.05)
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(timeout=10)
    assert verify(clean_database) == []
    history_rows = rows(clean_database, f"SELECT count(*) FROM credit_transactions WHERE position <= {head}")[0][0]
    opened = 200
    assert history_rows == events - opened  # One row per movement; an account's opening is no movement.


def test_ledger_rebuild_prints_its_rate_and_refuses_an_unknown_name(pg_ledger: Ledger, clean_database: str) -> None:
    script(pg_ledger)
    ProjectionRunner(clean_database, AccountsProjection()).catch_up()
    before = views(clean_database)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "STRIPE_"))}
    env.update(
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
        LEDGER_DATABASE_URL=clean_database,
        LEDGER_JWT_SECRET="s" * 40,
    )
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "rebuild", "accounts"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "events/s" in done.stdout
    assert "100%" in done.stderr
    assert views(clean_database)["user_credits"] == before["user_credits"]
    unknown = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "rebuild", "nope"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert unknown.returncode == 2
    assert "accounts" in unknown.stderr


def test_the_sweeper_records_the_expiry_of_lots_past_their_time(pg_ledger: Ledger, clean_database: str) -> None:
    for amount, expires_at in ((1_000, T0 + timedelta(hours=1)), (2_000, T0 + timedelta(days=1)), (4_000, None)):
        pg_ledger.adjust_credits(
            AdjustCredits(user_id="u1", amount_millicredits=amount, reason="r", admin_id="a", expires_at=expires_at),
            idempotency=None,
            now=T0,
        )
    accounts = ProjectionRunner(clean_database, AccountsProjection())
    accounts.catch_up()
    sweeper = HoldSweeper(clean_database, pg_ledger, clock=lambda: T0 + timedelta(hours=2))
    with psycopg.connect(clean_database, autocommit=True) as conn:
        assert sweeper.sweep(conn) == 1
        accounts.catch_up()
        assert sweeper.sweep(conn) == 0  # Already recorded; the other lot's time has not come.
    assert rows(clean_database, "SELECT remaining_millicredits FROM credit_lots ORDER BY position") == [
        (2_000,),
        (4_000,),
    ]
    assert rows(clean_database, "SELECT balance_millicredits FROM user_credits") == [(6_000,)]
    assert rows(
        clean_database, "SELECT kind, amount_millicredits, occurred_at FROM credit_transactions ORDER BY position"
    )[-1] == ("expiry", -1_000, T0 + timedelta(hours=1))
    # The expired credits are in the day's figures, not in its usage.
    assert rows(
        clean_database,
        "SELECT tokens, events, expired_millicredits FROM usage_rollups WHERE user_id = 'u1' AND granularity = 'day'",
    ) == [(0, 0, 1_000)]
    assert verify(clean_database) == []
