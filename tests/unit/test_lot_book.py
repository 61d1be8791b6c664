"""The accounts projection's lots (``projections.lots.LotBook``) stop on a contradiction in the events:
taking from a lot more than it has, or expiring a lot that is not open, is never applied."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from ledger.account import CreditAccount
from ledger.lots import LotKind
from projections.lots import LotBook, LotContradictionError
from tests.unit.test_credit_account import SETTINGS, T0


def history() -> list[Any]:
    """An account granted a promo lot that expires and a paid one, then debited after the expiry."""
    account = CreditAccount.open("u1", T0)
    account.grant(
        grant_id="promo",
        amount_millicredits=1_000,
        source="promotional",
        reference=None,
        description=None,
        granted_by=None,
        now=T0,
        kind=LotKind.PROMO,
        expires_at=T0 + timedelta(days=1),
    )
    account.grant(
        grant_id="paid",
        amount_millicredits=5_000,
        source="purchase",
        reference="cs_1",
        description=None,
        granted_by=None,
        now=T0,
    )
    account.debit(
        debit_id="d1",
        tokens=2_000,
        input_tokens=None,
        output_tokens=None,
        model=None,
        agent_id=None,
        analysis_id=None,
        occurred_at=None,
        settings=SETTINGS,
        now=T0 + timedelta(days=2),
    )
    return account.collect_events()


def fold(book: LotBook, events: list[Any]) -> None:
    balance = 0
    for position, event in enumerate(events, start=1):
        book.apply("u1", event, position, balance)
        balance += {
            CreditAccount.CreditsGranted: lambda e: e.amount_millicredits,
            CreditAccount.CreditsDebited: lambda e: -e.amount_millicredits,
            CreditAccount.LotExpired: lambda e: -e.amount_millicredits,
        }.get(type(event), lambda _: 0)(event)


def test_given_the_events_as_recorded_the_book_holds_what_is_left_of_each_lot() -> None:
    book = LotBook()
    fold(book, history())
    # The promo lot expired whole; the debit took from the paid one.
    assert {lot_id: lot["remaining_millicredits"] for lot_id, lot in book.lots["u1"].items()} == {"paid": 3_000}


def test_a_debit_taking_more_than_its_lot_has_stops_the_book() -> None:
    events = history()
    debit = events[-1]
    assert isinstance(debit, CreditAccount.CreditsDebited)
    events[-1] = dataclasses.replace(debit, lots={"paid": 6_000})
    with pytest.raises(LotContradictionError, match="taken past zero"):
        fold(LotBook(), events)


def test_a_debit_naming_a_lot_that_does_not_exist_stops_the_book() -> None:
    events = history()
    events[-1] = dataclasses.replace(events[-1], lots={"never-granted": 2_000})
    with pytest.raises(LotContradictionError, match="never-granted"):
        fold(LotBook(), events)


def test_expiring_a_lot_that_is_not_open_stops_the_book() -> None:
    events = history()
    expiry = next(event for event in events if isinstance(event, CreditAccount.LotExpired))
    with pytest.raises(LotContradictionError, match="expired but not open"):
        fold(LotBook(), [*events, expiry])
