"""The store goes around the event store library's ``save`` through three private methods of its
``Application`` (``ledger.store``): ``_record``, ``_take_snapshots`` and ``_notify``. These tests fail on a
release of the library that renames them, changes what they take, or stops calling them from ``save``."""

from __future__ import annotations

import inspect
from importlib.metadata import version

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate

from ledger import store
from ledger.application import Ledger
from ledger.store import LedgerStore


class _Thing(Aggregate):
    pass


def test_eventsourcing_is_the_release_the_store_was_checked_against() -> None:
    # With another release, read Application.save and the three steps again (ledger.store says what
    # depends on them), mend LedgerStore if they changed, then move CHECKED_WITH_EVENTSOURCING on.
    assert version("eventsourcing") == store.CHECKED_WITH_EVENTSOURCING


def test_the_librarys_save_records_then_snapshots_then_notifies_through_the_steps_the_store_replaces() -> None:
    # Given an application of the library's that notes each private step of save
    steps: list[str] = []

    class Noting(Application):  # type: ignore[type-arg]
        def _record(self, processing_event):  # type: ignore[no-untyped-def]
            steps.append("_record")
            return super()._record(processing_event)

        def _take_snapshots(self, processing_event):  # type: ignore[no-untyped-def]
            steps.append("_take_snapshots")
            super()._take_snapshots(processing_event)

        def _notify(self, recordings):  # type: ignore[no-untyped-def]
            steps.append("_notify")
            super()._notify(recordings)

    application = Noting(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})

    # When it saves an aggregate
    recordings = application.save(_Thing())

    # Then save took the three steps, in the order LedgerStore.save takes them
    assert steps == ["_record", "_take_snapshots", "_notify"]
    assert len(recordings) == 1


def test_the_steps_the_store_replaces_take_what_the_store_passes() -> None:
    for name, parameters in (
        ("_record", ["self", "processing_event"]),
        ("_take_snapshots", ["self", "processing_event"]),
        ("_notify", ["self", "recordings"]),
    ):
        assert list(inspect.signature(getattr(Application, name)).parameters) == parameters, name
        assert list(inspect.signature(getattr(LedgerStore, name)).parameters) == parameters, name


def test_the_step_the_loop_writer_leaves_out_does_nothing_here() -> None:
    # LedgerStore.recorded, which stands for save once the loop writer has appended a batch, does not build
    # what _notify takes: the library's own does nothing, and neither the store nor the ledger replaces it.
    assert LedgerStore._notify is Application._notify
    assert Ledger._notify is Application._notify
