"""Group commit: commands that arrive together share one transaction, and every caller still gets its own
exact answer; a failing command never fails the others; nothing is acknowledged before its commit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ledger.application import Ledger
from ledger.commands import DebitUsage, GrantCredits, IdempotencyKey
from ledger.errors import IdempotencyConflictError, InsufficientCreditsError
from ledger.persistence import postgres_env
from tests.conftest import T0


@pytest.fixture
def batching(clean_database: str) -> Iterator[Ledger]:
    # A short wait makes commands sent together land in one batch, so the test sees real batches.
    ledger = Ledger(postgres_env(clean_database))
    ledger.seed(now=T0)
    ledger.enable_group_commit(max_batch=64, max_wait_seconds=0.05)
    try:
        yield ledger
    finally:
        ledger.close()


def together(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls at once from as many threads; each result is a value or the error it raised."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait()
        try:
            return call()
        except Exception as error:  # The error is the answer under test.
            return error

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def grant(ledger: Ledger, user: str, amount: int) -> None:
    ledger.grant_credits(
        GrantCredits(user_id=user, amount_millicredits=amount, source="admin"), idempotency=None, now=T0
    )


def debit(ledger: Ledger, user: str, tokens: int, key: str) -> Callable[[], Any]:
    return lambda: ledger.debit_usage(
        DebitUsage(user_id=user, tokens=tokens), idempotency=IdempotencyKey("svc", key), now=T0
    )


def test_a_mixed_batch_answers_each_caller_exactly(batching: Ledger) -> None:
    grant(batching, "rich", 1_000_000)
    grant(batching, "poor", 500)
    calls = [debit(batching, "rich", 1_000, f"rich-{n}") for n in range(2, 20)]
    calls += [debit(batching, "poor", 200, f"poor-{n}") for n in range(5)]  # Only two fit.
    calls += [
        debit(batching, "rich", 1_000, "twice"),
        debit(batching, "rich", 1_000, "twice"),
    ]  # One request, sent twice.
    calls += [debit(batching, "rich", 1_000, "reused"), debit(batching, "rich", 5, "reused")]  # One key, two bodies.
    batches_before = batching._writer.batches  # type: ignore[union-attr]
    answers = together(calls)
    rich, poor, twice, reused = answers[:18], answers[18:23], answers[23:25], answers[25:27]
    assert not [a for a in rich if isinstance(a, Exception)]
    assert sum(isinstance(a, InsufficientCreditsError) for a in poor) == 3
    assert sorted(a.balance_after_millicredits for a in poor if not isinstance(a, Exception)) == [100, 300]
    assert sorted(a.replayed for a in twice) == [False, True]
    assert twice[0].debit_id == twice[1].debit_id
    winner = [a for a in reused if not isinstance(a, Exception)]
    assert len(winner) == 1
    assert sum(isinstance(a, IdempotencyConflictError) for a in reused) == 1
    spent = 18 * 1_000 + 1_000 + winner[0].amount_millicredits
    assert batching.get_balance("rich", now=T0).balance_millicredits == 1_000_000 - spent
    assert batching.get_balance("poor", now=T0).balance_millicredits == 100
    balances = sorted(a.balance_after_millicredits for a in [*rich, twice[0], winner[0]])
    assert len(set(balances)) == len(balances)  # Each caller saw the balance right after its own debit.
    assert batching._writer.batches - batches_before < len(calls)  # type: ignore[union-attr]


def test_two_writers_committing_against_each_other_never_overdraw(clean_database: str) -> None:
    # Two ledgers with their own caches, locks and writers behave toward the database as two processes do.
    first, second = (Ledger(postgres_env(clean_database)) for _ in range(2))
    try:
        for ledger in (first, second):
            ledger.seed(now=T0)
            ledger.enable_group_commit(max_batch=32, max_wait_seconds=0.01)
        grant(first, "hot", 50_000)
        calls = [debit(first if n % 2 else second, "hot", 1_000, f"d-{n}") for n in range(80)]
        answers = together(calls)
        succeeded = [a for a in answers if not isinstance(a, Exception)]
        refused = [a for a in answers if isinstance(a, InsufficientCreditsError)]
        assert (len(succeeded), len(refused)) == (50, 30), [type(a).__name__ for a in answers]
        assert first.get_balance("hot", now=T0).balance_millicredits == 0
    finally:
        first.close()
        second.close()


CRASHING_WRITER = textwrap.dedent(
    """
    import os, sys, threading
    from ledger.application import Ledger
    from ledger.commands import DebitUsage, IdempotencyKey
    from ledger.persistence import postgres_env
    from tests.conftest import T0

    ledger = Ledger(postgres_env(sys.argv[1]))
    ledger.enable_group_commit(max_batch=64, max_wait_seconds=0.2)
    original = ledger.save

    def crash_on_a_batch(*aggregates):
        if len(aggregates) > 2:  # A batch of several commands, decided and about to commit.
            print("crashing", flush=True)
            os._exit(9)
        return original(*aggregates)

    ledger.save = crash_on_a_batch

    def send(n):
        key = IdempotencyKey("svc", f"k{n}")
        receipt = ledger.debit_usage(DebitUsage(user_id="u1", tokens=10), idempotency=key, now=T0)
        print(f"acknowledged {receipt.debit_id}", flush=True)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    """
)


def test_a_crash_between_deciding_and_committing_acknowledges_nothing_and_loses_nothing(
    clean_database: str,
) -> None:
    ledger = Ledger(postgres_env(clean_database))
    ledger.seed(now=T0)
    grant(ledger, "u1", 1_000_000)
    ledger.close()
    with psycopg.connect(clean_database) as conn:
        before = conn.execute("SELECT count(*) FROM ledger_events").fetchone()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_WRITER, clean_database],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert crashed.returncode == 9, crashed.stderr
    assert "crashing" in crashed.stdout
    assert "acknowledged" not in crashed.stdout
    with psycopg.connect(clean_database) as conn:
        assert conn.execute("SELECT count(*) FROM ledger_events").fetchone() == before
    # Nothing was lost either: every request, sent again, is applied now, once.
    again = Ledger(postgres_env(clean_database))
    try:
        for n in range(10):
            receipt = again.debit_usage(
                DebitUsage(user_id="u1", tokens=10), idempotency=IdempotencyKey("svc", f"k{n}"), now=T0
            )
            assert not receipt.replayed
        assert again.get_balance("u1", now=T0).balance_millicredits == 1_000_000 - 100
    finally:
        again.close()


def test_a_refused_command_in_a_batch_writes_nothing_not_even_an_account(batching: Ledger, clean_database: str) -> None:
    grant(batching, "rich", 1_000_000)
    with psycopg.connect(clean_database) as conn:
        before = conn.execute("SELECT count(*) FROM ledger_events").fetchone()
    answers = together(
        [debit(batching, "nobody", 10, "n-1"), debit(batching, "nobody", 10, "n-2"), debit(batching, "rich", 0, "z")]
    )
    assert [type(a).__name__ for a in answers[:2]] == ["InsufficientCreditsError", "InsufficientCreditsError"]
    assert type(answers[2]).__name__ == "InvalidCommandError"  # Zero tokens is no usage.
    with psycopg.connect(clean_database) as conn:
        assert conn.execute("SELECT count(*) FROM ledger_events").fetchone() == before
    assert batching.get_account("nobody") is None
