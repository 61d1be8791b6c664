"""Telling a lost connection from a fact the views contradict, and waiting before trying again.

The projections and the hold sweeper stop for good (fail-stop) only on a contradiction in the data. A
database that restarts, a connection cut by the network or an administrator, a schema not migrated yet,
a lock or statement timeout: these pass, so the worker reconnects after a bounded, jittered pause and
goes on from its committed position, which the position row makes safe.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import eventsourcing.persistence
import psycopg
import psycopg.errors

# What a worker survives. psycopg's OperationalError covers a closed or refused connection, an
# administrator's shutdown, lock and statement timeouts and serialization failures; the event store
# wraps the same faults in its own classes. A missing table is a database not migrated yet.
CONNECTION_FAULTS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg.errors.UndefinedTable,
    eventsourcing.persistence.OperationalError,
    eventsourcing.persistence.InterfaceError,
)


def describe_fault(fault: BaseException) -> str:
    """What an operator reads in the log: a schema not migrated yet is not a lost connection."""
    if isinstance(fault, psycopg.errors.UndefinedTable):
        return f"waits for the schema ({fault}; run `ledger migrate`)"
    return f"lost its connection ({type(fault).__name__}: {fault})"


@dataclass
class Backoff:
    """Exponential pauses with full jitter, from ``first_seconds`` up to ``most_seconds``."""

    first_seconds: float = 0.1
    most_seconds: float = 2.0
    _failures: int = field(default=0, init=False)

    def next_seconds(self) -> float:
        ceiling = min(self.most_seconds, self.first_seconds * 2**self._failures)
        self._failures += 1
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret.

    def reset(self) -> None:
        self._failures = 0
