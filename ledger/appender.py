"""The recorder's append, awaited on an event loop: the same statement, sent by asyncpg.

The group-commit writer on an event loop (``ledger.loop_writer``) appends through this: the same function
(migration 0013) with the same four arrays as the recorder (``ledger.recorder``), sent in binary on one
connection of its own, so nothing waits for a thread to hand the statement over or the answer back. What
the recorder reports by raising, this reports as a value: the rows appended, a key that collided, or the
store unavailable, with whether the outcome is known.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from eventsourcing.persistence import StoredEvent

from ledger.errors import StoreUnavailableError
from ledger.recorder import append_arguments

# The function appends to the recorder's table (``APPENDS_TO``), as the recorder's own statement does.
APPEND = (
    "SELECT notification_id FROM ledger_append_events($1, $2::uuid[], $3::bigint[], $4::text[], $5::bytea[])"
    " AS appended(notification_id)"
)
# SQLSTATE classes the server answers when it cannot do the work now (psycopg's OperationalError): the
# statement was rolled back, so trying again is safe. Class 23 is a key that collided (IntegrityError).
UNAVAILABLE_CLASSES = frozenset(
    {"08", "27", "28", "2F", "38", "39", "3B", "40", "53", "54", "55", "57", "58", "F0", "HV"}
)
COLLIDED_CLASS = "23"
# The server ending the session (an administrator, a shutdown) may come after a commit whose answer is lost.
SESSION_ENDED = frozenset({"57P01", "57P02"})
# How the connection shows in pg_stat_activity.
APPLICATION_NAME = "ledger-loop-writer"
# Beyond the table lock's own timeout, how long the server may take to answer before the outcome is unknown.
ANSWER_MARGIN_SECONDS = 5.0


@dataclass(frozen=True)
class Appended:
    positions: list[int]


@dataclass(frozen=True)
class Collided:
    """A key was taken: a duplicate request's marker, or an aggregate version another process wrote."""


@dataclass(frozen=True)
class Unavailable:
    fault: StoreUnavailableError


@dataclass(frozen=True)
class ConnectTo:
    host: str
    port: int
    database: str
    user: str
    password: str
    connect_timeout_seconds: float
    lock_timeout_seconds: float


class Appender:
    """One connection of one event loop, appending one batch at a time."""

    def __init__(self, target: ConnectTo) -> None:
        self.target = target
        self._lock_timeout = f"{target.lock_timeout_seconds:g}s"
        self._connection: asyncpg.Connection | None = None

    async def append(self, stored_events: Sequence[StoredEvent]) -> Appended | Collided | Unavailable:
        sent = False
        try:
            connection = await self._connected()
            sent = True
            rows = await connection.fetch(
                APPEND,
                self._lock_timeout,
                *append_arguments(stored_events),
                timeout=self.target.lock_timeout_seconds + ANSWER_MARGIN_SECONDS,
            )
        except asyncpg.PostgresError as error:
            code = error.sqlstate or ""
            if code[:2] == COLLIDED_CLASS:
                return Collided()
            if isinstance(error, asyncpg.ConnectionDoesNotExistError) or code in SESSION_ENDED:
                # The connection went while the statement was out: it may have committed or not.
                await self.close()
                return Unavailable(StoreUnavailableError(str(error), outcome_unknown=sent))
            if code[:2] in UNAVAILABLE_CLASSES:
                return Unavailable(StoreUnavailableError(str(error), outcome_unknown=False))
            raise
        except (asyncpg.InterfaceError, OSError, TimeoutError) as lost:
            await self.close()
            return Unavailable(StoreUnavailableError(str(lost) or type(lost).__name__, outcome_unknown=sent))
        return Appended([row[0] for row in rows])

    async def _connected(self) -> asyncpg.Connection:
        if self._connection is None or self._connection.is_closed():
            target = self.target
            self._connection = await asyncpg.connect(
                host=target.host,
                port=target.port,
                database=target.database,
                user=target.user,
                password=target.password or None,
                timeout=target.connect_timeout_seconds,
                server_settings={"application_name": APPLICATION_NAME},
            )
        return self._connection

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await asyncio.wait_for(connection.close(), timeout=self.target.connect_timeout_seconds)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
                connection.terminate()

    def terminate(self) -> None:
        """Drop the connection without waiting, when its event loop no longer runs."""
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            # A loop already closed cannot schedule the transport's last callback; the socket goes with it.
            with contextlib.suppress(RuntimeError):
                connection.terminate()
