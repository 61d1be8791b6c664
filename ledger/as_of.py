"""An account as it was at an instant, and its statement between two instants, read from its events.

An account's state at an instant is its state after its last event at or before that instant, evaluated
with that instant as ``now``: a hold past its expiry counts as released then, whether or not its expiry
was recorded yet. Versions are found by a binary search over the account's events (one primary-key read
each, about 17 for 100,000 events, in one query on PostgreSQL), and the account is then loaded at that
version from its newest snapshot at or before it (one every 200 events), so the cost barely grows with the
account's history.

The search takes event times to grow with versions, as they do: each command's ``now`` is later than the
last one's. Should two servers' clocks disagree, an event stored after another may carry an earlier time;
the search then places the instant between two neighbouring events, never inside one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, Final

import msgspec

from ledger.account import CreditAccount
from ledger.ids import account_id

ONE_MICROSECOND: Final = timedelta(microseconds=1)
# Kinds of movement that hold or free credits without changing the balance.
NOT_MOVING_BALANCE: Final = frozenset({"reservation", "release"})
GRANT_KINDS: Final = {
    "purchase": "purchase",
    "welcome": "grant",
    "promotional": "grant",
    "admin": "adjustment",
    "dispute": "dispute",
}


def expiry_id(lot_id: str) -> str:
    """The history item of a lot's expiry (a lot expires once)."""
    return f"expiry:{lot_id}"


class AccountAsOf(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    balance_millicredits: int
    reserved_millicredits: int
    available_millicredits: int
    as_of: datetime
    version: int


class Movement(msgspec.Struct, frozen=True, kw_only=True):
    """One line of a statement, as the history shows it."""

    id: str
    kind: str
    amount_millicredits: int
    balance_after_millicredits: int
    occurred_at: datetime
    reference: str | None
    description: str | None


class Statement(msgspec.Struct, frozen=True, kw_only=True):
    """Movements in ``[start, end)``, oldest first; the balance-moving ones add up from opening to closing."""

    user_id: str
    start: datetime
    end: datetime
    opening_balance_millicredits: int
    closing_balance_millicredits: int
    movements: list[Movement]


class StatementMismatchError(Exception):
    """An event moved the balance by an amount no movement shows: the statement would not add up."""


# The binary search, in one round trip: each step reads one event's time through the primary key. Event
# states are the mapper's plain JSON (no compressor or cipher is configured), so PostgreSQL reads the time.
_SEARCH_SQL = """
WITH RECURSIVE search(low, high) AS (
    SELECT 0::bigint, coalesce((SELECT max(originator_version) FROM {table} WHERE originator_id = %(id)s), 0)
    UNION ALL
    SELECT CASE WHEN probe.at <= %(moment)s THEN probe.middle ELSE s.low END,
           CASE WHEN probe.at <= %(moment)s THEN s.high ELSE probe.middle - 1 END
    FROM search AS s
    CROSS JOIN LATERAL (
        SELECT e.originator_version AS middle,
               (convert_from(e.state, 'UTF8')::json ->> 'timestamp')::timestamptz AS at
        FROM {table} AS e
        WHERE e.originator_id = %(id)s AND e.originator_version = (s.low + s.high + 1) / 2
    ) AS probe
    WHERE s.low < s.high
)
SELECT low FROM search WHERE low = high
"""


class AccountHistory:
    """One account's past, read from its events through the application that wrote them."""

    def __init__(self, app: Any, user_id: str) -> None:
        self.app = app
        self.repository = app.repository
        self.user_id = user_id
        self.id = account_id(user_id)

    def version_at(self, moment: datetime) -> int:
        """The account's last version at or before ``moment`` (0: it did not exist yet)."""
        datastore = getattr(self.app.recorder, "datastore", None)
        if datastore is not None and not (self.app.mapper.compressor or self.app.mapper.cipher):
            query = _SEARCH_SQL.format(table=self.app.recorder.events_table_name)
            with datastore.transaction(commit=False) as cursor:
                cursor.execute(query, {"id": self.id, "moment": moment})
                row = cursor.fetchone()
            return int(row["low"]) if row else 0
        newest = list(self.repository.event_store.get(self.id, desc=True, limit=1))
        latest = newest[0].originator_version if newest else 0
        return last_version_at(latest, self._time_of, moment)

    def account(self, version: int) -> CreditAccount | None:
        """The account at ``version``, from the newest snapshot at or before it (a fresh copy, never cached)."""
        if version == 0:
            return None
        account: CreditAccount = self.repository.get(self.id, version=version)
        return account

    def as_of(self, moment: datetime) -> AccountAsOf:
        return as_of(self.user_id, self.account(self.version_at(moment)), moment)

    def statement(self, start: datetime, end: datetime) -> Statement:
        """Movements in ``[start, end)``: the opening balance is the one just before ``start``, the closing one
        just before ``end``, so one statement's closing is the next one's opening."""
        first = self.version_at(start - ONE_MICROSECOND)
        last = self.version_at(end - ONE_MICROSECOND)
        events = self.repository.event_store.get(self.id, gt=first, lte=last) if last > first else []
        return statement(self.user_id, self.account(first), events, start=start, end=end)

    def _time_of(self, version: int) -> datetime:
        (event,) = self.repository.event_store.get(self.id, gt=version - 1, lte=version, limit=1)
        moment: datetime = event.timestamp
        return moment


def last_version_at(latest: int, time_of: Callable[[int], datetime], moment: datetime) -> int:
    """The highest version in ``1..latest`` whose event happened at or before ``moment`` (0: none did)."""
    low, high = 0, latest
    while low < high:
        middle = (low + high + 1) // 2
        if time_of(middle) <= moment:
            low = middle
        else:
            high = middle - 1
    return low


def as_of(user_id: str, account: CreditAccount | None, moment: datetime) -> AccountAsOf:
    if account is None:
        return AccountAsOf(
            user_id=user_id,
            balance_millicredits=0,
            reserved_millicredits=0,
            available_millicredits=0,
            as_of=moment,
            version=0,
        )
    reserved = account.reserved_millicredits(moment)
    balance = account.balance_at(moment)
    return AccountAsOf(
        user_id=user_id,
        balance_millicredits=balance,
        reserved_millicredits=reserved,
        available_millicredits=balance - reserved,
        as_of=moment,
        version=account.version,
    )


def statement(
    user_id: str, opening: CreditAccount | None, events: Iterable[Any], *, start: datetime, end: datetime
) -> Statement:
    """Fold ``events`` (the account's events in the period, in order) onto ``opening`` (its state before it)."""
    account = opening
    opening_balance = account.balance_millicredits if account is not None else 0
    balance = opening_balance
    movements: list[Movement] = []
    for event in events:
        account = event.mutate(account)
        after = account.balance_millicredits if account is not None else 0
        lines = movements_of(event, after)
        moved = sum(line.amount_millicredits for line in lines if line.kind not in NOT_MOVING_BALANCE)
        if balance + moved != after:
            raise StatementMismatchError(f"{type(event).__name__} at version {event.originator_version}")
        balance = after
        movements.extend(lines)
    return Statement(
        user_id=user_id,
        start=start,
        end=end,
        opening_balance_millicredits=opening_balance,
        closing_balance_millicredits=balance,
        movements=movements,
    )


def movements_of(event: Any, balance_after: int) -> list[Movement]:  # noqa: PLR0911 - one return per event type.
    """The history's lines for one account event (the accounts projection writes the same ones)."""

    def line(movement_id: str, kind: str, amount: int, reference: str | None, description: str | None) -> Movement:
        return Movement(
            id=movement_id,
            kind=kind,
            amount_millicredits=amount,
            balance_after_millicredits=balance_after,
            occurred_at=event.timestamp,
            reference=reference,
            description=description,
        )

    if isinstance(event, CreditAccount.CreditsGranted):
        kind = GRANT_KINDS[event.source]
        return [line(event.grant_id, kind, event.amount_millicredits, event.reference, event.description)]
    if isinstance(event, CreditAccount.CreditsDebited):
        return [line(event.debit_id, "debit", -event.amount_millicredits, event.analysis_id, event.model)]
    if isinstance(event, CreditAccount.CreditsReserved):
        return [line(event.reservation_id, "reservation", -event.amount_millicredits, event.analysis_id, None)]
    if isinstance(event, CreditAccount.ReservationSettled):
        return [line(event.reservation_id, "settlement", -event.amount_millicredits, None, event.model)]
    if isinstance(event, CreditAccount.ReservationReleased | CreditAccount.ReservationExpired):
        description = "expired" if isinstance(event, CreditAccount.ReservationExpired) else None
        return [line(event.reservation_id, "release", event.released_millicredits, None, description)]
    if isinstance(event, CreditAccount.CreditsRemoved):
        return [line(event.adjustment_id, "adjustment", -event.amount_millicredits, event.removed_by, event.reason)]
    if isinstance(event, CreditAccount.CreditsRevoked):
        return [line(event.revocation_id, event.reason, -event.amount_millicredits, event.reference, None)]
    if isinstance(event, CreditAccount.LotExpired):
        return [line(expiry_id(event.lot_id), "expiry", -event.amount_millicredits, event.lot_id, event.kind)]
    return []
