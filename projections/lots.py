"""Each account's open lots, folded from its events exactly as the account folds them.

The accounts projection loads the lots of a batch's accounts once, applies the batch in memory and writes
back only the lots that changed; ``verify`` folds the whole log with the same code. Anything the events
contradict (a lot taken below zero, an expiry of a lot that is not open) stops the projection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from ledger.account import CreditAccount
from ledger.account_events import from_us, to_us
from ledger.lots import Lot, allocate, consumption_order

# Events that take credits from lots, each naming them (or, recorded before lots, leaving them to the order).
CONSUMING = (
    CreditAccount.CreditsDebited,
    CreditAccount.ReservationSettled,
    CreditAccount.CreditsRemoved,
    CreditAccount.CreditsRevoked,
)


class LotContradictionError(Exception):
    """The events take from a lot more than it has, or expire a lot that is not open."""


@dataclass
class LotBook:
    lots: dict[str, dict[str, Lot]] = field(default_factory=dict)
    # The log position of each lot's grant, the last tie-break of the order; and the lots changed since loading.
    positions: dict[tuple[str, str], int] = field(default_factory=dict)
    changed: set[tuple[str, str]] = field(default_factory=set)

    def load(self, conn: psycopg.Connection[Any], user_ids: list[str] | None) -> None:
        """Load the lots of these users, locked for the batch's write; every user's, unlocked, when None."""
        columns = (
            "user_id, lot_id, kind, granted_millicredits, remaining_millicredits, expires_at, granted_at,"
            " reference, position FROM credit_lots"
        )
        if user_ids is None:
            rows = conn.execute(f"SELECT {columns} ORDER BY position").fetchall()
        else:
            rows = conn.execute(
                f"SELECT {columns} WHERE user_id = ANY(%s) ORDER BY position FOR UPDATE",
                (user_ids,),
            ).fetchall()
        for user_id, lot_id, kind, granted, remaining, expires_at, granted_at, reference, position in rows:
            self.lots.setdefault(user_id, {})[lot_id] = Lot(
                kind=kind,
                granted_millicredits=granted,
                remaining_millicredits=remaining,
                expires_at_us=None if expires_at is None else to_us(expires_at),
                granted_at_us=to_us(granted_at),
                reference=reference,
            )
            self.positions[user_id, lot_id] = position

    def apply(self, user_id: str, event: Any, position: int, balance_before: int) -> None:
        """Apply one account event; ``balance_before`` is the account's balance before it (its debt, if any)."""
        lots = self.lots.setdefault(user_id, {})
        if isinstance(event, CreditAccount.CreditsGranted):
            debt = sum(lot["remaining_millicredits"] for lot in lots.values()) - balance_before
            repaid = event.debt_repaid_millicredits
            if repaid is None:
                repaid = min(max(debt, 0), event.amount_millicredits)
            if event.amount_millicredits > repaid:
                lots[event.grant_id] = Lot(
                    kind=event.kind,
                    granted_millicredits=event.amount_millicredits,
                    remaining_millicredits=event.amount_millicredits - repaid,
                    expires_at_us=event.expires_at_us,
                    granted_at_us=to_us(event.timestamp),
                    reference=event.reference,
                )
                self.positions[user_id, event.grant_id] = position
                self.changed.add((user_id, event.grant_id))
        elif isinstance(event, CONSUMING):
            taken = event.lots
            if taken is None:
                taken = allocate(lots, consumption_order(lots), event.amount_millicredits)
            for lot_id, amount in taken.items():
                lot = lots.get(lot_id)
                if lot is None or lot["remaining_millicredits"] < amount:
                    raise LotContradictionError(f"lot {lot_id} of {user_id} taken past zero at position {position}")
                lot["remaining_millicredits"] -= amount
                self._changed(user_id, lot_id)
        elif isinstance(event, CreditAccount.LotExpired):
            lot = lots.get(event.lot_id)
            if lot is None or lot["remaining_millicredits"] != event.amount_millicredits:
                raise LotContradictionError(f"lot {event.lot_id} of {user_id} expired but not open at {position}")
            lot["remaining_millicredits"] = 0
            self._changed(user_id, event.lot_id)

    def drop(self, user_id: str) -> None:
        """Leave out a user's lots (to be read again when needed)."""
        for lot_id in self.lots.pop(user_id, {}):
            self.positions.pop((user_id, lot_id), None)

    def _changed(self, user_id: str, lot_id: str) -> None:
        if not self.lots[user_id][lot_id]["remaining_millicredits"]:
            del self.lots[user_id][lot_id]
        self.changed.add((user_id, lot_id))

    def write(self, cur: psycopg.Cursor[Any]) -> None:
        """Write the changed lots back: an open one is upserted, one used up or expired is deleted."""
        kept = [(u, i, self.lots[u][i]) for u, i in sorted(self.changed) if i in self.lots.get(u, {})]
        gone = [(u, i) for u, i in sorted(self.changed) if i not in self.lots.get(u, {})]
        for key in gone:
            self.positions.pop(key, None)
        if gone:
            cur.execute(
                "DELETE FROM credit_lots c USING unnest(%b::text[], %b::text[]) AS g(user_id, lot_id)"
                " WHERE c.user_id = g.user_id AND c.lot_id = g.lot_id",
                ([u for u, _ in gone], [i for _, i in gone]),
            )
        if kept:
            cur.execute(
                "INSERT INTO credit_lots (user_id, lot_id, kind, granted_millicredits, remaining_millicredits,"
                " expires_at, granted_at, reference, position) SELECT * FROM unnest(%b::text[], %b::text[],"
                " %b::text[], %b::bigint[], %b::bigint[], %b::timestamptz[], %b::timestamptz[], %b::text[],"
                " %b::bigint[]) ON CONFLICT (user_id, lot_id)"
                " DO UPDATE SET remaining_millicredits = EXCLUDED.remaining_millicredits",
                (
                    [u for u, _, _ in kept],
                    [i for _, i, _ in kept],
                    [lot["kind"] for _, _, lot in kept],
                    [lot["granted_millicredits"] for _, _, lot in kept],
                    [lot["remaining_millicredits"] for _, _, lot in kept],
                    [_moment(lot["expires_at_us"]) for _, _, lot in kept],
                    [from_us(lot["granted_at_us"]) for _, _, lot in kept],
                    [lot["reference"] for _, _, lot in kept],
                    [self.positions[u, i] for u, i, _ in kept],
                ),
            )
        self.changed.clear()


def _moment(moment_us: int | None) -> datetime | None:
    return None if moment_us is None else from_us(moment_us)
