"""How long a request waits for the ledger (``LedgerCalls``, ``ANSWER_DEADLINE_SECONDS``): past the deadline
its caller hears that the store is unavailable, with the outcome unknown, and a command whose batch has not
begun is dropped; a request whose client went away is cancelled, not answered."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

from gateway.calls import LedgerCalls
from ledger.application import Ledger
from ledger.commands import DebitUsage, GrantCredits
from ledger.errors import StoreUnavailableError
from ledger.persistence import postgres_env
from tests.conftest import T0

pytestmark = pytest.mark.postgres

DEADLINE_SECONDS = 1.0


@pytest.fixture
def ledger(clean_database: str) -> Iterator[Ledger]:
    ledger = Ledger(postgres_env(clean_database))
    ledger.seed(now=T0)
    ledger.enable_group_commit()
    ledger.grant_credits(
        GrantCredits(user_id="waiting", amount_millicredits=1_000_000, source="admin"), idempotency=None, now=T0
    )
    try:
        yield ledger
    finally:
        ledger.close()


def debits_in_log(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM ledger_events WHERE topic LIKE '%CreditsDebited'").fetchone()
    return int(row[0]) if row else 0


async def writer_waits_for_the_lock(database_url: str) -> None:
    """Until the writer's append is waiting for the event table's lock: its batch has begun."""
    for _ in range(200):
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_locks AS l JOIN pg_class AS c ON c.oid = l.relation"
                " WHERE c.relname = 'ledger_events' AND NOT l.granted"
            ).fetchone()
        if row and row[0]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the writer never waited for the lock")


async def settled_debits(database_url: str) -> int:
    """The debits in the log once the writer has had time to write everything it was going to write."""
    for _ in range(100):
        if debits_in_log(database_url):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # Anything not dropped would be written by now.
    return debits_in_log(database_url)


def debit(calls: LedgerCalls, ledger: Ledger) -> asyncio.Task[object]:
    command = DebitUsage(user_id="waiting", tokens=10)
    return asyncio.create_task(calls.command("debit", ledger.debit_usage, command, idempotency=None, now=T0))


@contextlib.asynccontextmanager
async def writer_held(calls: LedgerCalls, ledger: Ledger, database_url: str) -> AsyncIterator[asyncio.Task[object]]:
    """The writer held up in a batch: a debit whose append waits for the event table's lock until the end."""
    with psycopg.connect(database_url) as holder, holder.transaction():
        holder.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")
        begun = debit(calls, ledger)
        await writer_waits_for_the_lock(database_url)
        yield begun


async def test_past_the_deadline_the_caller_hears_unavailable_and_a_command_not_begun_is_dropped(
    ledger: Ledger, clean_database: str
) -> None:
    calls = LedgerCalls(ledger, threads=4, deadline_seconds=DEADLINE_SECONDS)
    # Given the writer held up in a batch (its append waits for the event table's lock)
    async with writer_held(calls, ledger, clean_database) as begun:
        # When another debit waits behind it past the deadline
        waiting = debit(calls, ledger)
        answers = await asyncio.gather(begun, waiting, return_exceptions=True)
    # Then both callers hear that the store is unavailable and that the outcome is unknown
    assert all(isinstance(answer, StoreUnavailableError) and answer.outcome_unknown for answer in answers), answers
    # And once the lock is released, the debit whose batch had begun commits, and the other is never written
    assert await settled_debits(clean_database) == 1


async def test_a_request_whose_client_went_away_is_cancelled_not_answered(ledger: Ledger, clean_database: str) -> None:
    calls = LedgerCalls(ledger, threads=4, deadline_seconds=DEADLINE_SECONDS)
    # Given the writer held up in a batch
    async with writer_held(calls, ledger, clean_database) as begun:
        # When the request waiting behind it is cancelled before the deadline (its client went away)
        gone = debit(calls, ledger)
        await asyncio.sleep(0.05)
        gone.cancel()
        # Then it ends cancelled, not with an answer, and its debit is dropped
        with pytest.raises(asyncio.CancelledError):
            await gone
        await asyncio.gather(begun, return_exceptions=True)
    assert await settled_debits(clean_database) == 1
