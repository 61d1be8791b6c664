"""The notifier's state: its tables, and a copy in memory of what they hold.

The rules need each account's balance, holds and armed flags, each user's hourly usage, the checkouts seen
and the billing settings. The tables are the truth, written in each batch's transaction with the batch's
notifications. The copy in memory spares each batch reading back what the batch before it wrote (those
reads, and a write per row, were most of the notifier's cost per debit). It is only ever the tables'
committed rows: the runner has it forgotten after a failed batch (a copy that a rolled-back batch changed
is never used again) and whenever the notifier's position is not the one it left (another worker moved
it; ``projections.runner.Remembering``). Anything not in memory (never read, or dropped to keep within
the bounds) is read from the tables.

Each user's hours are read whole, not only the week a batch looks at, so that the copy is the table's
rows exactly: the hours past the window are then deleted by what the copy holds, with no statement when
there are none.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final
from uuid import UUID

import msgspec
import psycopg
from psycopg.types.json import Jsonb

from ledger.account import CreditAccount
from ledger.config import BillingSettings
from ledger.payments import Checkout, checkout_id
from projections.notices import Notice

ACCOUNT_EVENTS: Final = (
    CreditAccount.Opened,
    CreditAccount.CreditsGranted,
    CreditAccount.CreditsDebited,
    CreditAccount.CreditsReserved,
    CreditAccount.ReservationSettled,
    CreditAccount.ReservationReleased,
    CreditAccount.ReservationExpired,
    CreditAccount.CreditsRemoved,
    CreditAccount.CreditsRevoked,
    CreditAccount.LotExpired,
)
HOUR: Final = timedelta(hours=1)
BASELINE_HOURS: Final = 7 * 24
# The bounds of the copy in memory: accounts, and users' hourly rows (a user keeps up to about 170).
MEMORY_ACCOUNTS: Final = 100_000
MEMORY_USAGE_HOURS: Final = 500_000


@dataclass
class Watch:
    """One account as the notifier sees it."""

    user_id: str
    balance_millicredits: int = 0
    holds: dict[str, int] = field(default_factory=dict)
    low_balance_armed: bool = False
    unusual_armed: bool = True

    @property
    def available_millicredits(self) -> int:
        return self.balance_millicredits - sum(self.holds.values())


@dataclass
class Batch:
    settings: BillingSettings
    live_from: int
    accounts: dict[UUID, Watch] = field(default_factory=dict)
    checkouts: dict[UUID, tuple[str, str, str]] = field(default_factory=dict)  # session, user, package
    new_checkouts: list[tuple[UUID, str, str, str]] = field(default_factory=list)
    # Each user's tokens per hour: every hour the table holds for the users with usage in this batch.
    hours: dict[str, dict[datetime, int]] = field(default_factory=dict)
    touched_hours: set[tuple[str, datetime]] = field(default_factory=set)
    # Each (user, hour)'s week before, summed once per batch and kept up to date as usage is added: summing
    # 168 hours for every usage event was most of the projection process's CPU under load.
    baselines: dict[tuple[str, datetime], int] = field(default_factory=dict)
    baseline_hours: dict[str, list[datetime]] = field(default_factory=dict)
    notices: list[Notice] = field(default_factory=list)
    settings_changed: bool = False


class NotifierState:
    """Loads a batch's state (from memory where it can) and writes it back (to the tables and memory)."""

    def __init__(self, most_accounts: int = MEMORY_ACCOUNTS, most_usage_hours: int = MEMORY_USAGE_HOURS) -> None:
        self.most_accounts = most_accounts
        self.most_usage_hours = most_usage_hours
        self._config: tuple[BillingSettings, int] | None = None
        self._watches: OrderedDict[UUID, Watch] = OrderedDict()
        self._hours: OrderedDict[str, dict[datetime, int]] = OrderedDict()
        # How many hourly rows each user's copy held when last loaded or written, and their sum.
        self._hour_counts: dict[str, int] = {}
        self._usage_hours = 0

    def load(self, conn: psycopg.Connection[Any], events: list[tuple[int, Any]]) -> Batch:
        settings, live_from = self._config or self._load_config(conn)
        batch = Batch(settings=settings, live_from=live_from)
        account_ids = {e.originator_id for _, e in events if isinstance(e, ACCOUNT_EVENTS)}
        unknown = [account for account in account_ids if account not in self._watches]
        if unknown:
            for account, user, balance, holds, low_armed, unusual_armed in conn.execute(
                "SELECT account_id, user_id, balance_millicredits, holds, low_balance_armed, unusual_armed"
                " FROM notifier_accounts WHERE account_id = ANY(%s)",
                (unknown,),
            ):
                self._watches[account] = Watch(user, balance, dict(holds), low_armed, unusual_armed)
        for account in account_ids:
            if (watch := self._watches.get(account)) is not None:
                batch.accounts[account] = watch
        sessions = {checkout_id(e.reference or "") for _, e in events if _names_checkout(e)}
        sessions |= {e.originator_id for _, e in events if isinstance(e, Checkout.PaymentFailed)}
        if sessions:
            for checkout, session, user, package in conn.execute(
                "SELECT checkout_id, session_id, user_id, package_id FROM notifier_checkouts"
                " WHERE checkout_id = ANY(%s)",
                (list(sessions),),
            ):
                batch.checkouts[checkout] = (session, user, package)
        # The users with usage in this batch, those of accounts it opens included.
        owners = {e.originator_id: e.user_id for _, e in events if isinstance(e, CreditAccount.Opened)}
        owners.update((account, watch.user_id) for account, watch in batch.accounts.items())
        users = {owners[account] for account in _usage_accounts(events) if account in owners}
        self._load_hours(conn, [user for user in users if user not in self._hours])
        for user in users:
            batch.hours[user] = self._hours[user]
        return batch

    def write(self, conn: psycopg.Connection[Any], batch: Batch) -> None:
        if batch.accounts:
            watches = list(batch.accounts.items())
            conn.execute(
                "INSERT INTO notifier_accounts (account_id, user_id, balance_millicredits, holds,"
                " low_balance_armed, unusual_armed) SELECT * FROM unnest(%b::uuid[], %b::text[], %b::bigint[],"
                " %b::jsonb[], %b::boolean[], %b::boolean[])"
                " ON CONFLICT (account_id) DO UPDATE SET balance_millicredits = EXCLUDED.balance_millicredits,"
                " holds = EXCLUDED.holds, low_balance_armed = EXCLUDED.low_balance_armed,"
                " unusual_armed = EXCLUDED.unusual_armed",
                (
                    [account for account, _ in watches],
                    [w.user_id for _, w in watches],
                    [w.balance_millicredits for _, w in watches],
                    [Jsonb(w.holds) for _, w in watches],
                    [w.low_balance_armed for _, w in watches],
                    [w.unusual_armed for _, w in watches],
                ),
            )
            for account, watch in watches:
                self._watches[account] = watch
                self._watches.move_to_end(account)
        if batch.new_checkouts:
            conn.cursor().executemany(
                "INSERT INTO notifier_checkouts (checkout_id, session_id, user_id, package_id)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                batch.new_checkouts,
            )
        if batch.touched_hours:
            self._write_hours(conn, batch)
        if batch.settings_changed:
            conn.execute(
                "UPDATE notifier_state SET settings = %s WHERE name = 'all'",
                (Jsonb(msgspec.structs.asdict(batch.settings)),),
            )
        self._config = (batch.settings, batch.live_from)
        self._keep_within_bounds()

    def _load_config(self, conn: psycopg.Connection[Any]) -> tuple[BillingSettings, int]:
        row = conn.execute("SELECT settings, live_from FROM notifier_state WHERE name = 'all' FOR UPDATE").fetchone()
        if row is None:  # A database emptied by hand (the tests): everything in it is new.
            conn.execute("INSERT INTO notifier_state (name, settings, live_from) VALUES ('all', '{}', 0)")
            row = ({}, 0)
        return BillingSettings.from_values(row[0]), row[1]

    def _load_hours(self, conn: psycopg.Connection[Any], users: list[str]) -> None:
        if not users:
            return
        for user in users:
            self._hours[user] = {}
        for user, hour, tokens in conn.execute(
            "SELECT user_id, hour, tokens FROM notifier_usage_hours WHERE user_id = ANY(%s)", (users,)
        ):
            self._hours[user][hour] = tokens
        for user in users:
            self._counted(user)

    def _write_hours(self, conn: psycopg.Connection[Any], batch: Batch) -> None:
        touched = sorted(batch.touched_hours)
        conn.execute(
            "INSERT INTO notifier_usage_hours (user_id, hour, tokens)"
            " SELECT * FROM unnest(%b::text[], %b::timestamptz[], %b::bigint[])"
            " ON CONFLICT (user_id, hour) DO UPDATE SET tokens = EXCLUDED.tokens",
            ([user for user, _ in touched], [hour for _, hour in touched], [batch.hours[u][h] for u, h in touched]),
        )
        # Hours past the baseline's window are of no more use. The copy holds each user's rows exactly, so
        # it names the rows to delete.
        oldest = min(hour for _, hour in touched) - HOUR * (BASELINE_HOURS + 2)
        stale = [(user, hour) for user in {u for u, _ in touched} for hour in batch.hours[user] if hour < oldest]
        if stale:
            conn.execute(
                "DELETE FROM notifier_usage_hours h USING unnest(%b::text[], %b::timestamptz[]) AS s(user_id, hour)"
                " WHERE h.user_id = s.user_id AND h.hour = s.hour",
                ([user for user, _ in stale], [hour for _, hour in stale]),
            )
            for user, hour in stale:
                del batch.hours[user][hour]
        for user in {u for u, _ in touched}:
            self._counted(user)
            self._hours.move_to_end(user)

    def _counted(self, user: str) -> None:
        count = len(self._hours[user])
        self._usage_hours += count - self._hour_counts.get(user, 0)
        self._hour_counts[user] = count

    def _keep_within_bounds(self) -> None:
        while len(self._watches) > self.most_accounts:
            self._watches.popitem(last=False)
        while self._usage_hours > self.most_usage_hours and self._hours:
            user, _ = self._hours.popitem(last=False)
            self._usage_hours -= self._hour_counts.pop(user)

    def forget(self) -> None:
        self._config = None
        self._watches.clear()
        self._hours.clear()
        self._hour_counts.clear()
        self._usage_hours = 0


def purchase_grant(event: Any) -> bool:
    return isinstance(event, CreditAccount.CreditsGranted) and event.source == "purchase" and bool(event.reference)


def _names_checkout(event: Any) -> bool:
    return purchase_grant(event) or isinstance(event, CreditAccount.CreditsRevoked)


def _usage_accounts(events: list[tuple[int, Any]]) -> set[UUID]:
    usage = (CreditAccount.CreditsDebited, CreditAccount.ReservationSettled)
    return {event.originator_id for _, event in events if isinstance(event, usage)}
