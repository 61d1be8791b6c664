"""Grants as lots: what each grant has left, when it expires, and the order usage consumes them in.

A lot is JSON-native (a string-keyed dict), so an account's snapshot carries its lots without custom
codecs. The order is total and stable: the earliest expiry first (a lot that never expires last), promo
before paid at equal expiry, then the oldest grant, then the order the grants were recorded in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypedDict

from ledger.receipts import LotView


class LotKind(StrEnum):
    PAID = "paid"
    PROMO = "promo"


class Lot(TypedDict):
    kind: str
    granted_millicredits: int
    remaining_millicredits: int
    expires_at_us: int | None
    granted_at_us: int
    # The purchase (Checkout Session) a paid lot came from: a refund or dispute of it takes back from here.
    reference: str | None


# What a grant's source makes of it when the grant itself says nothing (grants recorded before lots).
KIND_OF_SOURCE: dict[str, LotKind] = {
    "purchase": LotKind.PAID,
    "dispute": LotKind.PAID,
    "welcome": LotKind.PROMO,
    "promotional": LotKind.PROMO,
    "admin": LotKind.PROMO,
}


def is_open(lot: Lot, now_us: int) -> bool:
    """A lot counts while it has credits left and its expiry has not come (the expiry is exclusive)."""
    expires_at_us = lot["expires_at_us"]
    return lot["remaining_millicredits"] > 0 and (expires_at_us is None or expires_at_us > now_us)


def consumption_order(lots: Mapping[str, Lot], now_us: int | None = None) -> list[str]:
    """The ids of the lots that count at ``now_us`` (all of them when None), in the order usage takes them."""
    ranked = [
        (
            lot["expires_at_us"] is None,
            lot["expires_at_us"] or 0,
            lot["kind"] != LotKind.PROMO,
            lot["granted_at_us"],
            index,
            lot_id,
        )
        for index, (lot_id, lot) in enumerate(lots.items())
        if (now_us is None and lot["remaining_millicredits"] > 0) or (now_us is not None and is_open(lot, now_us))
    ]
    ranked.sort()
    return [key[-1] for key in ranked]


def allocate(lots: Mapping[str, Lot], order: Iterable[str], amount_millicredits: int) -> dict[str, int]:
    """Take ``amount_millicredits`` from the lots in ``order``: lot id to the amount taken from it.

    What the lots cannot cover is left out of the result; the caller records it as debt.
    """
    taken: dict[str, int] = {}
    left = amount_millicredits
    for lot_id in order:
        if left <= 0:
            break
        # An id may come twice (a refund names its purchase's lots first, then every lot): count it once.
        take = min(lots[lot_id]["remaining_millicredits"] - taken.get(lot_id, 0), left)
        if take > 0:
            taken[lot_id] = taken.get(lot_id, 0) + take
            left -= take
    return taken


def due(lots: Mapping[str, Lot], now_us: int) -> list[str]:
    """Lots with credits left whose expiry has come, oldest expiry first."""
    expiring = [
        (lot["expires_at_us"], lot_id)
        for lot_id, lot in lots.items()
        if lot["remaining_millicredits"] > 0 and lot["expires_at_us"] is not None and lot["expires_at_us"] <= now_us
    ]
    expiring.sort()
    return [lot_id for _, lot_id in expiring]


def expired_millicredits(lots: Mapping[str, Lot], now_us: int) -> int:
    """Credits in lots past their expiry whose expiry is not recorded yet: they no longer count."""
    return sum(lots[lot_id]["remaining_millicredits"] for lot_id in due(lots, now_us))


def lot_view(lot_id: str, lot: Lot) -> LotView:
    expires_at_us = lot["expires_at_us"]
    return LotView(
        lot_id=lot_id,
        kind=lot["kind"],
        granted_millicredits=lot["granted_millicredits"],
        remaining_millicredits=lot["remaining_millicredits"],
        expires_at=None if expires_at_us is None else _from_us(expires_at_us),
    )


def _from_us(moment_us: int) -> datetime:
    seconds, micros = divmod(moment_us, 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)
