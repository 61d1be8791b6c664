"""Group commit on the caller's event loop (``ledger.loop_writer``): a batch whose accounts are in memory is
decided and appended on the loop, the next one sent while it is appended; everything else (an account to
read, a refusal, another process's write, a lost connection) goes to the writer thread, and every caller
still gets its own exact answer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from ledger import loop_writer
from ledger.appender import APPLICATION_NAME
from ledger.application import Ledger
from ledger.commands import DebitUsage, GrantCredits, IdempotencyKey
from ledger.errors import InsufficientCreditsError, StoreUnavailableError
from ledger.persistence import postgres_env
from tests.conftest import T0
from tests.ledger.test_group_commit import debits_in_log

pytestmark = pytest.mark.postgres


@pytest.fixture
def ledger(clean_database: str) -> Iterator[Ledger]:
    ledger = Ledger(postgres_env(clean_database))
    ledger.seed(now=T0)
    ledger.enable_group_commit(max_batch=64)
    try:
        yield ledger
    finally:
        ledger.close()


def grant(ledger: Ledger, user: str, amount: int) -> None:
    ledger.grant_credits(
        GrantCredits(user_id=user, amount_millicredits=amount, source="admin"), idempotency=None, now=T0
    )


def debit(ledger: Ledger, user: str, tokens: int, key: str | None) -> asyncio.Future[Any]:
    idempotency = IdempotencyKey("svc", key) if key is not None else None
    return ledger.submit_async(DebitUsage(user_id=user, tokens=tokens), idempotency=idempotency, now=T0)


async def answers(*futures: asyncio.Future[Any]) -> list[Any]:
    return list(await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 15))


async def idle(ledger: Ledger) -> loop_writer.LoopWriter:
    """This loop's writer, once the drain of its last batches has ended: the next command finds it idle."""
    writer = ledger._loop_writers[asyncio.get_running_loop()]
    assert writer is not None
    for _ in range(1_000):
        if writer._draining is None:
            return writer
        await asyncio.sleep(0)
    raise AssertionError("the loop's writer never went idle")


async def in_memory_and_idle(ledger: Ledger, *users: str) -> loop_writer.LoopWriter:
    """Accounts funded and debited once (so in memory), and this loop's writer idle again."""
    for user in users:
        grant(ledger, user, 1_000_000)
    await answers(*(debit(ledger, user, 10, f"warm-{user}") for user in users))
    return await idle(ledger)


def thread_commands(ledger: Ledger) -> int:
    """Commands the writer thread has decided and saved."""
    return ledger._writer.commands  # type: ignore[union-attr]


def loop_commands(ledger: Ledger) -> int:
    """Commands event loops have decided and saved themselves."""
    return sum(writer.commands for writer in ledger._loop_writers.values() if writer is not None)


async def test_debits_on_accounts_in_memory_are_committed_on_the_loop_not_the_writer_thread(
    ledger: Ledger, clean_database: str
) -> None:
    # Given two accounts in memory (their grants went through the writer thread)
    grant(ledger, "a", 1_000_000)
    grant(ledger, "b", 1_000_000)
    before = thread_commands(ledger)
    # When debits on both arrive together from an event loop
    results = await answers(*(debit(ledger, user, 100, f"{user}-{n}") for n in range(10) for user in ("a", "b")))
    # Then each caller has its own receipt, and the loop committed them all, the writer thread none
    assert [type(result).__name__ for result in results] == ["DebitReceipt"] * 20, results
    assert len({result.balance_after_millicredits for result in results if result.user_id == "a"}) == 10
    assert (thread_commands(ledger), loop_commands(ledger)) == (before, 20)
    assert debits_in_log(clean_database, "a") == debits_in_log(clean_database, "b") == 10
    assert ledger.get_balance("a", now=T0).balance_millicredits == 1_000_000 - 10 * 100
    # And the same keys again are the first answers, replayed, with nothing written
    again = await answers(debit(ledger, "a", 100, "a-3"))
    assert again[0].replayed and again[0].balance_after_millicredits == results[6].balance_after_millicredits
    assert debits_in_log(clean_database, "a") == 10


async def test_an_account_not_in_memory_is_read_and_decided_by_the_writer_thread(
    ledger: Ledger, clean_database: str
) -> None:
    # Given an account another process funded, which this one has never read
    other = Ledger(postgres_env(clean_database))
    try:
        grant(other, "elsewhere", 5_000)
    finally:
        other.close()
    before = thread_commands(ledger)
    # When it is debited from an event loop, then the writer thread reads it and answers
    (receipt,) = await answers(debit(ledger, "elsewhere", 2_000, "first"))
    assert receipt.balance_after_millicredits == 3_000
    assert thread_commands(ledger) == before + 1
    # And once in memory, its next debit is the loop's
    (receipt,) = await answers(debit(ledger, "elsewhere", 1_000, "second"))
    assert receipt.balance_after_millicredits == 2_000
    assert thread_commands(ledger) == before + 1


async def test_a_refusal_is_decided_again_on_the_log_and_writes_nothing(ledger: Ledger, clean_database: str) -> None:
    grant(ledger, "poor", 500)
    # When two debits that fit and one that does not arrive together
    results = await answers(debit(ledger, "poor", 200, "fits-1"), debit(ledger, "poor", 2_000, "too-much"),
                            debit(ledger, "poor", 200, "fits-2"))  # fmt: skip
    # Then the one that does not fit is refused, alone, and the others are applied
    assert [type(result).__name__ for result in results] == [
        "DebitReceipt",
        "InsufficientCreditsError",
        "DebitReceipt",
    ], results
    assert debits_in_log(clean_database, "poor") == 2
    assert ledger.get_balance("poor", now=T0).balance_millicredits == 100


async def test_another_processs_spending_is_seen_before_a_debit_from_memory_is_applied(
    ledger: Ledger, clean_database: str
) -> None:
    # Given the account in this process's memory
    grant(ledger, "shared", 100_000)
    await answers(debit(ledger, "shared", 10, "warm"))
    # When another process spends nearly all of it
    other = Ledger(postgres_env(clean_database))
    try:
        other.debit_usage(
            DebitUsage(user_id="shared", tokens=99_000), idempotency=IdempotencyKey("svc", "elsewhere"), now=T0
        )
    finally:
        other.close()
    # Then a debit the copy in memory would allow is refused: its append collides on the account's version,
    # and the writer thread decides it again on the log's state
    (refused,) = await answers(debit(ledger, "shared", 10_000, "too-much-now"))
    assert isinstance(refused, InsufficientCreditsError), refused
    assert ledger.get_balance("shared", now=T0).balance_millicredits == 990
    assert debits_in_log(clean_database, "shared") == 2


async def appenders_waiting_for_the_lock(url: str, count: int = 1) -> list[int]:
    """The backends of the loop's connections, once ``count`` of their appends wait for the event table's lock."""
    for _ in range(200):
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT DISTINCT a.pid FROM pg_stat_activity AS a JOIN pg_locks AS l ON l.pid = a.pid"
                " WHERE a.application_name = %s AND NOT l.granted",
                (APPLICATION_NAME,),
            ).fetchall()
        if len(rows) >= count:
            return [int(pid) for (pid,) in rows]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{count} of the loop's appends never waited for the lock together")


async def test_a_connection_lost_while_appending_is_settled_by_each_commands_marker(
    ledger: Ledger, clean_database: str
) -> None:
    await in_memory_and_idle(ledger, "unsure", "ahead")
    # Given the loop's appends waiting for the event table's lock: a debit of another account, which the idle
    # loop sends as it is submitted, and the next batch, a keyed and a keyless debit of one account
    with psycopg.connect(clean_database) as holder, holder.transaction():
        holder.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")
        ahead = debit(ledger, "ahead", 10, "ahead")
        keyed = debit(ledger, "unsure", 10, "keyed")
        keyless = debit(ledger, "unsure", 10, None)
        pids = await appenders_waiting_for_the_lock(clean_database, count=2)
        # When their connections are cut while the statements are out
        with psycopg.connect(clean_database, autocommit=True) as admin:
            for pid in pids:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    # Then the keyed debits are decided again through their markers and applied once; the keyless one, which
    # cannot be told from a new request, hears that the outcome is unknown: never a receipt for a debit not in
    # the log
    results = await answers(keyed, keyless, ahead)
    assert type(results[0]).__name__ == "DebitReceipt", results
    assert isinstance(results[1], StoreUnavailableError) and results[1].outcome_unknown, results
    assert type(results[2]).__name__ == "DebitReceipt", results
    assert debits_in_log(clean_database, "unsure") == 2
    assert debits_in_log(clean_database, "ahead") == 2
    # And the next debit reconnects and commits
    (receipt,) = await answers(debit(ledger, "unsure", 10, "after"))
    assert receipt.balance_after_millicredits == 1_000_000 - 3 * 10
    assert debits_in_log(clean_database, "unsure") == 3


async def test_commands_past_the_waiting_limit_hear_at_once_that_the_ledger_is_busy(
    ledger: Ledger, clean_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop_writer, "MAX_WAITING", 2)
    grant(ledger, "queued", 1_000_000)
    await answers(debit(ledger, "queued", 10, "warm"))
    # Given one batch appending (held up by the table lock) and two commands waiting for the next
    with psycopg.connect(clean_database) as holder, holder.transaction():
        holder.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")
        first = debit(ledger, "queued", 10, "first")
        await appenders_waiting_for_the_lock(clean_database)
        waiting = [debit(ledger, "queued", 10, f"waiting-{n}") for n in range(2)]
        # When one more arrives, then it is refused at once, with nothing written
        (busy,) = await answers(debit(ledger, "queued", 10, "one-too-many"))
        assert isinstance(busy, StoreUnavailableError) and not busy.outcome_unknown, busy
    # And the others are applied once the lock is free
    results = await answers(first, *waiting)
    assert [type(result).__name__ for result in results] == ["DebitReceipt"] * 3, results
    assert debits_in_log(clean_database, "queued") == 4


async def test_a_batch_on_other_accounts_is_sent_while_the_one_before_it_is_appended(
    ledger: Ledger, clean_database: str
) -> None:
    grant(ledger, "first", 1_000_000)
    grant(ledger, "second", 1_000_000)
    await answers(debit(ledger, "first", 10, "warm-1"), debit(ledger, "second", 10, "warm-2"))
    before = thread_commands(ledger)
    with psycopg.connect(clean_database) as holder, holder.transaction():
        holder.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")
        # Given a batch on "first" being appended (held up by the table lock)
        first = debit(ledger, "first", 10, "first-1")
        await appenders_waiting_for_the_lock(clean_database, 1)
        # When debits on "second" and one more on "first" arrive
        second = [debit(ledger, "second", 10, f"second-{n}") for n in range(3)]
        first_again = debit(ledger, "first", 10, "first-2")
        # Then the debits on "second" are decided and sent at once, on the loop's other connection
        await appenders_waiting_for_the_lock(clean_database, 2)
        assert not any(future.done() for future in (first, *second, first_again))
    # And once the lock is free, every debit is applied once, by the loop, and the one on "first" that
    # waited for the batch before it comes after it in the log
    results = await answers(first, *second, first_again)
    assert [type(result).__name__ for result in results] == ["DebitReceipt"] * 5, results
    assert thread_commands(ledger) == before
    assert [result.balance_after_millicredits for result in (results[0], results[4])] == [999_980, 999_970]
    assert results[4].position > results[0].position
    assert debits_in_log(clean_database, "first") == 3
    assert debits_in_log(clean_database, "second") == 4


async def warm_and_cold(ledger: Ledger, url: str) -> None:
    """Accounts "warm", in this process's memory, and "cold", funded by another process and never read here,
    each granted 1,000 credits ("warm" then debited 10 tokens)."""
    grant(ledger, "warm", 1_000_000)
    await answers(debit(ledger, "warm", 10, "warm-0"))
    other = Ledger(postgres_env(url))
    try:
        grant(other, "cold", 1_000_000)
    finally:
        other.close()


async def test_debits_on_accounts_in_memory_do_not_wait_for_an_account_the_writer_thread_reads(
    ledger: Ledger, clean_database: str
) -> None:
    # Given an account in memory and one another process funded, which this one has never read
    await warm_and_cold(ledger, clean_database)
    before_thread, before_loop = thread_commands(ledger), loop_commands(ledger)
    # When debits on both arrive together
    results = await answers(*(debit(ledger, user, 10, f"{user}-{n}") for n in range(1, 4) for user in ("warm", "cold")))
    # Then the loop commits those on the account in memory, and the writer thread reads the other and
    # commits its debits, in their order
    assert [type(result).__name__ for result in results] == ["DebitReceipt"] * 6, results
    assert (thread_commands(ledger) - before_thread, loop_commands(ledger) - before_loop) == (3, 3)
    assert [r.balance_after_millicredits for r in results if r.user_id == "cold"] == [999_990, 999_980, 999_970]
    assert [r.balance_after_millicredits for r in results if r.user_id == "warm"] == [999_980, 999_970, 999_960]


async def test_when_deciding_on_the_loop_fails_the_commands_sent_to_the_writer_thread_keep_their_own_answers(
    ledger: Ledger, clean_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an account in memory, one never read, and deciding on the loop failing once
    await warm_and_cold(ledger, clean_database)
    decide, calls = ledger._committer.decide, []

    def failing_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("deciding failed")
        return decide(*args, **kwargs)

    monkeypatch.setattr(ledger._committer, "decide", failing_once)
    # When debits on both arrive together
    failed, applied = await answers(debit(ledger, "warm", 10, None), debit(ledger, "cold", 10, None))
    # Then the one decided on the loop hears of the failure, with nothing written, and the writer thread's
    # is applied and answered as applied: no caller is told of a failure that did not stop its debit
    assert isinstance(failed, RuntimeError), failed
    assert type(applied).__name__ == "DebitReceipt", applied
    assert (debits_in_log(clean_database, "warm"), debits_in_log(clean_database, "cold")) == (1, 1)


async def test_a_batch_stopped_before_it_is_sent_gives_back_its_locks_and_answers_its_callers(
    ledger: Ledger, clean_database: str
) -> None:
    grant(ledger, "stopped", 1_000)
    await answers(debit(ledger, "stopped", 10, "warm"))
    writer = await idle(ledger)
    # Given a batch decided on the loop whose sending is cancelled before it starts (a loop shutting down): the
    # idle loop decides a lone command as it is submitted, and its sending has not begun before the loop turns
    stopped = debit(ledger, "stopped", 10, None)
    assert writer._in_flight
    for task in list(writer._in_flight):
        task.cancel()
    # Then its caller hears that nothing was written, and its account's lock and connection are free again
    (answer,) = await answers(stopped)
    assert isinstance(answer, StoreUnavailableError) and not answer.outcome_unknown, answer
    assert not ledger._account_lock("stopped").locked()
    assert len(writer._free) == len(writer.appenders)
    assert debits_in_log(clean_database, "stopped") == 1
    # And the account's next debit is decided on its state from memory, which the stopped one did not change
    (receipt,) = await answers(debit(ledger, "stopped", 10, "after"))
    assert receipt.balance_after_millicredits == 1_000 - 2 * 10


async def test_an_idle_loop_sends_a_lone_command_at_once_and_the_next_ones_together(
    ledger: Ledger, clean_database: str
) -> None:
    writer = await in_memory_and_idle(ledger, "lone", "pair")
    batches, commands = writer.batches, writer.commands
    # When a debit reaches the idle loop, and two more arrive in the same turn of the loop
    lone = debit(ledger, "lone", 10, "lone")
    # Then the first is on its way before the loop turns
    assert len(writer._in_flight) == 1
    pair = [debit(ledger, "pair", 10, f"pair-{n}") for n in range(2)]
    # And the two that followed it go together in the next batch, each caller with its own answer
    results = await answers(lone, *pair)
    assert [type(result).__name__ for result in results] == ["DebitReceipt"] * 3, results
    assert (writer.batches - batches, writer.commands - commands) == (2, 3)
    assert debits_in_log(clean_database, "pair") == 3
