"""Recompute the event log's hash chain and name the first event that no longer matches it.

Each event's ``hash`` is written by the database as the event is inserted (migrations/0007): SHA-256 over
the previous event's hash, the event's position and its content. Here the same bytes are computed in
Python, independently of the database's functions, over the whole log in position order, streamed with a
server-side cursor in one snapshot (constant memory). The walk stops at the first event whose stored hash
differs from the one recomputed from the event before it: that event was changed, or moved, or an event
between it and the one before it was removed (or the hash itself was changed). Every event before it is
intact, so the first tampering is at or right before that position.

A chain only shows changes made after the fact: whoever can disable the database's triggers and rewrite
every later hash leaves a valid chain. What catches that is the head (position and hash) recorded outside
the database: ``ledger verify`` prints it.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg

# The hash "before the first event".
GENESIS = bytes(32)
FETCH_ROWS = 10_000

_ID_AND_VERSION = struct.Struct(">q16sq")
_LENGTH = struct.Struct(">i")


def event_hash(
    previous: bytes,
    notification_id: int,
    originator_id: UUID,
    originator_version: int,
    topic: str | None,
    state: bytes | None,
) -> bytes:
    """The event's link in the chain, byte for byte as ``ledger_event_hash`` computes it in PostgreSQL."""
    topic_bytes = None if topic is None else topic.encode()
    digest = hashlib.sha256(previous)
    digest.update(_ID_AND_VERSION.pack(notification_id, originator_id.bytes, originator_version))
    for field in (topic_bytes, state):
        digest.update(_LENGTH.pack(-1 if field is None else len(field)))
        digest.update(field or b"")
    return digest.digest()


@dataclass(frozen=True)
class Tampering:
    """The first event whose stored hash does not follow from its content and the event before it."""

    position: int
    previous_position: int | None  # The last intact event before it; None when it is the first event.

    def __str__(self) -> str:
        return f"tampered: position {self.position}"

    def explanation(self) -> str:
        before = (
            "it is the first event, or events before it were removed"
            if self.previous_position is None
            else f"the events up to position {self.previous_position} are intact"
        )
        return (
            f"the event at position {self.position} does not match its hash: it was changed or moved, or an event"
            f" before it is missing or was changed ({before})"
        )


@dataclass(frozen=True)
class ChainCheck:
    """The result of one walk over the whole log, read in one snapshot."""

    events: int  # Events checked (up to and including a tampered one).
    head_position: int  # The last event's position (0 for an empty log).
    head_hash: bytes | None  # Its stored hash.
    tampering: Tampering | None
    # Views that have applied events beyond the head: events at the end of the log were removed.
    views_ahead: tuple[tuple[str, int], ...] = ()

    @property
    def intact(self) -> bool:
        return self.tampering is None and not self.views_ahead

    def verdict(self) -> str:
        """One line: where the log was tampered with, or its head when it is intact."""
        if self.tampering is not None:
            return str(self.tampering)
        if self.views_ahead:
            return f"tampered: events after position {self.head_position} are missing"
        head = self.head_hash.hex() if self.head_hash is not None else "none"
        return f"chain intact: {self.events:,} event(s); head at position {self.head_position}, hash {head}"

    def explanation(self) -> list[str]:
        """What a broken chain means, in a line or two (nothing when it is intact)."""
        if self.tampering is not None:
            return [self.tampering.explanation()]
        return [
            f"the {name} view has applied events up to position {position}, but the log ends at position"
            f" {self.head_position}"
            for name, position in self.views_ahead
        ]


class TamperedLogError(Exception):
    """The log's chain is broken: whatever is built from the log now would be built from tampered events."""

    def __init__(self, check: ChainCheck) -> None:
        super().__init__(check.verdict())
        self.check = check


def require_intact_chain(database_url: str) -> ChainCheck:
    """The chain's check, or ``TamperedLogError`` when it is broken."""
    check = check_chain(database_url)
    if not check.intact:
        raise TamperedLogError(check)
    return check


def check_chain(database_url: str) -> ChainCheck:
    """Recompute every event's hash in position order; stop at the first that does not match."""
    with psycopg.connect(database_url) as conn:
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            return _walk(conn)


def _walk(conn: psycopg.Connection[Any]) -> ChainCheck:
    head = conn.execute(
        "SELECT notification_id, hash FROM ledger_events ORDER BY notification_id DESC LIMIT 1"
    ).fetchone()
    head_position, head_hash = (int(head[0]), _bytes(head[1])) if head else (0, None)
    previous, previous_position, events = GENESIS, None, 0
    with conn.cursor(name="chain_scan", binary=True) as cursor:
        cursor.itersize = FETCH_ROWS
        cursor.execute(
            "SELECT notification_id, originator_id, originator_version, topic, state, hash"
            " FROM ledger_events ORDER BY notification_id"
        )
        for position, originator_id, version, topic, state, stored in cursor:
            events += 1
            expected = event_hash(previous, position, originator_id, version, topic, _bytes(state))
            if _bytes(stored) != expected:
                return ChainCheck(events, head_position, head_hash, Tampering(position, previous_position))
            previous, previous_position = expected, position
    # A view's position is the last event it applied, so one beyond the head means the log lost its end.
    ahead = conn.execute(
        "SELECT name, position FROM projection_positions WHERE position > %s ORDER BY name", (head_position,)
    ).fetchall()
    return ChainCheck(events, head_position, head_hash, None, tuple((str(n), int(p)) for n, p in ahead))


def _bytes(value: bytes | memoryview | None) -> bytes | None:
    return None if value is None else bytes(value)
