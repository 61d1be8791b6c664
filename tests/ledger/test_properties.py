"""Property: whatever commands arrive, the balance is what the events say it is.

For random sequences of grants, debits, reservations, settlements, releases, removals and revocations
(many refused), the stored events satisfy balance = grants - debits - settlements - removals - revocations,
and available = balance - open holds.
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.account import CreditAccount
from ledger.account_events import to_us
from ledger.application import Ledger
from ledger.commands import (
    AdjustCredits,
    DebitUsage,
    GrantCredits,
    IdempotencyKey,
    ReleaseReservation,
    ReserveCredits,
    RevokeCredits,
    SettleReservation,
)
from ledger.errors import LedgerError
from ledger.ids import account_id
from tests.conftest import T0

users = itertools.count()

amount = st.integers(min_value=1, max_value=400_000)
step = st.one_of(
    st.tuples(st.just("grant"), amount),
    st.tuples(st.just("debit"), amount),
    st.tuples(st.just("reserve"), amount),
    st.tuples(st.just("settle"), st.integers(min_value=0, max_value=400_000)),
    st.tuples(st.just("release"), st.just(0)),
    st.tuples(st.just("remove"), amount),
    st.tuples(st.just("revoke"), amount),
    st.tuples(st.just("wait"), st.integers(min_value=1, max_value=2_000)),
)


def run(ledger: Ledger, user: str, steps: list[tuple[str, int]]) -> Any:
    now = T0
    holds: list[str] = []
    for n, (kind, value) in enumerate(steps):
        idem = IdempotencyKey("prop", f"{user}-{n}")
        try:
            if kind == "grant":
                ledger.grant_credits(
                    GrantCredits(user_id=user, amount_millicredits=value, source="promotional"),
                    idempotency=idem,
                    now=now,
                )
            elif kind == "debit":
                ledger.debit_usage(DebitUsage(user_id=user, tokens=value), idempotency=idem, now=now)
            elif kind == "reserve":
                receipt = ledger.reserve_credits(
                    ReserveCredits(user_id=user, estimated_tokens=value, ttl_seconds=900),
                    idempotency=idem,
                    now=now,
                )
                holds.append(receipt.reservation_id)
            elif kind == "settle" and holds:
                ledger.settle_reservation(
                    SettleReservation(user_id=user, reservation_id=holds.pop(0), tokens=value),
                    idempotency=idem,
                    now=now,
                )
            elif kind == "release" and holds:
                ledger.release_reservation(
                    ReleaseReservation(user_id=user, reservation_id=holds.pop()), idempotency=idem, now=now
                )
            elif kind == "remove":
                ledger.adjust_credits(
                    AdjustCredits(user_id=user, amount_millicredits=-value, reason="fix", admin_id="a"),
                    idempotency=idem,
                    now=now,
                )
            elif kind == "revoke":
                ledger.revoke_credits(
                    RevokeCredits(user_id=user, amount_millicredits=value, reason="refund", reference="ch_1"),
                    idempotency=idem,
                    now=now,
                )
            elif kind == "wait":
                now += timedelta(seconds=value)
        except LedgerError:
            pass  # Refusals are part of the sequence: they must leave no trace.
    return now


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, min_size=1, max_size=25))
def test_balance_is_what_the_events_say(pg_ledger: Ledger, steps: list[tuple[str, int]]) -> None:
    user = f"prop-{next(users)}"
    now = run(pg_ledger, user, steps)
    events = list(pg_ledger.events.get(account_id(user)))
    if not events:
        return
    credited = sum(e.amount_millicredits for e in events if isinstance(e, CreditAccount.CreditsGranted))
    debited = sum(
        e.amount_millicredits
        for e in events
        if isinstance(
            e,
            CreditAccount.CreditsDebited
            | CreditAccount.ReservationSettled
            | CreditAccount.CreditsRemoved
            | CreditAccount.CreditsRevoked,
        )
    )
    opened = {e.reservation_id: e for e in events if isinstance(e, CreditAccount.CreditsReserved)}
    closed = {
        e.reservation_id
        for e in events
        if isinstance(
            e,
            CreditAccount.ReservationSettled | CreditAccount.ReservationReleased | CreditAccount.ReservationExpired,
        )
    }
    open_holds = sum(
        e.amount_millicredits for rid, e in opened.items() if rid not in closed and e.expires_at_us > to_us(now)
    )
    balance = pg_ledger.get_balance(user, now=now)
    assert balance.balance_millicredits == credited - debited
    assert balance.available_millicredits == balance.balance_millicredits - open_holds
    # A debit or reservation never took the balance below zero; only settlements and revocations may.
    running = 0
    for event in events:
        if isinstance(event, CreditAccount.CreditsGranted):
            running += event.amount_millicredits
        elif isinstance(event, CreditAccount.CreditsDebited | CreditAccount.CreditsRemoved):
            running -= event.amount_millicredits
            assert running >= 0
        elif isinstance(event, CreditAccount.ReservationSettled | CreditAccount.CreditsRevoked):
            running -= event.amount_millicredits
