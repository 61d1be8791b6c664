"""Which account holds a reservation: a one-event index, saved with the reservation that it names.

Settling or releasing names only the reservation. Its index entry is written in the same transaction
as the ``CreditsReserved`` event, under an id derived from the reservation id, so finding the account
is one primary-key read that can never lag behind the reservation, and never disagree with it.

A process also keeps the owners it learnt (``ReservationOwners``): the reservations it made, and those
it read. An owner never changes, so a copy in memory is never stale, and a settlement whose owner is
known reads nothing before it is decided: it takes the same path as a debit.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
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


class ReservationOwners:
    """The owners of the reservations this process knows, at most ``most`` of them (the least recently
    used are dropped first). The event loops, the writer thread and the worker threads all use it."""

    def __init__(self, most: int) -> None:
        self.most = most
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, reservation_id: str) -> str | None:
        with self._lock:
            owner = self._owners.get(reservation_id)
            if owner is not None:
                self._owners.move_to_end(reservation_id)
            return owner

    def learn(self, reservation_id: str, user_id: str) -> None:
        with self._lock:
            self._owners[reservation_id] = user_id
            self._owners.move_to_end(reservation_id)
            while len(self._owners) > self.most:
                self._owners.popitem(last=False)
