"""The rows one batch of the accounts projection changes, and how they are written back.

``projections.accounts`` applies a batch's events to these rows in memory; ``write`` writes them in the
batch's transaction, a statement per view for all of the batch's rows (arrays in binary, or COPY for the
rows that are only appended).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any
from uuid import UUID

import psycopg

from projections.lots import LotBook


@dataclass(slots=True)
class BalanceRow:
    user_id: str
    account_id: UUID
    balance: int = 0
    reserved: int = 0
    purchased: int = 0
    used: int = 0
    updated_at: datetime | None = None
    position: int = 0
    # What the view held before this batch (None for an account first seen in it), for the totals.
    stored: tuple[int, int] | None = None
    stored_at: datetime | None = None


@dataclass
class NewHold:
    user_id: str
    held_millicredits: int
    expires_at: datetime


class StoredHold(Enum):
    """What a batch does with a hold row it closes."""

    NONE = "opened and closed in this batch: no row"
    DELETE = "closed: delete its row"


@dataclass
class Rollup:
    """One bucket's change in a batch."""

    tokens: int = 0
    amount_millicredits: int = 0
    events: int = 0
    analyses: int = 0
    expired_millicredits: int = 0


@dataclass
class Batch:
    balances: dict[UUID, BalanceRow] = field(default_factory=dict)
    new_holds: dict[str, NewHold] = field(default_factory=dict)
    # The holds of the batch's closing events as the view held them (their amounts), then what to do with
    # each row once closed.
    open_holds: dict[str, int] = field(default_factory=dict)
    closed_holds: dict[str, StoredHold] = field(default_factory=dict)
    history: list[tuple[Any, ...]] = field(default_factory=list)
    usage: list[tuple[Any, ...]] = field(default_factory=list)
    rollups: dict[tuple[str, str, datetime], Rollup] = field(default_factory=dict)
    lots: LotBook = field(default_factory=LotBook)
    # Analyses already counted: in the view before this batch, or earlier in it.
    analyses: set[str] = field(default_factory=set)

    def buckets(self, user_id: str, at: datetime) -> tuple[Rollup, ...]:
        """The roll-ups a movement at ``at`` counts in: the user's and the system's (``''``), hourly and daily."""
        hour = hour_of(at)
        day = hour.replace(hour=0)
        found = []
        for key in ((user_id, "hour", hour), (user_id, "day", day), ("", "hour", hour), ("", "day", day)):
            rollup = self.rollups.get(key)
            if rollup is None:
                rollup = self.rollups[key] = Rollup()
            found.append(rollup)
        return tuple(found)


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def write(conn: psycopg.Connection[Any], batch: Batch) -> int:
    """Write a batch's rows back in the caller's transaction. Returns how many balance rows the batch
    found (in the view, or in memory) that the view no longer holds: a contradiction for the caller."""
    with conn.cursor() as cur:
        circulation, with_balance, reserved = _totals_change(batch.balances.values())
        # The row is created empty first: a CHECK applies to an INSERT's proposed row even when it
        # turns into an update, and a batch's change may well be negative.
        cur.execute("INSERT INTO account_totals VALUES ('all', 0, 0, 0) ON CONFLICT (name) DO NOTHING")
        cur.execute(
            "UPDATE account_totals SET"
            " credits_in_circulation_millicredits = credits_in_circulation_millicredits + %s,"
            " users_with_balance = users_with_balance + %s, reserved_millicredits = reserved_millicredits + %s"
            " WHERE name = 'all'",
            (circulation, with_balance, reserved),
        )
        rows = list(batch.balances.values())
        missing = _write_balances(cur, rows)
        gained, lost = _activity_change(rows)
        if gained:
            cur.execute(
                "INSERT INTO account_activity (hour, accounts)"
                " SELECT * FROM unnest(%b::timestamptz[], %b::bigint[])"
                " ON CONFLICT (hour) DO UPDATE SET accounts = account_activity.accounts + EXCLUDED.accounts",
                (list(gained), list(gained.values())),
            )
        if lost:
            # An hour no account is left in goes, so the rows do not depend on how the log was batched.
            cur.execute(
                "WITH lost (hour, accounts) AS (SELECT * FROM unnest(%b::timestamptz[], %b::bigint[])),"
                " emptied AS (DELETE FROM account_activity a USING lost"
                "  WHERE a.hour = lost.hour AND a.accounts = lost.accounts)"
                " UPDATE account_activity a SET accounts = a.accounts - lost.accounts FROM lost"
                " WHERE a.hour = lost.hour AND a.accounts <> lost.accounts",
                (list(lost), list(lost.values())),
            )
        if batch.new_holds:
            cur.executemany(
                "INSERT INTO credit_holds (reservation_id, user_id, held_millicredits, expires_at)"
                " VALUES (%s, %s, %s, %s)",
                [(rid, hold.user_id, hold.held_millicredits, hold.expires_at) for rid, hold in batch.new_holds.items()],
            )
        to_delete = [rid for rid, stored in batch.closed_holds.items() if stored is StoredHold.DELETE]
        if to_delete:
            cur.execute("DELETE FROM credit_holds WHERE reservation_id = ANY(%s)", (to_delete,))
        if batch.history:
            with cur.copy(
                "COPY credit_transactions (position, seq, id, user_id, kind, amount_millicredits,"
                " balance_after_millicredits, occurred_at, reference, description) FROM STDIN"
            ) as copy:
                for record in batch.history:
                    copy.write_row(record)
        if batch.usage:
            with cur.copy(
                "COPY token_usage_logs (position, user_id, usage_id, tokens, input_tokens, output_tokens,"
                " model, agent_id, analysis_id, amount_millicredits, tokens_per_credit, occurred_at)"
                " FROM STDIN"
            ) as copy:
                for record in batch.usage:
                    copy.write_row(record)
        batch.lots.write(cur)
        if batch.rollups:
            keys = sorted(batch.rollups)
            cur.execute(
                "INSERT INTO usage_rollups (user_id, granularity, bucket_start, tokens, amount_millicredits,"
                " events, analyses, expired_millicredits) SELECT * FROM unnest(%b::text[], %b::text[],"
                " %b::timestamptz[], %b::bigint[], %b::bigint[], %b::bigint[], %b::bigint[], %b::bigint[])"
                " ON CONFLICT (user_id, granularity, bucket_start)"
                " DO UPDATE SET tokens = usage_rollups.tokens + EXCLUDED.tokens,"
                " amount_millicredits = usage_rollups.amount_millicredits + EXCLUDED.amount_millicredits,"
                " events = usage_rollups.events + EXCLUDED.events,"
                " analyses = usage_rollups.analyses + EXCLUDED.analyses,"
                " expired_millicredits = usage_rollups.expired_millicredits + EXCLUDED.expired_millicredits",
                (
                    [key[0] for key in keys],
                    [key[1] for key in keys],
                    [key[2] for key in keys],
                    [batch.rollups[key].tokens for key in keys],
                    [batch.rollups[key].amount_millicredits for key in keys],
                    [batch.rollups[key].events for key in keys],
                    [batch.rollups[key].analyses for key in keys],
                    [batch.rollups[key].expired_millicredits for key in keys],
                ),
            )
    return missing


def _write_balances(cur: psycopg.Cursor[Any], rows: list[BalanceRow]) -> int:
    """One statement for the rows the view holds and one for the accounts opened in the batch (arrays, in
    binary): a statement per row cost the projection worker and the database more than the rows themselves.
    Returns how many of the rows to update were not there."""
    held = [r for r in rows if r.stored is not None]
    opened = [r for r in rows if r.stored is None]
    updated = 0
    if held:
        cur.execute(
            "UPDATE user_credits AS c SET balance_millicredits = r.balance, reserved_millicredits = r.reserved,"
            " lifetime_purchased_millicredits = r.purchased, lifetime_used_millicredits = r.used,"
            " updated_at = r.updated_at, position = r.position"
            " FROM unnest(%b::uuid[], %b::bigint[], %b::bigint[], %b::bigint[], %b::bigint[], %b::timestamptz[],"
            " %b::bigint[]) AS r(account_id, balance, reserved, purchased, used, updated_at, position)"
            " WHERE c.account_id = r.account_id",
            _balance_columns(held),
        )
        updated = cur.rowcount
    if opened:
        cur.execute(
            "INSERT INTO user_credits (user_id, account_id, balance_millicredits, reserved_millicredits,"
            " lifetime_purchased_millicredits, lifetime_used_millicredits, updated_at, position)"
            " SELECT * FROM unnest(%b::text[], %b::uuid[], %b::bigint[], %b::bigint[], %b::bigint[],"
            " %b::bigint[], %b::timestamptz[], %b::bigint[])",
            ([r.user_id for r in opened], *_balance_columns(opened)),
        )
    return len(held) - updated


def _balance_columns(rows: list[BalanceRow]) -> tuple[list[Any], ...]:
    """The rows' values column by column, from ``account_id`` to ``position`` in the table's order."""
    return (
        [r.account_id for r in rows],
        [r.balance for r in rows],
        [r.reserved for r in rows],
        [r.purchased for r in rows],
        [r.used for r in rows],
        [r.updated_at for r in rows],
        [r.position for r in rows],
    )


def _activity_change(rows: Iterable[BalanceRow]) -> tuple[dict[datetime, int], dict[datetime, int]]:
    """How a batch moves the accounts between the hours of their last movement: gained, lost per hour."""
    change: dict[datetime, int] = {}
    for row in rows:
        if row.stored_at is not None:
            before = hour_of(row.stored_at.astimezone(UTC))
            change[before] = change.get(before, 0) - 1
        if row.updated_at is not None:
            after = hour_of(row.updated_at.astimezone(UTC))
            change[after] = change.get(after, 0) + 1
    gained = {hour: n for hour, n in sorted(change.items()) if n > 0}
    lost = {hour: -n for hour, n in sorted(change.items()) if n < 0}
    return gained, lost


def _totals_change(rows: Iterable[BalanceRow]) -> tuple[int, int, int]:
    """How a batch moves the totals: circulation counts positive balances only (see migration 0003)."""
    circulation = with_balance = reserved = 0
    for row in rows:
        old_balance, old_reserved = row.stored or (0, 0)
        circulation += max(row.balance, 0) - max(old_balance, 0)
        with_balance += (row.balance > 0) - (old_balance > 0)
        reserved += row.reserved - old_reserved
    return circulation, with_balance, reserved
