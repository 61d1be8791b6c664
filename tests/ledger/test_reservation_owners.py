"""A settlement or release names only its reservation. A process that knows the reservation's owner (it
made the reservation, or read its index once) decides it like a debit, on the event loop, with no read
first; a reservation it does not know is found through its index, on a thread, as before."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from ledger.application import Ledger
from ledger.commands import IdempotencyKey, ReleaseReservation, ReserveCredits, SettleReservation
from ledger.errors import NotFoundError
from ledger.persistence import postgres_env
from ledger.receipts import ReleaseReceipt, ReservationReceipt, SettlementReceipt
from ledger.reservations import ReservationOwners
from tests.conftest import T0
from tests.ledger.test_loop_writer import answers, grant, loop_commands, thread_commands


@pytest.fixture
def ledger(clean_database: str) -> Iterator[Ledger]:
    ledger = Ledger(postgres_env(clean_database))
    ledger.seed(now=T0)
    ledger.enable_group_commit(max_batch=64)
    try:
        yield ledger
    finally:
        ledger.close()


def submit(ledger: Ledger, command: Any, key: str) -> asyncio.Future[Any]:
    return ledger.submit_async(command, idempotency=IdempotencyKey("svc", key), now=T0)


def held_by_another_process(database_url: str, user: str) -> ReservationReceipt:
    """A funded account's hold, made by another process: this one has not learnt its owner."""
    other = Ledger(postgres_env(database_url))
    try:
        grant(other, user, 1_000_000)
        return other.reserve_credits(
            ReserveCredits(user_id=user, estimated_tokens=1_000), idempotency=IdempotencyKey("svc", "h"), now=T0
        )
    finally:
        other.close()


@pytest.mark.postgres
async def test_a_settlement_of_a_reservation_this_process_made_is_decided_on_the_loop(ledger: Ledger) -> None:
    # Given an account in memory and a hold this process made on it
    grant(ledger, "u1", 1_000_000)
    (held,) = await answers(submit(ledger, ReserveCredits(user_id="u1", estimated_tokens=1_000), "hold"))
    settle = SettleReservation(reservation_id=held.reservation_id, tokens=600)
    before = (thread_commands(ledger), loop_commands(ledger))
    # When it is settled naming only the reservation
    assert ledger.submittable(settle)
    (settled,) = await answers(submit(ledger, settle, "settle"))
    # Then the loop decided it, on the right account, and the writer thread did nothing
    assert isinstance(settled, SettlementReceipt), settled
    assert (settled.user_id, settled.debited_millicredits, settled.released_millicredits) == ("u1", 600, 400)
    assert (thread_commands(ledger), loop_commands(ledger)) == (before[0], before[1] + 1)
    # And the same key again is the first answer, replayed, with nothing written: looked up by the writer
    # thread, since a lookup on the loop would block it
    before_again = thread_commands(ledger)
    (again,) = await answers(submit(ledger, settle, "settle"))
    assert again.replayed and again.position >= settled.position
    assert thread_commands(ledger) == before_again + 1
    assert ledger.get_balance("u1", now=T0).balance_millicredits == 1_000_000 - 600


@pytest.mark.postgres
async def test_a_release_of_a_reservation_this_process_made_is_decided_on_the_loop(ledger: Ledger) -> None:
    grant(ledger, "u1", 1_000_000)
    (held,) = await answers(submit(ledger, ReserveCredits(user_id="u1", estimated_tokens=1_000), "hold"))
    release = ReleaseReservation(reservation_id=held.reservation_id)
    before = thread_commands(ledger)
    assert ledger.submittable(release)
    (released,) = await answers(submit(ledger, release, "release"))
    assert isinstance(released, ReleaseReceipt), released
    assert (released.user_id, released.released_millicredits) == ("u1", held.held_millicredits)
    assert thread_commands(ledger) == before


@pytest.mark.postgres
async def test_a_reservation_another_process_made_is_found_through_its_index(
    ledger: Ledger, clean_database: str
) -> None:
    # Given a hold another process made
    held = held_by_another_process(clean_database, "u2")
    settle = SettleReservation(reservation_id=held.reservation_id, tokens=100)
    # Then this process cannot decide it without a read: it goes the caller's thread's way
    assert not ledger.submittable(settle)
    settled = ledger.settle_reservation(settle, idempotency=IdempotencyKey("svc", "s"), now=T0)
    assert (settled.user_id, settled.debited_millicredits) == ("u2", 100)
    # And the owner read once is known from then on
    assert ledger.submittable(ReleaseReservation(reservation_id=held.reservation_id))


@pytest.mark.postgres
async def test_a_reservation_the_writer_thread_made_is_known_too(ledger: Ledger) -> None:
    grant(ledger, "u3", 1_000_000)
    held = ledger.reserve_credits(
        ReserveCredits(user_id="u3", estimated_tokens=1_000), idempotency=IdempotencyKey("svc", "h"), now=T0
    )
    assert ledger.submittable(SettleReservation(reservation_id=held.reservation_id, tokens=1))


@pytest.mark.postgres
async def test_a_settlement_first_answered_through_the_index_is_replayed_from_memory_not_refused(
    ledger: Ledger, clean_database: str
) -> None:
    # Given a hold another process made, settled here while its owner was unknown (its index read)
    held = held_by_another_process(clean_database, "u4")
    settle = SettleReservation(reservation_id=held.reservation_id, tokens=300)
    first = ledger.settle_reservation(settle, idempotency=IdempotencyKey("svc", "s"), now=T0)
    # When the same request comes again, now that the owner is in memory
    assert ledger.submittable(settle)
    (again,) = await answers(submit(ledger, settle, "s"))
    # Then it is the first answer (the same body, so no conflict), and nothing more is debited
    assert isinstance(again, SettlementReceipt) and again.replayed, again
    assert again.debited_millicredits == first.debited_millicredits == 300
    assert ledger.get_balance("u4", now=T0).balance_millicredits == 1_000_000 - 300


@pytest.mark.postgres
def test_a_reservation_nobody_made_is_not_found(ledger: Ledger) -> None:
    settle = SettleReservation(reservation_id="never-made", tokens=1)
    assert not ledger.submittable(settle)
    with pytest.raises(NotFoundError):
        ledger.settle_reservation(settle, idempotency=IdempotencyKey("svc", "x"), now=T0)


def test_the_owners_in_memory_are_bounded_and_the_least_recently_used_go_first() -> None:
    owners = ReservationOwners(most=2)
    owners.learn("r1", "a")
    owners.learn("r2", "b")
    assert owners.get("r1") == "a"  # r1 is now the most recently used
    owners.learn("r3", "c")
    assert (owners.get("r1"), owners.get("r2"), owners.get("r3")) == ("a", None, "c")
