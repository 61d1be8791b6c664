"""Group commit: many account commands, one transaction.

The event store locks its table for every write transaction, so one command per transaction is capped
at a few thousand a second whatever the concurrency. Here one writer thread per process takes every
command that has arrived (up to ``max_batch``, waiting at most ``max_wait_seconds`` for more), decides
them in memory in arrival order (commands on one account see each other's effects), and saves all the
accounts and idempotency markers in one transaction. Nobody gets an answer before that transaction
commits: a refusal too may rest on an earlier command of the batch, so it waits as well.

If the batch's save fails on a key (a duplicate request whose marker exists, or an account changed by
another process), every command of the batch runs again one at a time through the ledger's ordinary
path, which sorts out which one conflicts; the others still commit, each with its own exact answer.
Any other failure (the database gone) fails every command of the batch, and none is acknowledged.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID

import msgspec
from eventsourcing.persistence import IntegrityError
from eventsourcing.persistence import InterfaceError as StoreInterfaceError
from eventsourcing.persistence import OperationalError as StoreOperationalError

from ledger.commands import Command, IdempotencyKey
from ledger.errors import IdempotencyConflictError, LedgerError, StoreUnavailableError
from ledger.idempotency import IdempotencyRecord
from ledger.ids import request_id
from ledger.receipts import Receipt

log = logging.getLogger(__name__)

# A lost connection, as the store reports it: before a save (the batch's account refresh, a load) or
# during one (the recorder says whether the commit's outcome is known).
CONNECTION_FAULTS = (StoreUnavailableError, StoreOperationalError, StoreInterfaceError)


R = TypeVar("R", bound="Receipt")


@dataclass
class Plan(Generic[R]):
    """One account command, ready to be decided: everything ``Pipeline._execute`` needs, named."""

    aggregate_id: UUID
    lock: threading.Lock
    load: Callable[[], Any]
    decide: Callable[[Any, UUID | None], Callable[[int], R]]
    command: Command
    operation: str
    idempotency: IdempotencyKey | None
    now: datetime
    what: str
    companions: list[Any] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        return self.command.fingerprint() if self.idempotency else ""

    @property
    def marker_id(self) -> UUID | None:
        if self.idempotency is None:
            return None
        return request_id(self.idempotency.principal, self.operation, self.idempotency.key)


@dataclass
class _Committed:
    decided: list[_Decided]
    recordings: list[Any]


@dataclass
class _Conflicted:
    """A key collided: a duplicate request whose marker exists, or an account another process changed."""

    decided: list[_Decided]


@dataclass
class _Lost:
    fault: StoreUnavailableError


class Store(Protocol):
    """What the writer needs of the ledger: the pipeline's store, without importing it (no import cycle)."""

    @property
    def repository(self) -> Any: ...

    @property
    def recorder(self) -> Any: ...

    def save(self, *objs: Any, **kwargs: Any) -> Any: ...

    def execute_plan(self, plan: Plan[R]) -> R: ...

    def replay(
        self, marker_id: UUID | None, idempotency: IdempotencyKey | None, fingerprint: str, operation: str
    ) -> Receipt | None: ...

    def refresh_accounts(self, ids: list[UUID]) -> None: ...

    def discard_broken_connections(self) -> None: ...


@dataclass
class _Decided:
    plan: Plan[Any]
    future: Future[Receipt]
    receipt: Receipt | None = None
    error: BaseException | None = None


class GroupCommitWriter:
    def __init__(self, ledger: Store, *, max_batch: int = 256, max_wait_seconds: float = 0.0) -> None:
        self.ledger = ledger
        self.max_batch = max_batch
        self.max_wait_seconds = max_wait_seconds
        self._queue: queue.SimpleQueue[tuple[Plan[Any], Future[Receipt]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="ledger-writer", daemon=True)
        self.batches = 0
        self.commands = 0

    def start(self) -> GroupCommitWriter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    @property
    def in_writer(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, plan: Plan[R]) -> Future[R]:
        future: Future[R] = Future()
        self._queue.put((plan, future))  # type: ignore[arg-type] # The queue holds plans of every receipt type.
        return future

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.max_wait_seconds
            while len(batch) < self.max_batch:
                try:
                    wait = deadline - time.monotonic()
                    item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # Stop after this batch.
                    break
                batch.append(item)
            try:
                self._commit(batch)
            except BaseException as error:
                log.exception("group commit failed")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)

    def _commit(self, batch: list[tuple[Plan[Any], Future[Receipt]]]) -> None:
        # A caller that stopped waiting (its request answered 503 meanwhile) has its command dropped; the
        # others can no longer be cancelled from here on.
        batch = [(plan, future) for plan, future in batch if future.set_running_or_notify_cancel()]
        if not batch:
            return
        # Decided on the accounts as refreshed from the database; if another process changed one between
        # the refresh and the save, once more after dropping them from the cache; then one by one. A
        # connection lost before the commit is tried once more on a fresh connection.
        fresh = reconnected = False
        while True:
            attempt = self._attempt(batch, fresh=fresh)
            if isinstance(attempt, _Committed):
                self.batches += 1
                self.commands += len(batch)
                self._answer(attempt.decided, attempt.recordings)
                return
            if isinstance(attempt, _Conflicted):
                if not fresh:
                    fresh = True
                    continue
                self._one_at_a_time(attempt.decided)
                return
            if not attempt.fault.outcome_unknown and not reconnected:
                reconnected = True
                continue
            self._after_lost_connection(batch, attempt.fault)
            return

    def _attempt(
        self, batch: list[tuple[Plan[Any], Future[Receipt]]], *, fresh: bool
    ) -> _Committed | _Conflicted | _Lost:
        held: dict[int, threading.Lock] = {}
        working: dict[UUID, Any] = {}
        try:
            decided, to_save = self._decide_all(batch, working, held, fresh=fresh)
            recordings = self.ledger.save(*to_save) if to_save else []
        except IntegrityError:
            self._forget(working)
            return _Conflicted(decided)
        except CONNECTION_FAULTS as lost:
            # Nothing of this batch is known to have committed: the accounts it changed in memory must go,
            # and so must every pooled connection that died with the one this batch held.
            self._forget(working)
            self.ledger.discard_broken_connections()
            if isinstance(lost, StoreUnavailableError):
                return _Lost(lost)
            return _Lost(StoreUnavailableError(str(lost), outcome_unknown=False))
        except BaseException:
            self._forget(working)
            raise
        finally:
            for lock in held.values():
                lock.release()
        return _Committed(decided, recordings)

    def _after_lost_connection(
        self, batch: list[tuple[Plan[Any], Future[Receipt]]], fault: StoreUnavailableError
    ) -> None:
        """Answer a batch whose connection was lost twice, or lost while committing.

        When the commit's outcome is unknown, no caller may be told it succeeded or was refused: each
        command with an idempotency key is decided again on its own, and its marker says whether the
        batch committed it (its first answer) or not (decided afresh). A command without a key cannot be
        told apart from a new one, so its caller hears that the store is unavailable.
        """
        for plan, future in batch:
            if plan.idempotency is None or not fault.outcome_unknown:
                future.set_exception(fault)
                continue
            try:
                future.set_result(self.ledger.execute_plan(plan))
            except BaseException as error:  # noqa: BLE001 - each caller gets its own answer.
                future.set_exception(error)

    def _decide_all(
        self,
        batch: list[tuple[Plan[Any], Future[Receipt]]],
        working: dict[UUID, Any],
        held: dict[int, threading.Lock],
        *,
        fresh: bool,
    ) -> tuple[list[_Decided], list[Any]]:
        markers: dict[UUID, tuple[Plan[Any], Receipt]] = {}
        for plan, _ in batch:
            if id(plan.lock) not in held:
                # Other paths of this process (a webhook, the sweeper) take the same account locks.
                plan.lock.acquire()
                held[id(plan.lock)] = plan.lock
        # Every account of the batch, up to date in the cache, in two queries.
        self.ledger.refresh_accounts(list(dict.fromkeys(plan.aggregate_id for plan, _ in batch)))
        decided = [self._decide(plan, future, working, markers, fresh=fresh) for plan, future in batch]
        to_save = list(working.values())
        for item in decided:
            # Only a command decided now brings what it created (a reservation's index); a refused or
            # replayed one writes nothing of its own.
            if item.receipt is not None and not item.receipt.replayed:
                to_save.extend(item.plan.companions)
        for plan, receipt in markers.values():
            assert plan.idempotency is not None  # noqa: S101 - only keyed plans have markers.
            to_save.append(
                IdempotencyRecord.record(
                    principal=plan.idempotency.principal,
                    operation=plan.operation,
                    key=plan.idempotency.key,
                    fingerprint=plan.fingerprint,
                    receipt_type=type(receipt).__name__,
                    receipt=msgspec.to_builtins(receipt),
                    now=plan.now,
                )
            )
        return decided, to_save

    def _answer(self, decided: list[_Decided], recordings: list[Any]) -> None:
        positions = [r.notification.id for r in recordings if r.notification is not None]
        position = max(positions) if positions else (self.ledger.recorder.max_notification_id() or 0)
        for item in decided:
            if item.error is not None:
                item.future.set_exception(item.error)
            else:
                assert item.receipt is not None  # noqa: S101 - decided without error.
                receipt = item.receipt
                if not receipt.replayed:
                    receipt = msgspec.structs.replace(receipt, position=position)
                item.future.set_result(receipt)

    def _forget(self, working: dict[UUID, Any]) -> None:
        """Drop aggregates changed in memory by a batch that did not commit, so nobody reads them."""
        cache = self.ledger.repository.cache
        if cache is None:
            return
        for aggregate_id in working:
            with contextlib.suppress(KeyError):
                cache.get(aggregate_id, evict=True)

    def _load(self, plan: Plan[Any], working: dict[UUID, Any], *, fresh: bool) -> tuple[Any, bool]:
        """The aggregate a plan works on, and whether it is shared (the batch's, or the cache's own)."""
        aggregate = working.get(plan.aggregate_id)
        if aggregate is not None:
            return aggregate, True
        cache = self.ledger.repository.cache
        del fresh  # Both attempts read the cache: the batch's accounts were just refreshed into it.
        if cache is not None:
            try:
                # The cached object itself, not a copy: the account lock keeps other readers out, and
                # a batch that fails drops it from the cache.
                return cache.get(plan.aggregate_id), True
            except KeyError:
                pass
        return plan.load(), False

    def _decide(
        self,
        plan: Plan[Any],
        future: Future[Receipt],
        working: dict[UUID, Any],
        markers: dict[UUID, tuple[Plan[Any], Receipt]],
        *,
        fresh: bool,
    ) -> _Decided:
        item = _Decided(plan, future)
        marker_id = plan.marker_id
        if marker_id is not None and marker_id in markers:
            # The same request twice in one batch: the second gets the first's answer, or a conflict.
            first, receipt = markers[marker_id]
            if first.fingerprint != plan.fingerprint or first.operation != plan.operation:
                item.error = IdempotencyConflictError(plan.idempotency.key if plan.idempotency else "")
            else:
                item.receipt = msgspec.structs.replace(receipt, replayed=True)
            return item
        aggregate, shared = self._load(plan, working, fresh=fresh)
        plan.companions.clear()
        try:
            make_receipt = plan.decide(aggregate, marker_id)
        except LedgerError as refusal:
            item.error = refusal
            try:
                item.receipt = self.ledger.replay(marker_id, plan.idempotency, plan.fingerprint, plan.operation)
            except IdempotencyConflictError as conflict:
                # The key was used before with another body: that caller's answer, not the whole batch's.
                item.error = conflict
            if item.receipt is not None:
                item.error = None
            if shared:
                # A refused command writes nothing of its own, but the expiries it noticed on an account
                # already in memory are facts, saved with the batch.
                working[plan.aggregate_id] = aggregate
            return item
        except Exception:
            # Not a refusal but a fault, perhaps halfway through changing a shared account: the whole
            # batch fails and its accounts leave the cache (see _commit), rather than save half a change.
            working[plan.aggregate_id] = aggregate
            raise
        working[plan.aggregate_id] = aggregate
        item.receipt = make_receipt(0)
        if marker_id is not None:
            markers[marker_id] = (plan, item.receipt)
        return item

    def _one_at_a_time(self, decided: list[_Decided]) -> None:
        for item in decided:
            try:
                item.future.set_result(self.ledger.execute_plan(item.plan))
            except BaseException as error:  # noqa: BLE001 - each caller gets its own answer.
                item.future.set_exception(error)
