"""Which account holds a reservation: a one-event index, saved with the reservation that it names.

Settling or releasing names only the reservation. Its index entry is written in the same transaction
as the ``CreditsReserved`` event, under an id derived from the reservation id, so finding the account
is one primary-key read that can never lag behind the reservation, and never disagree with it.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from ledger.ids import NAMESPACE


def reservation_index_id(reservation_id: str) -> UUID:
    return uuid5(NAMESPACE, "reservation:" + reservation_id)


class ReservationIndex(Aggregate):
    TOPIC = "ledger.ReservationIndex"

    class Indexed(Aggregate.Created):
        TOPIC = "ledger.ReservationIndex.Indexed"
        reservation_id: str
        user_id: str

    class Created(Aggregate.Created):
        """Required by the library once a class has explicit topics; this aggregate never triggers it."""

        TOPIC = "ledger.ReservationIndex.Created"

    reservation_id: str
    user_id: str

    def __init__(self, reservation_id: str, user_id: str) -> None:
        self.reservation_id = reservation_id
        self.user_id = user_id

    @classmethod
    def index(cls, reservation_id: str, user_id: str, now: datetime) -> ReservationIndex:
        entry: ReservationIndex = cls._create(
            cls.Indexed,
            id=reservation_index_id(reservation_id),
            reservation_id=reservation_id,
            user_id=user_id,
            timestamp=now,
        )
        return entry
