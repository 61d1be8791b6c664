"""The accounts projection: balances, open holds, history, usage rows and roll-ups, at one position.

These views are kept by one projection because they must agree with each other: a history row's
``balance_after_millicredits`` is the balance row at that position, and a roll-up is the sum of its
usage rows. A batch of events is applied in memory to the rows it touches, then written back in one
transaction together with the new position. Anything the events contradict (an unknown account, a
hold that was never opened) stops the projection: a view is never silently wrong.

An analysis is counted once in the roll-ups (their ``analyses``), in the buckets of its first usage in the
log and for that usage's user: the admin stats then sum a month of hourly rows instead of counting the
distinct analyses of a month of usage rows. Whether an analysis was seen before is one probe per analysis
of the batch into the usage rows' analysis index (migration 0008). For the same reason ``account_activity``
counts the accounts by the hour of their last movement (migration 0009).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any
from uuid import UUID

import psycopg

from ledger.account import CreditAccount
from ledger.account_events import from_us
from ledger.as_of import expiry_id
from projections.lots import LotBook, LotContradictionError


class ProjectionError(Exception):
    """An event the projection cannot apply. The projection stops; nothing of the batch is written."""


@dataclass
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


GRANT_KINDS = {
    "purchase": "purchase",
    "welcome": "grant",
    "promotional": "grant",
    "admin": "adjustment",
    "dispute": "dispute",
}


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _day(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


class AccountsProjection:
    name = "accounts"
    tables: tuple[str, ...] = (
        "account_totals",
        "user_credits",
        "credit_holds",
        "credit_transactions",
        "token_usage_logs",
        "usage_rollups",
        "account_activity",
        "credit_lots",
    )
    topic_prefix: str | tuple[str, ...] = "ledger.CreditAccount."

    def apply(self, conn: psycopg.Connection[Any], events: list[tuple[int, Any]]) -> None:
        batch = Batch()
        self._load(conn, batch, events)
        for position, event in events:
            self._apply_one(batch, position, event)
        self._write(conn, batch)

    def _load(self, conn: psycopg.Connection[Any], batch: Batch, events: list[tuple[int, Any]]) -> None:
        ids = list({event.originator_id for _, event in events})
        rows = conn.execute(
            "SELECT user_id, account_id, balance_millicredits, reserved_millicredits,"
            " lifetime_purchased_millicredits, lifetime_used_millicredits, updated_at, position"
            " FROM user_credits WHERE account_id = ANY(%b) FOR UPDATE",
            (ids,),
        ).fetchall()
        for row in rows:
            balance_row = BalanceRow(*row)
            balance_row.stored = (balance_row.balance, balance_row.reserved)
            balance_row.stored_at = balance_row.updated_at
            batch.balances[row[1]] = balance_row
        batch.lots.load(conn, [row[0] for row in rows])
        closing = [
            e.reservation_id
            for _, e in events
            if isinstance(
                e,
                CreditAccount.ReservationSettled | CreditAccount.ReservationReleased | CreditAccount.ReservationExpired,
            )
        ]
        if closing:
            held = conn.execute(
                "SELECT reservation_id, held_millicredits FROM credit_holds WHERE reservation_id = ANY(%s)",
                (closing,),
            ).fetchall()
            batch.open_holds.update(dict(held))
        analyses = list({e.analysis_id for _, e in events if isinstance(e, CreditAccount.CreditsDebited)} - {None})
        if analyses:
            seen = conn.execute(
                "SELECT a FROM unnest(%s::text[]) AS a"
                " WHERE EXISTS (SELECT 1 FROM token_usage_logs WHERE analysis_id = a)",
                (analyses,),
            ).fetchall()
            batch.analyses.update(a for (a,) in seen)

    def _apply_one(self, batch: Batch, position: int, event: Any) -> None:  # noqa: C901, PLR0912, PLR0915
        at: datetime = event.timestamp
        if isinstance(event, CreditAccount.Opened):
            if event.originator_id in batch.balances:
                raise ProjectionError(f"account {event.originator_id} opened twice (position {position})")
            batch.balances[event.originator_id] = BalanceRow(
                user_id=event.user_id, account_id=event.originator_id, updated_at=at, position=position
            )
            return
        row = batch.balances.get(event.originator_id)
        if row is None:
            raise ProjectionError(f"event at position {position} for an account never opened")
        row.updated_at, row.position = at, position
        try:
            batch.lots.apply(row.user_id, event, position, row.balance)
        except LotContradictionError as contradiction:
            raise ProjectionError(str(contradiction)) from contradiction

        def history(
            seq: int, movement_id: str, kind: str, amount: int, reference: str | None, description: str | None
        ) -> None:
            batch.history.append(
                (
                    position,
                    seq,
                    movement_id,
                    row.user_id,
                    kind,
                    amount,
                    row.balance,
                    at,
                    reference,
                    description,
                )
            )

        if isinstance(event, CreditAccount.CreditsGranted):
            row.balance += event.amount_millicredits
            if event.source == "purchase":
                row.purchased += event.amount_millicredits
            history(
                0,
                event.grant_id,
                GRANT_KINDS[event.source],
                event.amount_millicredits,
                event.reference,
                event.description,
            )
        elif isinstance(event, CreditAccount.CreditsDebited):
            row.balance -= event.amount_millicredits
            row.used += event.amount_millicredits
            history(0, event.debit_id, "debit", -event.amount_millicredits, event.analysis_id, event.model)
            self._usage(batch, position, row.user_id, event.debit_id, event, event.occurred_at)
        elif isinstance(event, CreditAccount.CreditsReserved):
            row.reserved += event.amount_millicredits
            batch.new_holds[event.reservation_id] = NewHold(
                user_id=row.user_id,
                held_millicredits=event.amount_millicredits,
                expires_at=from_us(event.expires_at_us),
            )
            history(0, event.reservation_id, "reservation", -event.amount_millicredits, event.analysis_id, None)
        elif isinstance(event, CreditAccount.ReservationSettled):
            held = self._close(batch, event.reservation_id, position)
            row.reserved -= held
            row.balance -= event.amount_millicredits
            row.used += event.amount_millicredits
            history(0, event.reservation_id, "settlement", -event.amount_millicredits, None, event.model)
            self._usage(batch, position, row.user_id, event.reservation_id, event, at)
        elif isinstance(event, CreditAccount.ReservationReleased | CreditAccount.ReservationExpired):
            held = self._close(batch, event.reservation_id, position)
            row.reserved -= held
            description = "expired" if isinstance(event, CreditAccount.ReservationExpired) else None
            history(0, event.reservation_id, "release", held, None, description)
        elif isinstance(event, CreditAccount.CreditsRemoved):
            row.balance -= event.amount_millicredits
            history(
                0,
                event.adjustment_id,
                "adjustment",
                -event.amount_millicredits,
                event.removed_by,
                event.reason,
            )
        elif isinstance(event, CreditAccount.CreditsRevoked):
            row.balance -= event.amount_millicredits
            history(0, event.revocation_id, event.reason, -event.amount_millicredits, event.reference, None)
        elif isinstance(event, CreditAccount.LotExpired):
            row.balance -= event.amount_millicredits
            history(0, expiry_id(event.lot_id), "expiry", -event.amount_millicredits, event.lot_id, event.kind)
            for who in (row.user_id, ""):
                for granularity, start in (("hour", _hour(at)), ("day", _day(at))):
                    rollup = batch.rollups.setdefault((who, granularity, start), Rollup())
                    rollup.expired_millicredits += event.amount_millicredits
        elif isinstance(event, CreditAccount.Initialized):
            pass
        else:
            raise ProjectionError(f"unknown account event {type(event).__name__} at position {position}")
        if row.reserved < 0:
            raise ProjectionError(f"reserved credits of {row.user_id} below zero at position {position}")

    def _close(self, batch: Batch, reservation_id: str, position: int) -> int:
        if reservation_id in batch.new_holds:
            batch.closed_holds[reservation_id] = StoredHold.NONE
            return batch.new_holds.pop(reservation_id).held_millicredits
        if reservation_id not in batch.open_holds or reservation_id in batch.closed_holds:
            raise ProjectionError(f"reservation {reservation_id} closed but not open (position {position})")
        batch.closed_holds[reservation_id] = StoredHold.DELETE
        return batch.open_holds[reservation_id]

    def _usage(self, batch: Batch, position: int, user_id: str, usage_id: str, event: Any, at: datetime) -> None:
        analysis_id: str | None = getattr(event, "analysis_id", None)
        started = analysis_id is not None and analysis_id not in batch.analyses
        if analysis_id is not None:
            batch.analyses.add(analysis_id)
        batch.usage.append(
            (
                position,
                user_id,
                usage_id,
                event.tokens,
                event.input_tokens,
                event.output_tokens,
                event.model,
                getattr(event, "agent_id", None),
                analysis_id,
                event.amount_millicredits,
                event.tokens_per_credit,
                at,
            )
        )
        for who in (user_id, ""):
            for granularity, start in (("hour", _hour(at)), ("day", _day(at))):
                rollup = batch.rollups.setdefault((who, granularity, start), Rollup())
                rollup.tokens += event.tokens
                rollup.amount_millicredits += event.amount_millicredits
                rollup.events += 1
                rollup.analyses += started

    def _write(self, conn: psycopg.Connection[Any], batch: Batch) -> None:
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
            # One statement for all the batch's rows (arrays, in binary): a statement per row cost the
            # projection worker and the database more than the rows themselves.
            rows = list(batch.balances.values())
            cur.execute(
                "INSERT INTO user_credits (user_id, account_id, balance_millicredits, reserved_millicredits,"
                " lifetime_purchased_millicredits, lifetime_used_millicredits, updated_at, position)"
                " SELECT * FROM unnest(%b::text[], %b::uuid[], %b::bigint[], %b::bigint[], %b::bigint[],"
                " %b::bigint[], %b::timestamptz[], %b::bigint[])"
                " ON CONFLICT (user_id) DO UPDATE SET"
                " balance_millicredits = EXCLUDED.balance_millicredits,"
                " reserved_millicredits = EXCLUDED.reserved_millicredits,"
                " lifetime_purchased_millicredits = EXCLUDED.lifetime_purchased_millicredits,"
                " lifetime_used_millicredits = EXCLUDED.lifetime_used_millicredits,"
                " updated_at = EXCLUDED.updated_at, position = EXCLUDED.position",
                (
                    [r.user_id for r in rows],
                    [r.account_id for r in rows],
                    [r.balance for r in rows],
                    [r.reserved for r in rows],
                    [r.purchased for r in rows],
                    [r.used for r in rows],
                    [r.updated_at for r in rows],
                    [r.position for r in rows],
                ),
            )
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
                    [
                        (rid, hold.user_id, hold.held_millicredits, hold.expires_at)
                        for rid, hold in batch.new_holds.items()
                    ],
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


def _activity_change(rows: Iterable[BalanceRow]) -> tuple[dict[datetime, int], dict[datetime, int]]:
    """How a batch moves the accounts between the hours of their last movement: gained, lost per hour."""
    change: dict[datetime, int] = {}
    for row in rows:
        if row.stored_at is not None:
            before = _hour(row.stored_at.astimezone(UTC))
            change[before] = change.get(before, 0) - 1
        if row.updated_at is not None:
            after = _hour(row.updated_at.astimezone(UTC))
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
