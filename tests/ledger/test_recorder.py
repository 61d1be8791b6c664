"""The event store's insert, as the ledger sends it: the library's guarantees with plain-typed arrays."""

from __future__ import annotations

from uuid import uuid4

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

from ledger.application import Ledger
from ledger.recorder import LedgerRecorder


def test_events_are_stored_as_given_and_positions_come_back_in_order(pg_ledger: Ledger) -> None:
    recorder = pg_ledger.recorder
    assert isinstance(recorder, LedgerRecorder)
    first, second = uuid4(), uuid4()
    events = [
        StoredEvent(first, 1, "test.Topic", b'{"a":1}'),
        StoredEvent(second, 1, "test.Other", b"\x00\xff binary"),
        StoredEvent(first, 2, "test.Topic", b""),
    ]
    positions = recorder.insert_events(events)
    assert positions is not None
    assert len(positions) == 3
    assert list(positions) == sorted(positions)
    assert list(recorder.select_events(first)) == [events[0], events[2]]
    assert list(recorder.select_events(second)) == [events[1]]
    notified = recorder.select_notifications(positions[0], 3)
    assert [(n.id, n.originator_id, n.state) for n in notified] == [
        (position, event.originator_id, event.state) for position, event in zip(positions, events, strict=True)
    ]


def test_a_duplicate_version_writes_nothing_of_its_transaction(pg_ledger: Ledger) -> None:
    recorder = pg_ledger.recorder
    taken = uuid4()
    recorder.insert_events([StoredEvent(taken, 1, "test.Topic", b"first")])
    untouched = uuid4()
    with pytest.raises(IntegrityError):
        recorder.insert_events(
            [StoredEvent(untouched, 1, "test.Topic", b"x"), StoredEvent(taken, 1, "test.Topic", b"again")]
        )
    assert list(recorder.select_events(untouched)) == []
    assert [event.state for event in recorder.select_events(taken)] == [b"first"]
