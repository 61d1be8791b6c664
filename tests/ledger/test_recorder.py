"""The event store's insert, as the ledger sends it: the library's guarantees with plain-typed arrays."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

from ledger.application import Ledger
from ledger.errors import StoreUnavailableError
from ledger.recorder import LedgerRecorder
from tests.conftest import postgres_ledger

# Far above what a Unix socket takes in one write (about 900 KB here), so the append must be sent in many
# writes while the server reads: 20,000 events of 500 bytes, 10 MB in one insert.
LARGE_BATCH_EVENTS = 20_000
LARGE_EVENT_BYTES = 500


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


def _url_over(kind: str, database_url: str) -> str | None:
    """The test server's address over a Unix socket or over TCP, or None where it does not listen so."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        settings = conn.execute(
            "SELECT current_setting('unix_socket_directories'), current_setting('listen_addresses'),"
            " current_setting('port'), current_database(), current_user"
        ).fetchone()
    assert settings is not None
    socket_dirs, listen, port, dbname, user = settings
    if kind == "unix":
        found = [d.strip() for d in socket_dirs.split(",") if (Path(d.strip()) / f".s.PGSQL.{port}").exists()]
        return f"postgresql://{user}@/{dbname}?host={found[0]}&port={port}" if found else None
    listening = {address.strip() for address in listen.split(",")}
    if listening & {"*", "0.0.0.0", "127.0.0.1", "localhost"}:  # noqa: S104 - what the server says it listens on.
        return f"postgresql://{user}@127.0.0.1:{port}/{dbname}"
    return None


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_a_save_of_many_megabytes_completes_over_either_connection(kind: str, clean_database: str) -> None:
    url = _url_over(kind, clean_database)
    if url is None:
        # The embedded server listens on a Unix socket only; CI's run against the machine's server covers TCP.
        pytest.skip(f"the test server has no {kind} listener")
    app = postgres_ledger(url)
    try:
        events = [
            StoredEvent(uuid4(), 1, "test.Large", bytes([n % 256]) * LARGE_EVENT_BYTES)
            for n in range(LARGE_BATCH_EVENTS)
        ]
        positions = app.recorder.insert_events(events)
        assert positions is not None
        assert len(positions) == LARGE_BATCH_EVENTS
        assert list(positions) == sorted(positions)
        last = app.recorder.select_notifications(positions[-1], 1)[0]
        assert (last.originator_id, last.state) == (events[-1].originator_id, events[-1].state)
    finally:
        app.close()


def test_an_append_that_waits_past_the_lock_timeout_is_unavailable_and_writes_nothing(clean_database: str) -> None:
    # Given another transaction holding the event table's write lock (as a long append would)
    app = postgres_ledger(clean_database, lock_timeout_seconds=1)
    recorder = app.recorder
    waiting = uuid4()
    try:
        with psycopg.connect(clean_database) as holder, holder.transaction():
            holder.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")
            # When an append waits for it, then it gives up after the lock timeout: the store is unavailable
            # (a 503 to the caller), and nothing of the append was committed
            with pytest.raises(StoreUnavailableError) as unavailable:
                recorder.insert_events([StoredEvent(waiting, 1, "test.Topic", b"waited")])
        assert unavailable.value.outcome_unknown is False
        assert list(recorder.select_events(waiting)) == []
    finally:
        app.close()
