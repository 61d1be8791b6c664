"""The projection worker: catches up in batches, then follows the log as it grows.

A runner applies one or more projections. Each batch reads up to ``batch_size`` events past the
projections' positions, decodes each event once, hands every projection the events it follows and has not
applied yet, and moves the positions, all in one transaction: a process's views and notifier share one
read of the log and one commit per batch instead of one each. Each position row is locked for the batch
(``FOR UPDATE``), so even two workers could never apply an event twice; a row another transaction holds
(a rebuild switching its tables over) is skipped for that batch, and its projection waits while the
others go on. PostgreSQL advisory locks, one per projection and taken all or none, keep a second worker
idle as a standby, and it takes over when the first one's connection goes away. The event table's write
lock makes commit order equal to position order, so reading "after my position" never skips an event
that commits later.

A batch commits without waiting for its WAL flush (``synchronous_commit = off``): the views and their
positions are one transaction, so a database crash can only lose a whole batch, views and positions
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
from datetime import datetime
from typing import Any, NamedTuple, Protocol, runtime_checkable

import psycopg
from eventsourcing.persistence import JSONTranscoder, StoredEvent

from ledger.mapper import MsgspecMapper
from projections.listening import Listener
from projections.recovery import CONNECTION_FAULTS, Backoff, describe_fault
from projections.standby import connect, stand_by

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 1_000
DEFAULT_INTERVAL_SECONDS = 0.05
PACE_FROM_EVENTS = 16
IDLE_WAIT_SECONDS = 1.0
GATHER_SECONDS = 0.01


# The positions this batch may move: a row another transaction holds (a rebuild switching over) is skipped.
_POSITIONS = (
    "SELECT name, position, updated_at FROM projection_positions WHERE name = ANY(%s)"
    " ORDER BY name FOR UPDATE SKIP LOCKED"
)
_NEXT_EVENTS = (
    "SELECT e.notification_id, e.originator_id, e.originator_version, e.topic,"
    " CASE WHEN e.topic LIKE ANY(%s) THEN e.state END"
    " FROM ledger_events AS e WHERE e.notification_id > %s ORDER BY e.notification_id LIMIT %s"
)
_MOVE_POSITIONS = (
    "UPDATE projection_positions AS p SET position = %s, updated_at = now(),"
    " last_event_at = COALESCE(moved.last_event_at, p.last_event_at)"
    " FROM unnest(%s::text[], %s::timestamptz[]) AS moved(name, last_event_at) WHERE p.name = moved.name"
    " RETURNING p.name, p.position, p.updated_at"
)


class Mark(NamedTuple):
    """A projection's position row as a batch found or left it. Every move sets ``updated_at`` (to the moving
    transaction's time), so a row moved by someone else differs even when its position does not (a rebuild
    switching its tables at the live position)."""

    position: int
    updated_at: datetime


class Projection(Protocol):
    name: str
    tables: tuple[str, ...]
    topic_prefix: str | tuple[str, ...]

    def apply(self, conn: psycopg.Connection[Any], events: list[tuple[int, Any]]) -> None: ...


@runtime_checkable
class Remembering(Protocol):
    """A projection that keeps in memory what its batches wrote, instead of reading it back each batch.

    Its runner tells it to ``forget`` that copy before a batch whenever the projection's position is not the
    one this runner left (another worker, or a rebuild's switch, moved it meanwhile) and after a batch
    that failed (its transaction is rolled back, what it changed in memory is not)."""

    def forget(self) -> None: ...


class ProjectionRunner:
    def __init__(
        self,
        database_url: str,
        *projections: Projection,
        batch_size: int = DEFAULT_BATCH_SIZE,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
    ) -> None:
        if not projections:
            raise ValueError("a runner needs at least one projection")
        self.database_url = database_url
        self.projections = projections
        self.names = [projection.name for projection in projections]
        self.batch_size = batch_size
        self.interval_seconds = interval_seconds
        self._prefixes = {projection.name: _prefixes(projection) for projection in projections}
        # Only the projections' events are decoded, and only theirs leave the database with their state.
        self._topic_patterns = sorted({_like_prefix(p) for prefixes in self._prefixes.values() for p in prefixes})
        self.mapper: Any = MsgspecMapper(transcoder=JSONTranscoder())
        self.error: BaseException | None = None
        self.active = False
        self.reconnects = 0
        # When the last batch committed (monotonic) and how many events it read: what a process that seems
        # stuck says about each runner (``describe``).
        self.last_batch_at: float | None = None
        self.last_batch_events = 0
        # The positions this runner's last committed batch left, for the projections that remember.
        self._left_at: dict[str, Mark] = {}

    @property
    def projection(self) -> Projection:
        """The projection of a runner of one (a rebuild's, a test's)."""
        if len(self.projections) != 1:
            raise AttributeError(f"this runner applies {len(self.projections)} projections")
        return self.projections[0]

    @property
    def name(self) -> str:
        return "+".join(self.names)

    def describe(self) -> str:
        age = "never" if self.last_batch_at is None else f"{time.monotonic() - self.last_batch_at:.1f} s ago"
        return (
            f"projections {', '.join(self.names)}: {'active' if self.active else 'standing by'}, last batch {age}"
            f" ({self.last_batch_events} events), reconnects {self.reconnects}, error {self.error!r}"
        )

    def run_batch(self, conn: psycopg.Connection[Any]) -> int:
        """Apply the next batch. Returns how many events were read (0 when caught up)."""
        try:
            return self._run_batch(conn)
        except BaseException:
            self._left_at.clear()
            raise

    def _run_batch(self, conn: psycopg.Connection[Any]) -> int:
        with conn.transaction():
            marks = self._hold_positions(conn)
            for projection in self.projections:
                if isinstance(projection, Remembering) and marks.get(projection.name) != self._left_at.get(
                    projection.name
                ):
                    projection.forget()
            positions = {name: mark.position for name, mark in marks.items()}
            rows = (
                conn.execute(
                    _NEXT_EVENTS, (self._topic_patterns, min(positions.values()), self.batch_size), prepare=True
                ).fetchall()
                if positions
                else []
            )
            if not rows:
                self.last_batch_at, self.last_batch_events = time.monotonic(), 0
                return 0
            # Each event decoded once, for every projection that follows it.
            decoded = [
                (position, topic, self.mapper.to_domain_event(StoredEvent(oid, version, topic, bytes(state))))
                for position, oid, version, topic, state in rows
                if state is not None
            ]
            last_position = rows[-1][0]
            moved: list[str] = []
            moved_at: list[Any] = []
            for projection in self.projections:
                held = positions.get(projection.name)
                if held is None or held >= last_position:
                    continue
                prefixes = self._prefixes[projection.name]
                events = [(pos, event) for pos, topic, event in decoded if pos > held and topic.startswith(prefixes)]
                if events:
                    projection.apply(conn, events)
                moved.append(projection.name)
                moved_at.append(events[-1][1].timestamp if events else None)
            left = conn.execute(_MOVE_POSITIONS, (last_position, moved, moved_at), prepare=True).fetchall()
        self._left_at.update((name, Mark(position, updated_at)) for name, position, updated_at in left)
        self.last_batch_at, self.last_batch_events = time.monotonic(), len(rows)
        return len(rows)

    def _hold_positions(self, conn: psycopg.Connection[Any]) -> dict[str, Mark]:
        """Lock the position rows this batch may move, making any that is missing (a new database, or a
        rebuild's schema), and return them."""
        positions = {name: Mark(*mark) for name, *mark in conn.execute(_POSITIONS, (self.names,), prepare=True)}
        if len(positions) < len(self.names):
            # Missing, or held by another transaction: only the rows that do not exist are made.
            missing = [name for name in self.names if name not in positions]
            existing = conn.execute("SELECT name FROM projection_positions WHERE name = ANY(%s)", (missing,))
            absent = sorted(set(missing) - {name for (name,) in existing.fetchall()})
            if absent:
                conn.execute(
                    "INSERT INTO projection_positions (name) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
                    (absent,),
                )
                positions.update((name, Mark(*mark)) for name, *mark in conn.execute(_POSITIONS, (absent,)))
        return positions

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
                log.warning("projections %s %s; trying again", self.name, describe_fault(fault))
                stop.wait(backoff.next_seconds())
            except BaseException as error:
                self.error = error
                log.exception("projections %s stopped", self.name)
                raise
            finally:
                self.active = False

    def _hold_and_follow(self, stop: threading.Event, backoff: Backoff) -> None:
        # One connection holds the advisory locks and applies the batches: if it is lost, the locks go
        # with it, so this worker can never go on applying while another one has taken over.
        with connect(self.database_url, f"projection {self.name}") as conn:
            if not stand_by(conn, self.names, stop, backoff):
                return
            conn.execute("SET synchronous_commit = off")
            listener = Listener(conn)
            self.active = True
            log.info("projections %s active", self.name)
            try:
                self._follow(conn, listener, stop, backoff)
            finally:
                # Cleared as the connection (and with it the lock) is given up, before any pause to
                # reconnect: a standby may hold the lock by the time that pause ends.
                self.active = False

    def _follow(
        self, conn: psycopg.Connection[Any], listener: Listener, stop: threading.Event, backoff: Backoff
    ) -> None:
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


def _prefixes(projection: Projection) -> tuple[str, ...]:
    prefix = projection.topic_prefix
    return prefix if isinstance(prefix, tuple) else (prefix,)


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching the strings that start with ``prefix``."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
