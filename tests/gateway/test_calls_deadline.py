"""How long a request waits for the ledger (``LedgerCalls``, ``ANSWER_DEADLINE_SECONDS``): past the deadline
its caller hears that the store is unavailable, with the outcome unknown, and a command whose batch has not
begun is dropped; a request whose client went away is cancelled, not answered."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest

from gateway.calls import LedgerCalls
from ledger.application import Ledger
from ledger.commands import DebitUsage, GrantCredits
from ledger.errors import StoreUnavailableError
from ledger.persistence import postgres_env
from tests.conftest import T0

pytestmark = pytest.mark.postgres

DEADLINE_SECONDS = 0.3


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


def debit(calls: LedgerCalls, ledger: Ledger) -> asyncio.Task[object]:
    command = DebitUsage(user_id="waiting", tokens=10)
    return asyncio.create_task(calls.command("debit", ledger.debit_usage, command, idempotency=None, now=T0))


async def test_past_the_deadline_the_caller_hears_unavailable_and_a_command_not_begun_is_dropped(
    ledger: Ledger, clean_database: str
) -> None:
    calls = LedgerCalls(ledger, threads=4, deadline_seconds=DEADLINE_SECONDS)
    # Given the writer held up in a batch (its append waits for the event table's lock)
    with psycopg.connect(clean_database) as holder, holder.transaction():
        holder.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")
        begun = debit(calls, ledger)
        await asyncio.sleep(0.1)  # The writer has taken it and waits for the lock.
        # When another debit waits behind it past the deadline
        waiting = debit(calls, ledger)
        answers = await asyncio.gather(begun, waiting, return_exceptions=True)
    # Then both callers hear that the store is unavailable and that the outcome is unknown
    assert all(isinstance(answer, StoreUnavailableError) and answer.outcome_unknown for answer in answers), answers
    # And once the lock is released, the debit whose batch had begun commits, and the other is never written
    for _ in range(100):
        if debits_in_log(clean_database) == 1:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    assert debits_in_log(clean_database) == 1


async def test_a_request_whose_client_went_away_is_cancelled_not_answered(ledger: Ledger, clean_database: str) -> None:
    calls = LedgerCalls(ledger, threads=4, deadline_seconds=DEADLINE_SECONDS)
    # Given the writer held up in a batch
    with psycopg.connect(clean_database) as holder, holder.transaction():
        holder.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")
        begun = debit(calls, ledger)
        await asyncio.sleep(0.1)
        # When the request waiting behind it is cancelled before the deadline (its client went away)
        gone = debit(calls, ledger)
        await asyncio.sleep(0.05)
        gone.cancel()
        # Then it ends cancelled, not with an answer, and its debit is dropped
        with pytest.raises(asyncio.CancelledError):
            await gone
        await asyncio.gather(begun, return_exceptions=True)
    await asyncio.sleep(0.5)
    assert debits_in_log(clean_database) == 1
