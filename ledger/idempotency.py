"""Idempotency markers: one aggregate per (principal, operation, key).

A marker is saved in the same transaction as the events of the command it answers, so either both
exist or neither does. A second request with the same key collides on the marker's primary key in
the database; the ledger then reads the marker and returns the first receipt again, or refuses a
request whose fingerprint differs. Only committed outcomes leave a marker: a refused command writes
nothing, so a retry after the cause is fixed (a top-up, say) is judged afresh.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

from ledger.ids import request_id


class IdempotencyRecord(Aggregate):
    TOPIC = "ledger.IdempotencyRecord"

    class Recorded(Aggregate.Created):
        TOPIC = "ledger.IdempotencyRecord.Recorded"
        principal: str
        operation: str
        key: str
        fingerprint: str
        receipt_type: str
        receipt: dict[str, Any]

    class Created(Aggregate.Created):
        """Required by the library once a class has explicit topics; this aggregate never triggers it."""

        TOPIC = "ledger.IdempotencyRecord.Created"

    principal: str
    operation: str
    key: str
    fingerprint: str
    receipt_type: str
    receipt: dict[str, Any]

    def __init__(
        self,
        principal: str,
        operation: str,
        key: str,
        fingerprint: str,
        receipt_type: str,
        receipt: dict[str, Any],
    ) -> None:
        self.principal = principal
        self.operation = operation
        self.key = key
        self.fingerprint = fingerprint
        self.receipt_type = receipt_type
        self.receipt = receipt

    @classmethod
    def record(
        cls,
        *,
        principal: str,
        operation: str,
        key: str,
        fingerprint: str,
        receipt_type: str,
        receipt: dict[str, Any],
        now: datetime,
    ) -> IdempotencyRecord:
        marker: IdempotencyRecord = cls._create(
            cls.Recorded,
            id=request_id(principal, operation, key),
            principal=principal,
            operation=operation,
            key=key,
            fingerprint=fingerprint,
            receipt_type=receipt_type,
            receipt=receipt,
            timestamp=now,
        )
        return marker
