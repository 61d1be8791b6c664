"""Guarantees that only a real database can show: concurrency, exactly-once, restarts, long histories."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import msgspec
import pytest

from ledger.account import CreditAccount
from ledger.application import Ledger
from ledger.commands import DebitUsage, GrantCredits, IdempotencyKey, ReserveCredits
from ledger.errors import InsufficientCreditsError
from ledger.receipts import DebitReceipt
from tests.conftest import T0, postgres_ledger


def test_32_threads_never_overdraw_one_account(clean_database: str) -> None:
    # Two application objects stand for two processes: they meet only in PostgreSQL.
    apps = [postgres_ledger(clean_database, pool_size=8, max_overflow=8) for _ in range(2)]
    apps[0].grant_credits(
        GrantCredits(user_id="hot", amount_millicredits=10_000, source="admin"), idempotency=None, now=T0
    )
    costs = [100 * (i % 7 + 1) for i in range(32)]  # 12,800 in all: only some fit in 10,000.
    barrier = threading.Barrier(32)

    def attempt(i: int) -> int | str:
        barrier.wait()
        try:
            receipt = apps[i % 2].debit_usage(
                DebitUsage(user_id="hot", tokens=costs[i]), idempotency=IdempotencyKey("svc", f"d{i}"), now=T0
            )
        except InsufficientCreditsError:
            return "insufficient-credits"
        return receipt.amount_millicredits

    with ThreadPoolExecutor(32) as pool:
        outcomes = list(pool.map(attempt, range(32)))
    accepted = [o for o in outcomes if isinstance(o, int)]
    refused = [i for i, o in enumerate(outcomes) if not isinstance(o, int)]
    balance = postgres_ledger(clean_database).get_balance("hot", now=T0).balance_millicredits
    assert balance >= 0
    assert sum(accepted) == 10_000 - balance
    assert refused
    assert all(outcomes[i] == "insufficient-credits" for i in refused)
    # The balance only falls, so each refused debit cost more than what was left at the end.
    assert all(costs[i] > balance for i in refused)
    for app in apps:
        app.close()


def test_20_concurrent_submissions_of_one_key_apply_once(clean_database: str) -> None:
    apps = [postgres_ledger(clean_database, pool_size=6, max_overflow=6) for _ in range(2)]
    apps[0].grant_credits(
        GrantCredits(user_id="u1", amount_millicredits=1_000_000, source="admin"), idempotency=None, now=T0
    )
    barrier = threading.Barrier(20)

    def submit(i: int) -> DebitReceipt:
        barrier.wait()
        return apps[i % 2].debit_usage(
            DebitUsage(user_id="u1", tokens=1_234), idempotency=IdempotencyKey("svc", "same"), now=T0
        )

    with ThreadPoolExecutor(20) as pool:
        receipts = list(pool.map(submit, range(20)))
    answers = {msgspec.json.encode(msgspec.structs.replace(r, position=0, replayed=False)) for r in receipts}
    assert len(answers) == 1
    assert sum(not r.replayed for r in receipts) == 1
    assert postgres_ledger(clean_database).get_balance("u1", now=T0).balance_millicredits == 1_000_000 - 1_234
    for app in apps:
        app.close()


def test_a_restarted_application_sees_every_balance_exactly(clean_database: str) -> None:
    first = postgres_ledger(clean_database)
    expected = {}
    for n in range(20):
        user = f"user-{n}"
        first.grant_credits(
            GrantCredits(user_id=user, amount_millicredits=200_000 + n, source="admin"),
            idempotency=None,
            now=T0,
        )
        first.debit_usage(DebitUsage(user_id=user, tokens=n + 1), idempotency=None, now=T0)
        if n % 3 == 0:
            first.reserve_credits(ReserveCredits(user_id=user, estimated_tokens=1_000), idempotency=None, now=T0)
        expected[user] = first.get_balance(user, now=T0)
    first.close()
    second = postgres_ledger(clean_database)
    assert {user: second.get_balance(user, now=T0) for user in expected} == expected
    second.close()


def test_a_100000_event_account_loads_about_as_fast_as_a_fresh_one(clean_database: str) -> None:
    """Snapshots bound the replay: a cold load reads one snapshot and a short tail, not 100,000 events."""
    app = postgres_ledger(clean_database)
    app.grant_credits(
        GrantCredits(user_id="long", amount_millicredits=10**12, source="admin"), idempotency=None, now=T0
    )
    app.grant_credits(
        GrantCredits(user_id="fresh", amount_millicredits=10**6, source="admin"), idempotency=None, now=T0
    )
    account = app.get_account("long")
    assert account is not None
    settings = app.billing_settings()
    for chunk in range(100):  # Written 1,000 events per transaction to keep the test short.
        for n in range(1_000):
            account.debit(
                debit_id=f"{chunk}-{n}",
                tokens=1,
                input_tokens=None,
                output_tokens=None,
                model=None,
                agent_id=None,
                analysis_id=None,
                occurred_at=None,
                settings=settings,
                now=T0 + timedelta(seconds=chunk * 1_000 + n),
            )
        app.save(account)
    assert account.version > 100_000
    app.close()

    # Count the events a cold load reads: the cost of a load is the number of events it replays.
    loader = postgres_ledger(clean_database)
    read: list[int] = []
    select_events = loader.recorder.select_events

    def counting_select_events(*args: object, **kwargs: object) -> list[object]:
        rows = list(select_events(*args, **kwargs))
        read.append(len(rows))
        return rows

    loader.recorder.select_events = counting_select_events
    loaded = loader.get_account("long")
    assert loaded is not None
    assert loaded.balance_millicredits == account.balance_millicredits
    assert sum(read) <= Ledger.snapshotting_intervals[CreditAccount], read
    loader.close()


@pytest.mark.parametrize("workers", [8])
def test_concurrent_reservations_never_hold_more_than_the_balance(clean_database: str, workers: int) -> None:
    app = postgres_ledger(clean_database, pool_size=workers, max_overflow=0)
    app.grant_credits(GrantCredits(user_id="u1", amount_millicredits=500_000, source="admin"), idempotency=None, now=T0)

    def reserve(i: int) -> bool:
        try:
            app.reserve_credits(
                ReserveCredits(user_id="u1", estimated_tokens=100_000),
                idempotency=IdempotencyKey("svc", f"r{i}"),
                now=T0,
            )
        except InsufficientCreditsError:
            return False
        return True

    with ThreadPoolExecutor(workers) as pool:
        granted = sum(pool.map(reserve, range(16)))
    assert granted == 5
    assert app.get_balance("u1", now=T0).available_millicredits == 0
    app.close()


def test_applications_do_not_share_state_through_the_cache(clean_database: str) -> None:
    """A second process's write is seen by the first one's next command (fast-forward from the database)."""
    a, b = postgres_ledger(clean_database), postgres_ledger(clean_database)
    a.grant_credits(GrantCredits(user_id="u1", amount_millicredits=1_000, source="admin"), idempotency=None, now=T0)
    assert a.get_balance("u1", now=T0).balance_millicredits == 1_000
    b.debit_usage(DebitUsage(user_id="u1", tokens=400), idempotency=None, now=T0)
    assert a.get_balance("u1", now=T0).balance_millicredits == 600
    with pytest.raises(InsufficientCreditsError):
        a.debit_usage(DebitUsage(user_id="u1", tokens=601), idempotency=None, now=T0)
    a.close()
    b.close()
