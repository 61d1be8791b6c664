"""The projection worker: catches up in batches, then follows the log as it grows.

Each batch reads up to ``batch_size`` events past the projection's position, applies them, and moves
the position, all in one transaction. The position row is locked for the batch (``FOR UPDATE``), so even
two workers on the same projection could never apply an event twice; a PostgreSQL advisory lock keeps
the second one idle as a standby, and it takes over when the first one's connection goes away.
The event table's write lock makes commit order equal to position order, so reading "after my
position" never skips an event that commits later.

A batch commits without waiting for its WAL flush (``synchronous_commit = off``): the views and their
position are one transaction, so a database crash can only lose a whole batch, views and position
together, which the runner applies again from the events once it has connected again. The events
themselves are written with full durability by the ledger. Under load (a batch of at least
``PACE_FROM_EVENTS`` events) the runner lets ``interval_seconds`` pass between the starts of two
batches, so that each carries many events instead of one small transaction per commit of the ledger:
in the benchmark, 50 ms halved the projection worker's CPU and raised the debit rate by half. Lighter
traffic is applied at once, and a quiet log is followed by waiting for the ledger's notification.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from typing import Any, Protocol

import psycopg
from eventsourcing.persistence import JSONTranscoder, StoredEvent

from ledger.mapper import MsgspecMapper
from projections.listening import Listener
from projections.recovery import CONNECTION_FAULTS, Backoff, describe_fault

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 1_000
DEFAULT_INTERVAL_SECONDS = 0.05
PACE_FROM_EVENTS = 16
IDLE_WAIT_SECONDS = 1.0
GATHER_SECONDS = 0.01
STANDBY_POLL_SECONDS = 1.0
CONNECT_TIMEOUT_SECONDS = 5


_NEXT_BATCH = (
    "WITH held AS (SELECT position FROM projection_positions WHERE name = %s FOR UPDATE)"
    " SELECT e.notification_id, e.originator_id, e.originator_version, e.topic,"
    " CASE WHEN e.topic LIKE ANY(%s) THEN e.state END"
    # A scalar subquery, so the position is known before the scan starts and the index range begins there
    # (as a join, the planner may walk the index from the first event).
    " FROM ledger_events AS e WHERE e.notification_id > (SELECT position FROM held)"
    " ORDER BY e.notification_id LIMIT %s"
)


class Projection(Protocol):
    name: str
    tables: tuple[str, ...]
    topic_prefix: str | tuple[str, ...]

    def apply(self, conn: psycopg.Connection[Any], events: list[tuple[int, Any]]) -> None: ...


def lock_key(name: str) -> int:
    """A stable advisory-lock key per projection name."""
    return 7_311_000_000 + zlib.crc32(name.encode())


class ProjectionRunner:
    def __init__(
        self,
        database_url: str,
        projection: Projection,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
    ) -> None:
        self.database_url = database_url
        self.projection = projection
        self.batch_size = batch_size
        self.interval_seconds = interval_seconds
        prefixes = projection.topic_prefix if isinstance(projection.topic_prefix, tuple) else (projection.topic_prefix,)
        # Only this projection's events are decoded, and only theirs leave the database with their state.
        self._topic_patterns = [_like_prefix(prefix) for prefix in prefixes]
        self.mapper: Any = MsgspecMapper(transcoder=JSONTranscoder())
        self.error: BaseException | None = None
        self.active = False
        self.reconnects = 0
        # When the last batch committed (monotonic) and how many events it read: what a process that seems
        # stuck says about each runner (``describe``).
        self.last_batch_at: float | None = None
        self.last_batch_events = 0

    def describe(self) -> str:
        age = "never" if self.last_batch_at is None else f"{time.monotonic() - self.last_batch_at:.1f} s ago"
        return (
            f"projection {self.projection.name}: {'active' if self.active else 'standing by'}, last batch {age}"
            f" ({self.last_batch_events} events), reconnects {self.reconnects}, error {self.error!r}"
        )

    def run_batch(self, conn: psycopg.Connection[Any]) -> int:
        """Apply the next batch. Returns how many events were read (0 when caught up)."""
        name = self.projection.name
        with conn.transaction():
            # The position row is locked and the events past it read in one round trip.
            rows = conn.execute(_NEXT_BATCH, (name, self._topic_patterns, self.batch_size), prepare=True).fetchall()
            if not rows:
                # Caught up, or a database (or rebuild schema) with no position row yet: make sure the
                # row exists, then look once more.
                conn.execute("INSERT INTO projection_positions (name) VALUES (%s) ON CONFLICT DO NOTHING", (name,))
                rows = conn.execute(_NEXT_BATCH, (name, self._topic_patterns, self.batch_size)).fetchall()
                if not rows:
                    self.last_batch_at, self.last_batch_events = time.monotonic(), 0
                    return 0
            events = [
                (position, self.mapper.to_domain_event(StoredEvent(oid, version, topic, bytes(state))))
                for position, oid, version, topic, state in rows
                if state is not None
            ]
            if events:
                self.projection.apply(conn, events)
            last = rows[-1]
            conn.execute(
                "UPDATE projection_positions SET position = %s, updated_at = now(),"
                " last_event_at = COALESCE(%s, last_event_at) WHERE name = %s",
                (last[0], events[-1][1].timestamp if events else None, name),
            )
        self.last_batch_at, self.last_batch_events = time.monotonic(), len(rows)
        return len(rows)

    def catch_up(self) -> int:
        """Apply every event now in the log. Returns how many were read."""
        total = 0
        with psycopg.connect(self.database_url) as conn:
            while count := self.run_batch(conn):
                total += count
        return total

    def run_forever(self, stop: threading.Event) -> None:
        """Stand by until this process holds the projection's lock, then follow the log until stopped.

        A lost connection (see ``projections.recovery``) is survived: the runner connects again after a
        pause, takes the lock again (or stands by, if another worker took it meanwhile) and goes on from
        the committed position. Any other error stops the projection (fail-stop) and is kept in
        ``error`` for readiness to report.
        """
        backoff = Backoff()
        while not stop.is_set():
            try:
                self._hold_and_follow(stop, backoff)
            except CONNECTION_FAULTS as fault:
                self.reconnects += 1
                log.warning("projection %s %s; trying again", self.projection.name, describe_fault(fault))
                stop.wait(backoff.next_seconds())
            except BaseException as error:
                self.error = error
                log.exception("projection %s stopped", self.projection.name)
                raise
            finally:
                self.active = False

    def _hold_and_follow(self, stop: threading.Event, backoff: Backoff) -> None:
        # One connection holds the advisory lock and applies the batches: if it is lost, the lock goes
        # with it, so this worker can never go on applying while another one has taken over.
        with psycopg.connect(
            self.database_url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            # Named, so an operator sees in pg_stat_activity which connection holds which lock.
            application_name=f"ledger projection {self.projection.name}",
        ) as conn:
            while not stop.is_set():
                held = conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(self.projection.name),))
                if held.fetchone() == (True,):
                    break
                backoff.reset()
                stop.wait(STANDBY_POLL_SECONDS)
            if stop.is_set():
                return
            conn.execute("SET synchronous_commit = off")
            listener = Listener(conn)
            self.active = True
            log.info("projection %s active", self.projection.name)
            while not stop.is_set():
                # Notifications of commits made before this batch reads are of no use: they are dropped
                # first, so that one of a commit made after the read still wakes the wait below.
                listener.forget()
                started = time.monotonic()
                count = self.run_batch(conn)
                backoff.reset()
                if count >= self.batch_size:
                    continue
                if count >= PACE_FROM_EVENTS:
                    stop.wait(self.interval_seconds - (time.monotonic() - started))
                    continue
                # Light traffic: the next commit's notification, not another look at once, starts the next
                # batch (a look that finds nothing cost each runner a transaction per commit). While commits
                # keep coming, a few more join it: a batch's fixed cost (its statements) was most of the
                # projection process's CPU when each batch carried one event.
                listener.wait(IDLE_WAIT_SECONDS)
                if count:
                    stop.wait(GATHER_SECONDS)


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching the strings that start with ``prefix``."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
