"""The accounts projection: balances, open holds, history, usage rows and roll-ups, at one position.

These views are kept by one projection because they must agree with each other: a history row's
``balance_after_millicredits`` is the balance row at that position, and a roll-up is the sum of its
usage rows. A batch of events is applied in memory to the rows it touches (``projections.account_rows``),
then written back in one transaction together with the new position. Anything the events contradict (an
unknown account, a hold that was never opened) stops the projection: a view is never silently wrong.

An analysis is counted once in the roll-ups (their ``analyses``), in the buckets of its first usage in the
log and for that usage's user: the admin stats then sum a month of hourly rows instead of counting the
distinct analyses of a month of usage rows. Whether an analysis was seen before is one probe per analysis
of the batch into the usage rows' analysis index (migration 0008). For the same reason ``account_activity``
counts the accounts by the hour of their last movement (migration 0009).
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from typing import Any, Final
from uuid import UUID

import psycopg

from ledger.account import CreditAccount
from ledger.account_events import from_us
from ledger.as_of import expiry_id
from projections.account_rows import BalanceRow, Batch, NewHold, StoredHold, write
from projections.lots import LotBook, LotContradictionError

# The bound of the copy in memory (see ``AccountsProjection``): accounts, each with its user's open lots,
# about 1.2 KB an account with one lot (measured with tracemalloc), so about 60 MB when full.
MEMORY_ACCOUNTS: Final = 50_000


class ProjectionError(Exception):
    """An event the projection cannot apply. The projection stops; nothing of the batch is written."""


GRANT_KINDS = {
    "purchase": "purchase",
    "welcome": "grant",
    "promotional": "grant",
    "admin": "adjustment",
    "dispute": "dispute",
}


class AccountsProjection:
    """The rules and the loading of the accounts views (``projections.account_rows`` writes them).

    The balance rows and open lots a batch writes are kept in memory, up to ``most_accounts`` accounts (the
    least recently moved go first), so that the next batch on the same accounts does not read them back:
    those reads were a third of the projection's own statements per debit. The copy is only ever the
    tables' committed rows: the runner has it forgotten after a failed batch and whenever the position is
    not the one it left (``projections.runner.Remembering``); anything not in memory is read.
    """

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

    def __init__(self, most_accounts: int = MEMORY_ACCOUNTS) -> None:
        self.most_accounts = most_accounts
        self._rows: OrderedDict[UUID, BalanceRow] = OrderedDict()
        self._lots = LotBook()

    def forget(self) -> None:
        self._rows.clear()
        self._lots = LotBook()

    def apply(self, conn: psycopg.Connection[Any], events: list[tuple[int, Any]]) -> None:
        batch = Batch(lots=self._lots)
        self._load(conn, batch, events)
        for position, event in events:
            self._apply_one(batch, position, event)
        missing = write(conn, batch)
        if missing:
            raise ProjectionError(f"{missing} balance row(s) of this batch's accounts gone from the view")
        self._keep(batch)

    def _load(self, conn: psycopg.Connection[Any], batch: Batch, events: list[tuple[int, Any]]) -> None:
        ids = list({event.originator_id for _, event in events})
        unknown = [account_id for account_id in ids if account_id not in self._rows]
        if unknown:
            rows = conn.execute(
                "SELECT user_id, account_id, balance_millicredits, reserved_millicredits,"
                " lifetime_purchased_millicredits, lifetime_used_millicredits, updated_at, position"
                " FROM user_credits WHERE account_id = ANY(%b) FOR UPDATE",
                (unknown,),
            ).fetchall()
            for row in rows:
                self._rows[row[1]] = BalanceRow(*row)
            # A user has one account: its lots come into memory with it.
            self._lots.load(conn, [row[0] for row in rows])
        for account_id in ids:
            balance_row = self._rows.get(account_id)
            if balance_row is not None:
                balance_row.stored = (balance_row.balance, balance_row.reserved)
                balance_row.stored_at = balance_row.updated_at
                batch.balances[account_id] = balance_row
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

    def _keep(self, batch: Batch) -> None:
        """Keep the batch's rows in memory (its accounts opened included), within the bound."""
        for account_id, balance_row in batch.balances.items():
            self._rows[account_id] = balance_row
            self._rows.move_to_end(account_id)
        while len(self._rows) > self.most_accounts:
            _, dropped = self._rows.popitem(last=False)
            self._lots.drop(dropped.user_id)

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
            for rollup in batch.buckets(row.user_id, at):
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
        for rollup in batch.buckets(user_id, at):
            rollup.tokens += event.tokens
            rollup.amount_millicredits += event.amount_millicredits
            rollup.events += 1
            rollup.analyses += started
