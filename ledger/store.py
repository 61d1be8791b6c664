"""The store: the event store library's application, kept with the ledger's own aggregates and tables.

Everything here goes around a part of the library's per-event machinery that the write path cannot afford
(runtime checks on save, a second read to snapshot, a cache left cold after a write, one round trip per
account to refresh a batch), using its table, mapper and recorder as they are.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any, ClassVar, Final
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate, Snapshot
from eventsourcing.persistence import StoredEvent

from ledger.account import CreditAccount
from ledger.errors import (
    NotFoundError,
)
from ledger.ids import account_id
from ledger.reservations import ReservationIndex, ReservationOwners, reservation_index_id

log = logging.getLogger(__name__)

# ``save``, ``_record`` and ``_take_snapshots`` below replace the library's Application methods of those
# names, private steps of its ``save``, and ``recorded`` leaves out the third, ``_notify``, which does
# nothing. With another release, read ``Application.save`` and those three again, mend this class if they
# changed, then move this on (tests/ledger/test_store_hooks.py fails until then).
CHECKED_WITH_EVENTSOURCING: Final = "9.5.6"

# Reservation owners a process keeps in memory (``ledger.reservations``): about 0.2 KB each, so about 20 MB
# when full: the holds of 100 seconds at 1,000 a second. A settlement of an older hold reads its index on a
# worker thread, as every settlement did before: slower, never wrong.
MEMORY_RESERVATION_OWNERS = 100_000


class LedgerStore(Application):  # type: ignore[type-arg]
    """The library's application, with the ledger's shortcuts around its per-event machinery."""

    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {CreditAccount: 200}

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        self.reservation_owners = ReservationOwners(MEMORY_RESERVATION_OWNERS)

    def get_account(self, user_id: str) -> CreditAccount | None:
        try:
            account: CreditAccount = self.repository.get(account_id(user_id))
        except AggregateNotFoundError:
            return None
        return account

    def _load_account(self, user_id: str, now: datetime) -> CreditAccount | None:
        del now  # Loading does not depend on time; it is here so callers read alike.
        return self.get_account(user_id)

    def reservation_owner(self, reservation_id: str) -> str:
        """The user whose account holds a reservation: known in memory, or read from its index."""
        owner = self.reservation_owners.get(reservation_id)
        if owner is not None:
            return owner
        try:
            entry: ReservationIndex = self.repository.get(reservation_index_id(reservation_id))
        except AggregateNotFoundError:
            raise NotFoundError("reservation", reservation_id) from None
        self.reservation_owners.learn(reservation_id, entry.user_id)
        return entry.user_id

    def refresh_accounts(self, ids: list[UUID], *, cached_too: bool = True) -> None:
        """Bring the cached copies of these accounts up to date, and load the missing ones: two queries in all.

        With ``cached_too`` false only the missing ones are read: a cached copy is trusted, because a stale
        one cannot be saved over (its next version is taken, so the batch's save fails on the key and is
        decided again on fresh state).

        The group-commit writer calls this for a batch, holding the batch's account locks, before deciding
        it. One account at a time, a cold or stale cache costs a round trip or two per command on the
        writer's only thread (measured: most of its time), and a stale copy (another process wrote the
        account) fails the whole batch's save. Accounts that do not exist yet are left alone.
        """
        cache = self.repository.cache
        datastore = getattr(self.recorder, "datastore", None)
        if cache is None or datastore is None or self.snapshots is None or not ids:
            return
        accounts: dict[UUID, Any] = {}
        for aggregate_id in ids:
            with contextlib.suppress(KeyError):
                accounts[aggregate_id] = cache.get(aggregate_id)
        missing = [aggregate_id for aggregate_id in ids if aggregate_id not in accounts]
        if not cached_too:
            if not missing:
                return
            ids, accounts = missing, {}
        snapshots_table = self.snapshots.recorder.events_table_name  # type: ignore[attr-defined]
        events_table = self.recorder.events_table_name  # type: ignore[attr-defined]
        # Outside a transaction: each query reads committed events, and a read needs no BEGIN and ROLLBACK
        # (two more round trips per batch, most of a batch of one's wait on a quiet server). Events committed
        # between the two queries are only more of the same stream, folded like the rest.
        with datastore.get_connection() as conn, conn.cursor() as cursor:
            if missing:
                cursor.execute(
                    f"SELECT DISTINCT ON (originator_id) originator_id, originator_version, topic, state"  # noqa: S608
                    f" FROM {snapshots_table} WHERE originator_id = ANY(%b)"
                    " ORDER BY originator_id, originator_version DESC",
                    (missing,),
                )
                for row in cursor.fetchall():
                    snapshot: Any = self.mapper.to_domain_event(
                        StoredEvent(row["originator_id"], row["originator_version"], row["topic"], bytes(row["state"]))
                    )
                    accounts[row["originator_id"]] = snapshot.mutate(None)
            cursor.execute(
                # One index range scan per account: a plain join of the ids is planned as a scan of the whole
                # event table (measured: 36 ms against 0.7 ms for 32 accounts), and so is a LATERAL join once
                # the statement is prepared, unless OFFSET 0 keeps the subquery from being flattened.
                "SELECT e.originator_id, e.originator_version, e.topic, e.state"  # noqa: S608 - our table name.
                " FROM unnest(%b::uuid[], %b::bigint[]) WITH ORDINALITY AS s(id, version, n)"
                " CROSS JOIN LATERAL (SELECT originator_id, originator_version, topic, state"
                f" FROM {events_table} WHERE originator_id = s.id AND originator_version > s.version"
                " ORDER BY originator_version OFFSET 0) AS e"
                " ORDER BY s.n, e.originator_version",
                (ids, [accounts[i].version if i in accounts else 0 for i in ids]),
            )
            for row in cursor.fetchall():
                event: Any = self.mapper.to_domain_event(
                    StoredEvent(row["originator_id"], row["originator_version"], row["topic"], bytes(row["state"]))
                )
                accounts[row["originator_id"]] = event.mutate(accounts.get(row["originator_id"]))
        for aggregate_id, account in accounts.items():
            if isinstance(account, CreditAccount):
                cache.put(aggregate_id, account)

    def discard_broken_connections(self) -> None:
        """Test every idle pooled connection and replace the dead ones, after one was found dead.

        Connections are not tested before each use (a round trip on every command); after a database
        restart every one in the pool is dead, and without this each would fail a command in turn.
        """
        datastore = getattr(self.recorder, "datastore", None)
        if datastore is not None:
            datastore.pool.check()

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        """The library's ``save``, for this ledger's own aggregates only.

        The library's version asks of each object whether it is an event or an aggregate with runtime
        protocol checks, which cost about 3% of a debit's CPU in the benchmark's profile; everything
        this ledger saves is an aggregate.
        """
        processing_event = self.collect(objs, **kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        return recordings

    def collect(self, aggregates: Iterable[Any], **kwargs: Any) -> ProcessingEvent[UUID]:
        """The new events of these aggregates, as the library's ``save`` gathers them to record."""
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        for aggregate in aggregates:
            if not isinstance(aggregate, Aggregate):
                raise TypeError(f"not an aggregate: {aggregate!r}")
            processing_event.events.extend(aggregate.collect_events())
            processing_event.aggregates[aggregate.id] = aggregate
        processing_event.saved_kwargs.update(kwargs)
        return processing_event

    def recorded(self, processing_event: ProcessingEvent[UUID]) -> list[Snapshot]:
        """The rest of ``save`` for events appended elsewhere: keep the saved accounts in the cache and the
        reservations' owners in memory, and return the snapshots due for the caller to put in the store when
        it can wait. The library's ``_notify`` is not called: it does nothing here
        (tests/ledger/test_store_hooks.py fails if the library, the store or the ledger gives it work)."""
        self._remember(processing_event)
        return self._snapshots_due(processing_event)

    def _record(self, processing_event: Any) -> Any:
        """Record, then keep the saved accounts in the cache (and the reservations' owners).

        With fast-forward on, the library caches an aggregate only when it is read, so an account written
        once and read again later is rebuilt from the database. The saved object is exactly the
        committed state, so it goes into the cache as it is.
        """
        recordings = super()._record(processing_event)
        self._remember(processing_event)
        return recordings

    def _remember(self, processing_event: ProcessingEvent[UUID]) -> None:
        """Keep what was just committed: the accounts in the cache, the reservations' owners."""
        cache = self.repository.cache
        for aggregate_id, aggregate in processing_event.aggregates.items():
            if isinstance(aggregate, CreditAccount):
                if cache is not None:
                    cache.put(aggregate_id, aggregate)
            elif isinstance(aggregate, ReservationIndex):
                self.reservation_owners.learn(aggregate.reservation_id, aggregate.user_id)

    def _take_snapshots(self, processing_event: Any) -> None:
        """Snapshot from the aggregate in memory, which is exactly the saved state.

        The library's version rebuilds the aggregate from the database first, a second read on the
        write path.
        """
        self.put_snapshots(self._snapshots_due(processing_event))

    def put_snapshots(self, snapshots: list[Snapshot]) -> None:
        """A failure here must not fail the command: its events are already committed."""
        if self.snapshots is None or not snapshots:
            return
        try:
            self.snapshots.put(snapshots)
        except Exception:
            log.exception(
                "snapshots of %s failed", ", ".join(f"{s.originator_id}@{s.originator_version}" for s in snapshots)
            )

    def _snapshots_due(self, processing_event: Any) -> list[Snapshot]:
        if self.snapshots is None:
            return []
        # Counted once for the batch, not by scanning all its events for each aggregate.
        new_events = Counter(event.originator_id for event in processing_event.events)
        due: list[Snapshot] = []
        for aggregate in processing_event.aggregates.values():
            interval = self.snapshotting_intervals.get(type(aggregate))
            if interval is None:
                continue
            versions = range(aggregate.version - new_events[aggregate.id] + 1, aggregate.version + 1)
            if any(version % interval == 0 for version in versions):
                due.append(type(aggregate).Snapshot.take(aggregate))
        return due
