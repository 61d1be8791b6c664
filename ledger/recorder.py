"""The event store's PostgreSQL recorder, with a cheaper insert.

The library inserts a transaction's events as one array of a composite type, which psycopg can only
write as text, field by field, in Python: in the benchmark's profile that text dump was about 5% of a
debit's CPU in the server. This recorder sends the same rows as four arrays of plain types instead
(``uuid``, ``bigint``, ``text``, ``bytea``), in binary (``%b``: measured 1.6 µs a row against 8.7 µs
for the same arrays as text). Everything else is the
library's: the table lock taken first (so commit order is position order), the notification, the
returned positions in insert order, and the unique key that turns a duplicate into an IntegrityError.

The library sends the transaction in psycopg's pipeline mode, whose loop (psycopg 3.3) writes once when
the socket is writable and then only reads, even when libpq still holds part of the statement. A
statement larger than what the kernel takes in one write (about 900 KB on a Unix socket here, several MB
over loopback TCP) then waits forever: the client for the answer, the server (``ClientRead``) for the
rest of the statement. So the insert is written out in full before the library syncs the pipeline.
"""

from __future__ import annotations

import selectors
import time
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import InterfaceError as StoreInterfaceError
from eventsourcing.persistence import OperationalError as StoreOperationalError
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg import Cursor, InterfaceError, OperationalError
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from ledger.errors import StoreUnavailableError

# Longest wait for the server to take a statement's bytes; a server that takes none for this long is gone.
SEND_TIMEOUT_SECONDS = 30.0


class LedgerRecorder(PostgresApplicationRecorder):
    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self.insert_events_statement = SQL(
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state)"
            " SELECT * FROM unnest(%b::uuid[], %b::bigint[], %b::text[], %b::bytea[])"
            " RETURNING notification_id"
        ).format(schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name))

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """The library's insert, tried once, saying whether a lost connection left the outcome unknown.

        The library retries a failed insert ten times, 0.2 s apart, each waiting for a pooled connection:
        tens of seconds of a stalled writer while the database is away. Here a lost connection is
        reported at once, as ``StoreUnavailableError``; the writer decides what to try again. A
        connection lost after every statement was answered and before the commit's answer leaves the
        outcome unknown: only the command's idempotency marker can then tell.
        """
        committing = False
        failure: Exception | None = None
        positions: Sequence[int] | None = None
        try:
            with self.datastore.get_connection() as conn:
                with conn.pipeline() as pipeline, conn.transaction():
                    with conn.cursor() as curs:
                        self._insert_events(curs, stored_events, **kwargs)
                    if stored_events:
                        with conn.cursor() as curs:
                            try:
                                self._insert_stored_events(curs, stored_events, **kwargs)
                                # A duplicate key surfaces here, as an IntegrityError, not at the commit.
                                pipeline.sync()
                                positions = self._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
                            except Exception as error:  # noqa: BLE001 - raised again once the pipeline has closed.
                                failure = error
                    committing = failure is None
                if failure is not None:
                    raise failure
        except (OperationalError, InterfaceError, StoreOperationalError, StoreInterfaceError) as lost:
            raise StoreUnavailableError(str(lost), outcome_unknown=committing) from lost
        return positions

    def _insert_stored_events(self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **_: Any) -> None:
        self._lock_table(curs)
        self._notify_channel(curs)
        curs.execute(
            self.insert_events_statement,
            (
                [event.originator_id for event in stored_events],
                [event.originator_version for event in stored_events],
                [event.topic for event in stored_events],
                [event.state for event in stored_events],
            ),
            prepare=True,
        )
        _send_all(curs)


def _send_all(curs: Cursor[DictRow]) -> None:
    """Write what libpq still holds for this connection, reading meanwhile so the server never blocks on us.

    ``PGconn.flush`` answers 1 while bytes remain; when it cannot write it reads what the server sent
    (libpq buffers it for the pipeline's own fetch), so waiting for either direction cannot deadlock.
    """
    pgconn = curs.connection.pgconn
    if not pgconn.flush():
        return  # All sent already, as nearly always: no selector to make on the write path.
    deadline = time.monotonic() + SEND_TIMEOUT_SECONDS
    with selectors.DefaultSelector() as selector:
        selector.register(pgconn.socket, selectors.EVENT_READ | selectors.EVENT_WRITE)
        while pgconn.flush():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OperationalError(f"the server took no data for {SEND_TIMEOUT_SECONDS:.0f} s")
            selector.select(remaining)
