"""Group commit: commands that arrive together share one transaction, and every caller still gets its own
exact answer; a failing command never fails the others; nothing is acknowledged before its commit."""

from __future__ import annotations

import asyncio
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
from ledger.commands import DebitUsage, GrantCredits, IdempotencyKey, InitializeAccount
from ledger.errors import IdempotencyConflictError, InsufficientCreditsError, StoreUnavailableError
from ledger.ids import account_id
from ledger.persistence import postgres_env
from ledger.recorder import LedgerRecorder
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


# A lost connection: never a 2xx or a refusal for what may not have been written, never a write lost.


def _cut_every_other_connection(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return len(
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        )


def debits_in_log(url: str, user: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM ledger_events WHERE originator_id = %s AND topic LIKE '%%CreditsDebited'",
            (account_id(user),),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_batch_after_every_pooled_connection_died_commits(batching: Ledger, clean_database: str) -> None:
    grant(batching, "restart", 1_000_000)
    # Given every connection of the ledger's pool cut, as a database restart leaves them,
    assert _cut_every_other_connection(clean_database) >= 1
    # when the next commands arrive, then each commits: the dead connections are found and replaced.
    results = together([debit(batching, "restart", 10, f"after-restart-{n}") for n in range(20)])
    assert [type(result).__name__ for result in results] == ["DebitReceipt"] * 20
    assert debits_in_log(clean_database, "restart") == 20


@pytest.fixture
def commit_killer(clean_database: str) -> Iterator[None]:
    """The first transaction to commit the marker of key "keyed-1" loses its connection during COMMIT.

    A deferred trigger runs as the transaction commits; ending its own backend there rolls the
    transaction back while the client, which sent COMMIT, hears only that the connection is gone.
    """
    with psycopg.connect(clean_database, autocommit=True) as conn:
        conn.execute(
            """
            CREATE SEQUENCE doomed_commits;
            CREATE FUNCTION doom_first_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF position('keyed-1' in convert_from(NEW.state, 'UTF8')) > 0
                    AND nextval('doomed_commits') = 1 THEN
                    PERFORM pg_terminate_backend(pg_backend_pid());
                END IF;
                RETURN NULL;
            END $$;
            CREATE CONSTRAINT TRIGGER doom_first_commit AFTER INSERT ON ledger_events
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION doom_first_commit();
            """
        )
    try:
        yield
    finally:
        with psycopg.connect(clean_database, autocommit=True) as conn:
            conn.execute(
                "DROP TRIGGER doom_first_commit ON ledger_events; DROP FUNCTION doom_first_commit();"
                " DROP SEQUENCE doomed_commits"
            )


def test_a_connection_lost_during_commit_is_settled_by_each_commands_marker(
    batching: Ledger, clean_database: str, commit_killer: None
) -> None:
    del commit_killer
    grant(batching, "unsure", 1_000_000)
    # When a batch's connection is lost while it commits,
    results = together(
        [
            debit(batching, "unsure", 10, "keyed-1"),
            debit(batching, "unsure", 10, "keyed-2"),
            lambda: batching.debit_usage(DebitUsage(user_id="unsure", tokens=10), idempotency=None, now=T0),
        ]
    )
    # then a command with a key is decided again through its marker and applied exactly once, and one
    # without a key, which cannot be told from a new request, is answered "unavailable" if it was in that
    # batch: never a receipt for a debit that is not in the log.
    keyed, keyless = results[:2], results[2]
    assert [type(result).__name__ for result in keyed] == ["DebitReceipt", "DebitReceipt"], results
    assert type(keyless).__name__ in {"DebitReceipt", "StoreUnavailableError"}, results
    assert debits_in_log(clean_database, "unsure") == 2 + (type(keyless).__name__ == "DebitReceipt")


class AnswerLostRecorder(LedgerRecorder):
    """Commits, then reports the connection lost before the commit's answer came back: once, for the first
    save that holds the marker of key "keyed-1". No trigger can do this from inside PostgreSQL (a
    transaction that ends its own connection is rolled back), so the fault is injected above the store."""

    lost = threading.Event()

    def insert_events(self, stored_events: Any, **kwargs: Any) -> Any:
        positions = super().insert_events(stored_events, **kwargs)
        if not self.lost.is_set() and any(b"keyed-1" in event.state for event in stored_events):
            self.lost.set()
            raise StoreUnavailableError("the connection was lost after COMMIT was sent", outcome_unknown=True)
        return positions


def test_a_commit_whose_answer_was_lost_answers_keyed_commands_from_their_markers(clean_database: str) -> None:
    topic = f"{AnswerLostRecorder.__module__}:{AnswerLostRecorder.__qualname__}"
    ledger = Ledger({**postgres_env(clean_database), "APPLICATION_RECORDER_TOPIC": topic})
    ledger.seed(now=T0)
    ledger.enable_group_commit(max_batch=64, max_wait_seconds=0.05)
    AnswerLostRecorder.lost.clear()
    try:
        grant(ledger, "committed", 1_000_000)
        # When a batch commits but its answer is lost,
        results = together(
            [
                debit(ledger, "committed", 10, "keyed-1"),
                debit(ledger, "committed", 10, "keyed-2"),
                lambda: ledger.debit_usage(DebitUsage(user_id="committed", tokens=10), idempotency=None, now=T0),
            ]
        )
    finally:
        ledger.close()
    assert AnswerLostRecorder.lost.is_set()
    # then the keyed commands get their first answers from their markers (nothing is applied twice), and a
    # command without a key that was in that batch hears "unavailable": never a second debit.
    keyed, keyless = results[:2], results[2]
    assert [type(result).__name__ for result in keyed] == ["DebitReceipt", "DebitReceipt"], results
    assert type(keyless).__name__ in {"DebitReceipt", "StoreUnavailableError"}, results
    assert debits_in_log(clean_database, "committed") == 3


def test_a_key_reused_with_another_body_fails_only_its_own_command(batching: Ledger, clean_database: str) -> None:
    grant(batching, "reuse", 1_000_000)
    debit(batching, "reuse", 10, "taken")()
    # Given a batch holding the same key with another body (which the balance would refuse) and two other
    # debits, then that caller hears of the conflict and the others are applied.
    results = together(
        [
            lambda: batching.debit_usage(
                DebitUsage(user_id="reuse", tokens=10**12), idempotency=IdempotencyKey("svc", "taken"), now=T0
            ),
            debit(batching, "reuse", 10, "other-1"),
            debit(batching, "reuse", 10, "other-2"),
        ]
    )
    assert isinstance(results[0], IdempotencyConflictError), results
    assert [type(result).__name__ for result in results[1:]] == ["DebitReceipt", "DebitReceipt"], results
    assert debits_in_log(clean_database, "reuse") == 3


async def test_a_caller_on_an_event_loop_hears_through_its_own_future_and_one_that_gave_up_is_dropped(
    batching: Ledger, clean_database: str
) -> None:
    grant(batching, "looped", 1_000_000)
    # A caller on an event loop is answered through a future of its own loop
    receipt = await batching.submit_async(DebitUsage(user_id="looped", tokens=10), idempotency=None, now=T0)
    assert receipt.position > 0
    assert debits_in_log(clean_database, "looped") == 1
    # Given the writer held up in a batch (its append waits for the event table's lock)
    with psycopg.connect(clean_database) as holder, holder.transaction():
        holder.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")
        first = batching.submit_async(DebitUsage(user_id="looped", tokens=10), idempotency=None, now=T0)
        await asyncio.sleep(0.3)  # The writer has taken it and waits for the lock.
        # When a second caller gives up before its batch begins
        second = batching.submit_async(DebitUsage(user_id="looped", tokens=10), idempotency=None, now=T0)
        second.cancel()
    # Then the first is answered once the lock is released, and the second's debit is never written
    assert (await asyncio.wait_for(first, 10)).position > receipt.position
    await asyncio.sleep(0.3)
    assert second.cancelled()
    assert debits_in_log(clean_database, "looped") == 2


def test_a_writer_that_trusts_its_cache_still_decides_on_what_another_process_wrote(clean_database: str) -> None:
    # Given two processes' ledgers, the first holding the account in its cache
    first = Ledger(postgres_env(clean_database))
    first.seed(now=T0)
    first.enable_group_commit(max_batch=64)
    second = Ledger(postgres_env(clean_database))
    try:
        grant(first, "shared", 100_000)
        debit(first, "shared", 10, "warm")()
        first.initialize_account(InitializeAccount(user_id="shared"), idempotency=None, now=T0)
        # When the other process spends, an answer that only reads the account (setting up one already set
        # up) tells the log's balance, not the cached one
        debit(second, "shared", 990, "spent-elsewhere")()
        again = first.initialize_account(InitializeAccount(user_id="shared"), idempotency=None, now=T0)
        assert (again.created, again.balance_after_millicredits) == (False, 99_000)
        # When the other process grants credits, then a debit needs them: it is not refused on the cached copy
        grant(second, "shared", 200_000)
        assert debit(first, "shared", 150_000, "needs-the-grant")().amount_millicredits == 150_000
        # And when the other process spends nearly all, a debit the cached copy would allow is refused: the
        # stale copy's save fails on its version, and the debit is decided again on the log's state
        debit(second, "shared", 140_000, "spent-nearly-all")()
        with pytest.raises(InsufficientCreditsError):
            debit(first, "shared", 100_000, "too-much-now")()
        assert first.get_balance("shared", now=T0).balance_millicredits == 9_000
    finally:
        first.close()
        second.close()
