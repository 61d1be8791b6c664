"""Grants as lots, as specifications: given events, when a command, then events or an error.

Usage takes the lots in order: the earliest expiry first (a lot that never expires last), promo before paid
at equal expiry, then the oldest grant. A lot past its expiry stops counting at once; the next command (or
the sweep) records its expiry first. A refund or dispute takes from its purchase first; what no lot covers
is debt, which the next grant pays back first.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from eventsourcing.persistence import JSONTranscoder, StoredEvent
from hypothesis import HealthCheck, settings
from hypothesis import given as for_all
from hypothesis import strategies as st
from msgspec.structs import replace

from ledger.account import CreditAccount
from ledger.account_events import from_us, to_us
from ledger.errors import InsufficientCreditsError, InvalidCommandError, LedgerError
from ledger.lots import Lot, LotKind
from ledger.mapper import MsgspecMapper
from tests.unit.test_credit_account import (
    MAX,
    NO_NOTES,
    SETTINGS,
    T0,
    Step,
    at,
    debit,
    expire_due,
    given,
    history,
    kinds,
    refused,
    release,
    replay,
    reserve,
    settle,
    when,
)

PAID, PROMO = LotKind.PAID, LotKind.PROMO
US = timedelta(microseconds=1)
# No quota and no minimum balance for a reservation: only the lots can refuse.
OPEN = replace(SETTINGS, hourly_token_limit=10**12, daily_token_limit=10**12, min_balance_for_analysis_millicredits=1)


# Commands: each returns a step that calls one public command method.


def lot(grant_id, amount, *, kind, expires_at=None, reference=None, source=None, now=T0) -> Step:
    """A grant with the id of the lot it makes, its kind and its expiry (never when None)."""
    source = source or ("purchase" if kind is PAID else "promotional")
    notes = {**NO_NOTES, "reference": reference}
    return lambda a: a.grant(
        grant_id=grant_id, amount_millicredits=amount, source=source, now=now, kind=kind, expires_at=expires_at, **notes
    )


def paid(grant_id, amount, *, expires_at=None, reference=None, now=T0) -> Step:
    return lot(grant_id, amount, kind=PAID, expires_at=expires_at, reference=reference, now=now)


def promo(grant_id, amount, *, expires_at=None, now=T0) -> Step:
    return lot(grant_id, amount, kind=PROMO, expires_at=expires_at, now=now)


def refund(amount, *, reference, reason="refund", now=T0) -> Step:
    return lambda a: a.revoke(
        revocation_id="rev", amount_millicredits=amount, reason=reason, reference=reference, now=now
    )


def remove(amount, *, now=T0) -> Step:
    return lambda a: a.remove(adjustment_id="adj", amount_millicredits=amount, reason="fix", removed_by="a", now=now)


def welcome(amount, *, ttl_days, now=T0) -> Step:
    return lambda a: a.initialize(amount, now, welcome_ttl_days=ttl_days)


# Reading the lots.


def remaining(account: CreditAccount) -> dict[str, int]:
    """Each lot's remaining credits, in the order the account keeps them."""
    return {lot_id: lot["remaining_millicredits"] for lot_id, lot in account.lots.items()}


def open_ids(account: CreditAccount, now: datetime) -> list[str]:
    return [lot_id for lot_id, _ in account.open_lots(now)]


def state(account: CreditAccount) -> tuple[dict[str, Lot], int, int]:
    return account.lots, account.debt_millicredits, account.balance_millicredits


class TestConsumptionOrder:
    @pytest.mark.parametrize(
        "steps",
        [
            (
                paid("never", 1_000),
                paid("later", 1_000, expires_at=at(days=60)),
                paid("soon", 1_000, expires_at=at(days=30), now=at(minutes=1)),
            ),
            (
                promo("never", 1_000),
                paid("later", 1_000, expires_at=at(days=60)),
                paid("soon", 1_000, expires_at=at(days=30), now=at(minutes=1)),
            ),
        ],
        ids=["paid", "an-expiring-paid-lot-before-a-never-expiring-promo"],
    )
    def test_a_lot_expiring_sooner_is_used_first_even_if_granted_later(self, steps):
        account = given(*steps)
        assert open_ids(account, at(minutes=2)) == ["soon", "later", "never"]
        events = when(account, debit(500, now=at(minutes=2)))
        assert kinds(events) == [CreditAccount.CreditsDebited]
        assert events[0].lots == {"soon": 500}
        assert remaining(account) == {"never": 1_000, "later": 1_000, "soon": 500}

    @pytest.mark.parametrize("expires_at", [None, at(days=30)], ids=["never-expiring", "same-expiry"])
    def test_promo_is_used_before_paid_at_equal_expiry(self, expires_at):
        account = given(
            paid("paid", 1_000, expires_at=expires_at), promo("promo", 1_000, expires_at=expires_at, now=at(minutes=1))
        )
        events = when(account, debit(700, now=at(minutes=2)))
        assert events[0].lots == {"promo": 700}
        assert remaining(account) == {"paid": 1_000, "promo": 300}

    def test_the_oldest_grant_is_used_first_otherwise(self):
        account = given(paid("older", 1_000), paid("newer", 1_000, now=at(minutes=1)))
        assert when(account, debit(400, now=at(minutes=2)))[0].lots == {"older": 400}
        assert open_ids(account, at(minutes=2)) == ["older", "newer"]

    def test_a_debit_spanning_two_lots_names_both_and_a_used_up_lot_disappears(self):
        account = given(promo("promo", 1_000), paid("cs_1", 5_000, reference="cs_1"))
        events = when(account, debit(1_500, now=at(minutes=1)))
        assert list(events[0].lots.items()) == [("promo", 1_000), ("cs_1", 500)]
        assert remaining(account) == {"cs_1": 4_500}
        assert (account.balance_millicredits, account.debt_millicredits) == (4_500, 0)


class TestExpiryWithoutASweep:
    """Before the expiry is recorded, the lot already no longer counts."""

    def test_a_lot_past_its_expiry_no_longer_counts_though_its_expiry_is_not_recorded(self):
        account = given(promo("promo", 3_000, expires_at=at(days=1)), paid("paid", 2_000))
        later = at(days=1, hours=1)
        assert (account.balance_at(later), account.available_millicredits(later)) == (2_000, 2_000)
        assert open_ids(account, later) == ["paid"]
        # Nothing is recorded: the state still holds the lot.
        assert account.collect_events() == []
        assert (account.balance_millicredits, remaining(account)) == (5_000, {"promo": 3_000, "paid": 2_000})

    def test_the_expiry_is_exclusive(self):
        account = given(promo("promo", 3_000, expires_at=at(days=1)), paid("paid", 2_000))
        assert account.balance_at(at(days=1) - US) == 5_000
        assert account.balance_at(at(days=1)) == 2_000
        events = when(account, debit(1_000, now=at(days=1)))
        assert kinds(events) == [CreditAccount.LotExpired, CreditAccount.CreditsDebited]
        assert events[1].lots == {"paid": 1_000}

    def test_a_debit_that_would_need_an_expired_lot_is_refused_and_leaves_only_the_expiry_pending(self):
        # As with a hold: the expiry is recorded before the refusal; the application discards the aggregate.
        account = given(promo("promo", 3_000, expires_at=at(days=1)), paid("paid", 2_000))
        with pytest.raises(InsufficientCreditsError) as caught:
            debit(2_500, now=at(days=2))(account)
        assert (caught.value.available_millicredits, caught.value.required_millicredits) == (2_000, 2_500)
        assert kinds(account.collect_events()) == [CreditAccount.LotExpired]

    def test_a_debit_that_fits_records_the_expiry_first_at_the_lots_expiry(self):
        account = given(
            promo("promo", 3_000, expires_at=at(days=1)), paid("paid", 2_000), debit(1_000, now=at(hours=1))
        )
        events = when(account, debit(1_500, now=at(days=2)))
        assert kinds(events) == [CreditAccount.LotExpired, CreditAccount.CreditsDebited]
        expired, debited = events
        assert (expired.lot_id, expired.kind, expired.amount_millicredits) == ("promo", "promo", 2_000)
        assert expired.timestamp == at(days=1)
        assert (debited.lots, debited.timestamp) == ({"paid": 1_500}, at(days=2))
        assert remaining(account) == {"paid": 500}
        assert account.balance_millicredits == 500

    def test_an_expiry_is_placed_at_the_lots_expiry_even_when_initialize_came_between(self):
        account = given(promo("promo", 1_000, expires_at=at(days=1)), paid("paid", 1_000))
        events = when(account, lambda a: a.initialize(0, at(days=2)))
        assert kinds(events) == [CreditAccount.LotExpired, CreditAccount.Initialized]
        assert (events[0].lot_id, events[0].timestamp) == ("promo", at(days=1))
        assert kinds(when(account, debit(10, now=at(days=3)))) == [CreditAccount.CreditsDebited]


class TestExpiryWithASweep:
    def test_expire_due_records_each_lot_past_its_expiry_oldest_expiry_first_and_counts_them(self):
        account = given(
            paid("later", 2_000, expires_at=at(days=2)),
            promo("sooner", 1_000, expires_at=at(days=1)),
            paid("never", 4_000),
            paid("after", 8_000, expires_at=at(days=4)),
        )
        assert expire_due(now=at(days=3))(account) == 2
        events = account.collect_events()
        assert kinds(events) == [CreditAccount.LotExpired] * 2
        assert [(e.lot_id, e.kind, e.amount_millicredits, e.timestamp) for e in events] == [
            ("sooner", "promo", 1_000, at(days=1)),
            ("later", "paid", 2_000, at(days=2)),
        ]
        assert remaining(account) == {"never": 4_000, "after": 8_000}
        assert account.balance_millicredits == account.balance_at(at(days=3)) == 12_000

    def test_expire_due_with_nothing_due_records_nothing(self):
        account = given(promo("promo", 1_000, expires_at=at(days=1)))
        assert expire_due(now=at(days=1) - US)(account) == 0
        assert account.collect_events() == []

    def test_an_expiry_leaves_the_quotas_untouched(self):
        account = given(promo("promo", 300_000, expires_at=at(minutes=30)), debit(100_000, now=at(minutes=10)))
        assert account.tokens_used(at(minutes=40)) == (100_000, 100_000)
        assert expire_due(now=at(minutes=40))(account) == 1
        assert account.collect_events()[0].amount_millicredits == 200_000
        assert account.tokens_used(at(minutes=40)) == (100_000, 100_000)
        assert account.balance_millicredits == 0


class TestGrantAsALot:
    @pytest.mark.parametrize("expires_at", [at(seconds=-1), T0], ids=["past", "now"])
    def test_grant_rejects_an_expiry_that_is_not_in_the_future(self, expires_at):
        error = refused(given(), paid("cs_1", 1_000, expires_at=expires_at), InvalidCommandError)
        assert error.field == "expires_at"

    def test_grant_records_the_lot(self):
        account = given()
        events = when(account, paid("cs_1", 1_000, expires_at=at(days=365), reference="cs_1", now=at(hours=1)))
        assert (events[0].kind, events[0].expires_at_us, events[0].debt_repaid_millicredits) == (
            "paid",
            to_us(at(days=365)),
            0,
        )
        assert account.lots == {
            "cs_1": Lot(
                kind="paid",
                granted_millicredits=1_000,
                remaining_millicredits=1_000,
                expires_at_us=to_us(at(days=365)),
                granted_at_us=to_us(at(hours=1)),
                reference="cs_1",
            )
        }

    @pytest.mark.parametrize(
        ("source", "kind"), [("purchase", "paid"), ("dispute", "paid"), ("promotional", "promo"), ("admin", "promo")]
    )
    def test_a_grant_without_a_kind_takes_its_sources(self, source, kind):
        account = given()
        assert when(account, lot("g", 1, kind=None, source=source))[0].kind == kind
        assert account.lots["g"]["kind"] == kind

    def test_a_lot_past_its_expiry_does_not_count_toward_the_largest_balance(self):
        account = given(paid("big", MAX - 1, expires_at=at(days=1)))
        events = when(account, paid("small", 2, now=at(days=2)))
        assert kinds(events) == [CreditAccount.LotExpired, CreditAccount.CreditsGranted]
        assert (remaining(account), account.balance_millicredits) == ({"small": 2}, 2)

    def test_grant_rejects_an_id_that_already_names_a_lot(self):
        error = refused(given(paid("cs_1", 1_000)), paid("cs_1", 1_000), InvalidCommandError)
        assert error.field == "grant_id"


class TestWelcome:
    def test_welcome_credits_are_a_promo_lot_expiring_after_their_ttl(self):
        account = given()
        events = when(account, welcome(5_000, ttl_days=30, now=at(hours=2)))
        assert kinds(events) == [CreditAccount.CreditsGranted, CreditAccount.Initialized]
        assert (events[0].kind, events[0].expires_at_us) == ("promo", to_us(at(days=30, hours=2)))
        lot = account.lots["welcome:user-1"]
        assert (lot["kind"], lot["remaining_millicredits"], lot["expires_at_us"]) == (
            "promo",
            5_000,
            to_us(at(days=30, hours=2)),
        )
        assert account.balance_at(at(days=30, hours=2) - US) == 5_000
        assert account.balance_at(at(days=30, hours=2)) == 0

    def test_a_ttl_of_zero_days_never_expires(self):
        account = given(welcome(5_000, ttl_days=0))
        assert account.lots["welcome:user-1"]["expires_at_us"] is None
        assert account.balance_at(at(days=10_000)) == 5_000


class TestRefund:
    """A refund or dispute takes from its purchase first, then the other lots in order, then makes debt."""

    PURCHASES = (
        paid("cs_2", 5_000, reference="cs_2"),
        paid("cs_1", 10_000, reference="cs_1", now=at(minutes=1)),
        promo("promo", 4_000, now=at(minutes=2)),
        debit(5_000, now=at(minutes=3)),  # promo 4,000 then cs_2 1,000
        promo("bonus", 3_000, now=at(minutes=4)),
    )

    def test_a_refund_takes_its_purchases_remainder_first_then_the_other_lots_in_order(self):
        account = given(*self.PURCHASES)
        assert remaining(account) == {"cs_2": 4_000, "cs_1": 10_000, "bonus": 3_000}
        events = when(account, refund(9_000, reference="cs_2", now=at(minutes=5)))
        assert kinds(events) == [CreditAccount.CreditsRevoked]
        assert list(events[0].lots.items()) == [("cs_2", 4_000), ("bonus", 3_000), ("cs_1", 2_000)]
        assert sum(events[0].lots.values()) == events[0].amount_millicredits == 9_000
        assert remaining(account) == {"cs_1": 8_000}
        assert (account.balance_millicredits, account.debt_millicredits) == (8_000, 0)

    def test_a_refund_of_an_unknown_purchase_takes_the_lots_in_order(self):
        account = given(*self.PURCHASES)
        events = when(account, refund(5_000, reference="cs_9", now=at(minutes=5)))
        assert list(events[0].lots.items()) == [("bonus", 3_000), ("cs_2", 2_000)]

    def test_a_dispute_larger_than_everything_leaves_debt_and_a_negative_balance(self):
        account = given(*self.PURCHASES)
        events = when(account, refund(20_000, reason="dispute", reference="cs_1", now=at(minutes=5)))
        assert list(events[0].lots.items()) == [("cs_1", 10_000), ("bonus", 3_000), ("cs_2", 4_000)]
        assert account.lots == {}
        assert (account.balance_millicredits, account.debt_millicredits) == (-3_000, 3_000)
        assert account.available_millicredits(at(minutes=5)) == -3_000
        error = refused(account, debit(1, now=at(minutes=6)), InsufficientCreditsError)
        assert error.available_millicredits == -3_000

    def test_the_next_grant_repays_the_debt_first_and_its_lot_holds_the_rest(self):
        account = given(paid("cs_1", 1_000, reference="cs_1"), refund(4_000, reference="cs_1"))
        events = when(account, paid("cs_2", 5_000, now=at(minutes=1)))
        assert events[0].debt_repaid_millicredits == 3_000
        assert account.lots["cs_2"]["granted_millicredits"] == 5_000
        assert remaining(account) == {"cs_2": 2_000}
        assert (account.balance_millicredits, account.debt_millicredits) == (2_000, 0)

    def test_a_grant_smaller_than_the_debt_repays_part_of_it_and_makes_no_lot(self):
        account = given(paid("cs_1", 1_000, reference="cs_1"), refund(4_000, reference="cs_1"))
        events = when(account, promo("promo", 1_000, expires_at=at(days=1), now=at(minutes=1)))
        assert events[0].debt_repaid_millicredits == 1_000
        assert account.lots == {}
        assert (account.balance_millicredits, account.debt_millicredits) == (-2_000, 2_000)
        # Nothing is left to expire.
        assert expire_due(now=at(days=2))(account) == 0

    def test_a_grant_equal_to_the_debt_repays_it_and_makes_no_lot(self):
        account = given(paid("cs_1", 1_000, reference="cs_1"), refund(4_000, reference="cs_1"))
        assert when(account, paid("cs_2", 3_000))[0].debt_repaid_millicredits == 3_000
        assert (account.lots, account.balance_millicredits, account.debt_millicredits) == ({}, 0, 0)


class TestSettlementAcrossLots:
    """A hold names no lot: the settlement takes from the lots that count when it comes, even past the hold."""

    LOTS = (
        promo("promo", 60_000, expires_at=at(days=1)),
        paid("cs_1", 50_000),
        paid("cs_2", 100_000, now=at(minutes=1)),
        reserve("r1", 10_000, now=at(minutes=2)),
    )

    def test_a_hold_takes_nothing_from_the_lots(self):
        account = given(*self.LOTS)
        assert remaining(account) == {"promo": 60_000, "cs_1": 50_000, "cs_2": 100_000}
        assert account.available_millicredits(at(minutes=2)) == 200_000

    def test_a_settlement_past_its_hold_takes_from_several_lots_in_order(self):
        account = given(*self.LOTS)
        events = when(account, settle("r1", 150_000, now=at(minutes=3)))
        assert kinds(events) == [CreditAccount.ReservationSettled]
        assert (events[0].amount_millicredits, events[0].released_millicredits) == (150_000, 0)
        assert list(events[0].lots.items()) == [("promo", 60_000), ("cs_1", 50_000), ("cs_2", 40_000)]
        assert remaining(account) == {"cs_2": 60_000}
        assert (account.balance_millicredits, account.debt_millicredits) == (60_000, 0)

    def test_a_settlement_past_all_lots_leaves_debt_and_no_open_lot(self):
        account = given(*self.LOTS)
        events = when(account, settle("r1", 300_000, now=at(minutes=3)))
        assert list(events[0].lots.items()) == [("promo", 60_000), ("cs_1", 50_000), ("cs_2", 100_000)]
        assert account.balance_millicredits == -90_000
        assert account.debt_millicredits == -account.balance_millicredits
        assert (account.lots, account.open_lots(at(minutes=3))) == ({}, [])

    def test_a_lot_that_expired_during_the_hold_is_recorded_first_and_not_used(self):
        account = given(
            promo("promo", 100_000, expires_at=at(minutes=30)), paid("cs_1", 100_000), reserve("r1", 50_000)
        )
        events = when(account, settle("r1", 60_000, now=at(minutes=45)))
        assert kinds(events) == [CreditAccount.LotExpired, CreditAccount.ReservationSettled]
        assert (events[0].lot_id, events[0].amount_millicredits, events[0].timestamp) == (
            "promo",
            100_000,
            at(minutes=30),
        )
        assert events[1].lots == {"cs_1": 60_000}
        assert remaining(account) == {"cs_1": 40_000}


class TestReplay:
    def test_replaying_a_history_with_lots_expiries_and_debt_rebuilds_the_same_account(self):
        account, events = history(
            welcome(5_000, ttl_days=30),
            paid("cs_1", 200_000, reference="cs_1", now=at(minutes=1)),
            promo("promo", 50_000, expires_at=at(days=2), now=at(minutes=2)),
            debit(10_000, now=at(minutes=3)),  # promo
            reserve("r1", 10_000, now=at(minutes=4)),
            settle("r1", 30_000, now=at(minutes=5)),  # promo: 10,000 left
            expire_due(now=at(days=3)),  # promo expires
            refund(300_000, reference="cs_1", now=at(days=3)),  # cs_1, welcome, then 95,000 of debt
            paid("cs_2", 100_000, now=at(days=4)),  # repays the debt: a lot of 5,000
            promo("late", 20_000, expires_at=at(days=10), now=at(days=5)),
            debit(1_000, now=at(days=11)),  # late expires first, then cs_2
        )
        assert [e.lot_id for e in events if isinstance(e, CreditAccount.LotExpired)] == ["promo", "late"]
        assert remaining(account) == {"cs_2": 4_000}
        replayed = replay(events)
        assert state(replayed) == state(account)
        assert (replayed.balance_millicredits, replayed.debt_millicredits) == (4_000, 0)
        assert replayed == account

    def test_replaying_a_history_that_ends_in_debt_rebuilds_the_debt(self):
        account, events = history(
            promo("promo", 60_000, expires_at=at(hours=1)),
            paid("cs_1", 50_000, reference="cs_1"),
            reserve("r1", 10_000),
            settle("r1", 300_000, now=at(minutes=3)),
            paid("cs_2", 1_000, now=at(minutes=4)),
        )
        replayed = replay(events)
        assert state(replayed) == state(account) == ({}, 189_000, -189_000)


# Stored before lots: snapshots and events without the lots' fields, read back by the ledger's mapper.

MAPPER: Any = MsgspecMapper(transcoder=JSONTranscoder())
CONSUMING = (
    CreditAccount.CreditsDebited,
    CreditAccount.ReservationSettled,
    CreditAccount.CreditsRemoved,
    CreditAccount.CreditsRevoked,
)


def _restored(stored: StoredEvent, payload: dict[str, Any]) -> StoredEvent:
    return StoredEvent(stored.originator_id, stored.originator_version, stored.topic, json.dumps(payload).encode())


def before_lots(event: Any) -> Any:
    """The event as the ledger stored it before lots (grants at class version 1), as the ledger reads it."""
    stored = MAPPER.to_stored_event(event)
    payload = json.loads(stored.state)
    if isinstance(event, CreditAccount.CreditsGranted):
        for name in ("kind", "expires_at_us", "debt_repaid_millicredits", "class_version"):
            del payload[name]
    elif isinstance(event, CONSUMING):
        del payload["lots"]
    return MAPPER.to_domain_event(_restored(stored, payload))


def _as_version_1(state):
    """A snapshot's state as version 1 stored it: no lots, and positional records."""
    for name in ("lots", "debt_millicredits", "class_version"):
        del state[name]
    state["holds"] = {
        rid: [hold["held_millicredits"], hold["expires_at_us"], hold["estimated_tokens"]]
        for rid, hold in state["holds"].items()
    }
    state["closed_reservations"] = {
        rid: [closed["status"], closed["closed_at_us"]] for rid, closed in state["closed_reservations"].items()
    }
    for name in ("minute_usage", "hour_usage"):
        state[name] = [[entry["bucket"], entry["tokens"]] for entry in state[name]]


class TestSnapshotUpcast:
    @pytest.mark.parametrize(
        ("balance", "lots", "debt"),
        [
            (
                5_000,
                {
                    "legacy": Lot(
                        kind="paid",
                        granted_millicredits=5_000,
                        remaining_millicredits=5_000,
                        expires_at_us=None,
                        granted_at_us=0,
                        reference=None,
                    )
                },
                0,
            ),
            (-300, {}, 300),
            (0, {}, 0),
        ],
    )
    def test_a_snapshot_from_before_lots_keeps_its_balance_as_one_paid_lot_or_as_debt(self, balance, lots, debt):
        snapshot = {
            "user_id": "user-1",
            "initialized": True,
            "balance_millicredits": balance,
            "holds": {},
            "closed_reservations": {},
            "minute_usage": [],
            "hour_usage": [],
        }
        CreditAccount.upcast_v1_v2(snapshot)
        assert (snapshot["lots"], snapshot["debt_millicredits"], snapshot["balance_millicredits"]) == (
            lots,
            debt,
            balance,
        )

    def test_a_stored_snapshot_from_before_lots_loads_and_its_legacy_lot_is_used(self):
        account = given(paid("cs_1", 5_000), debit(1_000), reserve("r1", 100, settings=OPEN), release("r1"))
        stored = MAPPER.to_stored_event(CreditAccount.Snapshot.take(account))
        snapshot = json.loads(stored.state)
        _as_version_1(snapshot["state"])
        loaded = MAPPER.to_domain_event(_restored(stored, snapshot)).mutate(None)
        assert remaining(loaded) == {"legacy": 4_000}
        assert (loaded.balance_millicredits, loaded.debt_millicredits) == (4_000, 0)
        # Its records are named again: the closed reservation, the usage buckets.
        assert loaded.closed_reservations == account.closed_reservations
        assert (loaded.minute_usage, loaded.hour_usage) == (account.minute_usage, account.hour_usage)
        assert when(loaded, debit(500, now=at(minutes=1)))[0].lots == {"legacy": 500}


class TestEventsRecordedBeforeLots:
    LEGACY = (
        paid("old", 2_000, now=T0),
        paid("new", 2_000, now=at(minutes=1)),
        lot("promo", 1_000, kind=PROMO, source="admin", now=at(minutes=2)),
        debit(2_500, now=at(minutes=3)),  # promo 1,000, old 1,500
        reserve("r1", 100, now=at(minutes=4), settings=OPEN),
        settle("r1", 1_000, now=at(minutes=5)),  # old 500, new 500
        remove(500, now=at(minutes=6)),  # new 500
        refund(4_000, reference="ch_1", now=at(minutes=7)),  # new 1,000, then 3,000 of debt
        paid("small", 1_000, now=at(minutes=8)),  # repays 1,000: no lot
        paid("big", 5_000, now=at(minutes=9)),  # repays 2,000: a lot of 3,000
    )

    def test_events_stored_before_lots_read_with_no_lots_and_a_kind_from_their_source(self):
        _, events = history(*self.LEGACY)
        old = [before_lots(event) for event in events]
        granted = [e for e in old if isinstance(e, CreditAccount.CreditsGranted)]
        assert [(e.grant_id, e.kind, e.expires_at_us, e.debt_repaid_millicredits) for e in granted] == [
            ("old", "paid", None, None),
            ("new", "paid", None, None),
            ("promo", "promo", None, None),
            ("small", "paid", None, None),
            ("big", "paid", None, None),
        ]
        consuming = [e for e in old if isinstance(e, CONSUMING)]
        assert [type(e) for e in consuming] == list(CONSUMING)
        assert all(e.lots is None for e in consuming)

    def test_replaying_them_takes_promo_before_paid_then_the_oldest(self):
        account, events = history(*self.LEGACY[:4])
        replayed = replay([before_lots(event) for event in events])
        assert remaining(replayed) == {"old": 500, "new": 2_000}
        assert state(replayed) == state(account)

    def test_replaying_them_makes_the_same_debt_and_lots_as_recorded_live(self):
        account, events = history(*self.LEGACY)
        replayed = replay([before_lots(event) for event in events])
        assert remaining(replayed) == {"big": 3_000}
        assert replayed.lots["big"]["granted_millicredits"] == 5_000
        assert state(replayed) == state(account)
        assert (replayed.balance_millicredits, replayed.debt_millicredits) == (3_000, 0)

    def test_a_legacy_grant_smaller_than_the_debt_makes_no_lot(self):
        _, events = history(*self.LEGACY[:9])
        replayed = replay([before_lots(event) for event in events])
        assert (replayed.lots, replayed.balance_millicredits, replayed.debt_millicredits) == ({}, -2_000, 2_000)


# Property: whatever commands arrive, the lots and the debt add up to the balance, and replay agrees.

REFERENCES = ("cs_1", "cs_2", "cs_3")
EXPIRIES = (CreditAccount.LotExpired, CreditAccount.ReservationExpired)
amounts = st.integers(min_value=1, max_value=200_000)
arguments = {
    "grant": st.tuples(
        st.sampled_from(LotKind),
        st.integers(min_value=1, max_value=500_000),
        st.one_of(st.none(), st.integers(min_value=0, max_value=12 * 60)),  # expiry in minutes (0: refused)
        st.sampled_from((None, *REFERENCES)),
    ),
    "debit": st.tuples(amounts),
    "reserve": st.tuples(amounts, st.integers(min_value=1, max_value=24 * 60)),  # ttl in minutes
    "settle": st.tuples(st.integers(min_value=0, max_value=600_000)),
    "remove": st.tuples(amounts),
    "revoke": st.tuples(st.integers(min_value=1, max_value=100_000), st.sampled_from(REFERENCES)),
    "wait": st.tuples(st.integers(min_value=1, max_value=6 * 60)),  # minutes
    "sweep": st.tuples(),
}
# Grants, reservations and settlements come more often: most commands then find lots to take from, and most
# settlements a reservation to settle.
WEIGHTED = ("grant", "grant", "grant", "debit", "debit", "reserve", "reserve", "settle", "settle", "remove", "revoke")
moves = st.sampled_from((*WEIGHTED, "wait", "wait", "sweep")).flatmap(
    lambda name: arguments[name].map(lambda values: (name, *values))
)


def step_of(move: tuple[Any, ...], n: int, now: datetime, reservations: list[str]) -> Step:
    """The command a move stands for, at ``now``; a settlement settles the oldest open reservation."""
    name, *values = move
    commands: dict[str, Callable[..., Step]] = {
        "grant": lambda kind, amount, minutes, reference: lot(
            f"g{n}",
            amount,
            kind=kind,
            expires_at=None if minutes is None else now + timedelta(minutes=minutes),
            reference=reference,
            now=now,
        ),
        "debit": lambda tokens: debit(tokens, now=now, settings=OPEN),
        "reserve": lambda tokens, minutes: reserve(f"r{n}", tokens, ttl=minutes * 60, now=now, settings=OPEN),
        "settle": lambda tokens: settle(reservations[0] if reservations else "none", tokens, now=now, settings=OPEN),
        "remove": lambda amount: remove(amount, now=now),
        "revoke": lambda amount, reference: refund(
            amount, reference=reference, reason="dispute" if n % 2 else "refund", now=now
        ),
        "sweep": lambda: expire_due(now=now),
    }
    return commands[name](*values)


def check(account: CreditAccount, events: list[Any], new: list[Any], now: datetime, expiries: dict[str, int]) -> None:
    lots = account.lots.values()
    assert (
        sum(lot["remaining_millicredits"] for lot in lots) - account.debt_millicredits == account.balance_millicredits
    )
    assert all(lot["remaining_millicredits"] > 0 for lot in lots)
    assert account.debt_millicredits >= 0
    assert account.debt_millicredits == 0 or not account.lots
    counting = sum(
        lot["remaining_millicredits"]
        for lot in lots
        if lot["expires_at_us"] is None or lot["expires_at_us"] > to_us(now)
    )
    assert account.balance_at(now) == counting - account.debt_millicredits
    for event in new:
        if isinstance(event, CONSUMING):
            assert all(amount > 0 for amount in event.lots.values())
            assert sum(event.lots.values()) <= event.amount_millicredits
        if isinstance(event, CreditAccount.CreditsDebited | CreditAccount.CreditsRemoved):
            assert sum(event.lots.values()) == event.amount_millicredits  # never debt
        if isinstance(event, CreditAccount.LotExpired):
            assert event.timestamp == from_us(expiries[event.lot_id])
    # History places each event at or after the one before.
    assert all(a.timestamp <= b.timestamp for a, b in itertools.pairwise(events))
    assert state(replay(events)) == state(account)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@for_all(script=st.lists(moves, min_size=8, max_size=40))
def test_the_lots_less_the_debt_are_always_the_balance_and_replay_agrees(script: list[tuple[Any, ...]]) -> None:
    account, events = history()
    now = T0
    reservations: list[str] = []
    expiries: dict[str, int] = {}
    for n, move in enumerate(script):
        if move[0] == "wait":
            now += timedelta(minutes=move[1])
            continue
        try:
            step_of(move, n, now, reservations)(account)
        except LedgerError:
            # Only the expiries the command recorded before refusing may be pending; the application
            # discards them with the aggregate, and so does this: the account is read again from its events.
            assert set(kinds(account.collect_events())) <= set(EXPIRIES)
            account = replay(events)
            continue
        new = list(account.collect_events())
        for event in new:
            if isinstance(event, CreditAccount.CreditsGranted) and event.expires_at_us is not None:
                expiries[event.grant_id] = event.expires_at_us
            if isinstance(event, CreditAccount.CreditsReserved):
                reservations.append(event.reservation_id)
            if isinstance(event, CreditAccount.ReservationSettled | CreditAccount.ReservationExpired):
                reservations.remove(event.reservation_id)
        events.extend(new)
        check(account, events, new, now, expiries)
