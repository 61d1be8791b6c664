"""A planned command: everything the committer (``ledger.commit``) needs to decide and save it, and what it
needs of the store."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID

from ledger.commands import Command, IdempotencyKey
from ledger.ids import request_id
from ledger.receipts import Receipt
from ledger.replies import Reply

R = TypeVar("R", bound="Receipt")


@dataclass
class Plan(Generic[R]):
    """One command, ready to be decided: its aggregate, its lock, how to load it and how to decide.

    ``decide`` applies the command's rules to the aggregate (no I/O) and returns how to make the receipt
    once the position is known; ``companions`` are aggregates it creates to be saved with it; ``saved``
    hears the aggregate once it has committed.
    """

    aggregate_id: UUID
    lock: threading.Lock
    load: Callable[[], Any]
    decide: Callable[[Any, UUID | None], Callable[[int], R]]
    command: Command
    operation: str
    idempotency: IdempotencyKey | None
    now: datetime
    what: str
    companions: list[Any] = field(default_factory=list)
    saved: Callable[[Any], None] | None = None

    @property
    def fingerprint(self) -> str:
        return self.command.fingerprint() if self.idempotency else ""

    @property
    def marker_id(self) -> UUID | None:
        if self.idempotency is None:
            return None
        return request_id(self.idempotency.principal, self.operation, self.idempotency.key)


class Store(Protocol):
    """What deciding and saving needs of the ledger's store, without importing it (no import cycle)."""

    @property
    def repository(self) -> Any: ...

    @property
    def recorder(self) -> Any: ...

    def save(self, *objs: Any, **kwargs: Any) -> Any: ...

    def replay(
        self, marker_id: UUID | None, idempotency: IdempotencyKey | None, fingerprint: str, operation: str
    ) -> Receipt | None: ...

    def refresh_accounts(self, ids: list[UUID], *, cached_too: bool = True) -> None: ...

    def discard_broken_connections(self) -> None: ...


Batch = list[tuple[Plan[Any], Reply]]
