"""Deciding and saving planned commands: the one place where load, decide, save and the marker happen.

A batch of plans is decided in memory in arrival order (commands on one aggregate see each other's
effects) and everything it changed is saved, with the idempotency markers, in one transaction. Nobody gets
an answer before that transaction commits: a refusal too may rest on an earlier command of the batch, so
it waits as well. The group-commit writer (``ledger.group_commit``) hands it what arrived together; an event
loop's writer (``ledger.loop_writer``) takes its decision (``decide``) and its answers (``answer``) and
awaits the append itself; a process without either runs each command as a batch of one (``run_alone``).

If a batch's save fails on a key (a duplicate request whose marker exists, or an aggregate changed by
another process), it is decided once more on fresh state, and then each command runs alone, which sorts
out which one conflicts; the others still commit, each with its own exact answer. A connection lost before
the commit is tried once more; lost while committing, no caller is told anything its marker cannot prove.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.persistence import IntegrityError
from eventsourcing.persistence import InterfaceError as StoreInterfaceError
from eventsourcing.persistence import OperationalError as StoreOperationalError

from ledger.account_events import FALLEN_DUE
from ledger.errors import ConcurrencyError, IdempotencyConflictError, LedgerError, StoreUnavailableError
from ledger.idempotency import IdempotencyRecord
from ledger.plan import Batch, Plan, R, Store
from ledger.receipts import Receipt
from ledger.replies import Reply, post_all

# A lost connection, as the store reports it: before a save (the batch's account refresh, a load) or
# during one (the recorder says whether the commit's outcome is known).
CONNECTION_FAULTS = (StoreUnavailableError, StoreOperationalError, StoreInterfaceError)
# Another process changing the same aggregate is rare; a few quick retries resolve it.
MAX_ATTEMPTS = 25


@dataclass
class _Decided:
    plan: Plan[Any]
    future: Reply
    aggregate: Any = None
    receipt: Receipt | None = None
    error: BaseException | None = None
    # Refused after changing an aggregate that earlier commands of the batch changed too.
    unsaveable: bool = False


@dataclass
class Decision:
    """A batch decided in memory: each command's answer, and the aggregates and markers to save."""

    decided: list[_Decided]
    to_save: list[Any]


@dataclass
class _Committed:
    decided: list[_Decided]
    positions: list[int]


@dataclass
class Conflicted:
    """A key collided (a duplicate request whose marker exists, or an aggregate another process changed), or
    the batch cannot be saved as decided: it is decided again on fresh state."""

    decided: list[_Decided]


@dataclass
class _Lost:
    fault: StoreUnavailableError


# How long after a save failed on a key every batch checks its cached accounts against the log: while no
# save fails, the cache is trusted, since a stale copy cannot be saved over (its next version is taken);
# once one does, another process is writing these accounts, and checking first is cheaper than failing.
TRUST_AFTER_SECONDS = 10.0


class Committer:
    """Decides batches of plans and saves each in one transaction."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.batches = 0
        self.commands = 0
        self._conflicted_at = -math.inf

    def commit(self, batch: Batch) -> None:
        """Decide and save a batch, and answer every caller through its future."""
        # A caller that stopped waiting (its request answered 503 meanwhile) has its command dropped; the
        # others can no longer be cancelled from here on.
        batch = [(plan, future) for plan, future in batch if future.set_running_or_notify_cancel()]
        if not batch:
            return
        fresh = reconnected = False
        while True:
            attempt = self._attempt(batch, verify=fresh)
            if isinstance(attempt, _Committed):
                self.batches, self.commands = self.batches + 1, self.commands + len(attempt.decided)
                self.answer(attempt.decided, attempt.positions)
                return
            if isinstance(attempt, Conflicted):
                if not fresh:
                    fresh = True  # The failed attempt dropped its aggregates: the next one reads them again.
                    continue
                for item in attempt.decided:
                    settle(item.future, lambda item=item: self.run_alone(item.plan))  # type: ignore[misc]
                return
            if not attempt.fault.outcome_unknown and not reconnected:
                reconnected = True
                continue
            self.after_lost_connection(batch, attempt.fault)
            return

    def run_alone(self, plan: Plan[R]) -> R:
        """Decide and save one command in a transaction of its own, on this thread.

        A conflict is either the request's own marker (its first answer, or a refusal of a different
        body) or another process's change to the aggregate (decided again on fresh state, after a pause).
        """
        reconnected = False
        for _ in range(MAX_ATTEMPTS):
            future: Future[Receipt] = Future()
            future.set_running_or_notify_cancel()
            attempt = self._attempt([(plan, future)], verify=True)
            if isinstance(attempt, _Committed):
                self.batches, self.commands = self.batches + 1, self.commands + 1
                self.answer(attempt.decided, attempt.positions)
                return future.result()  # type: ignore[return-value]
            if isinstance(attempt, Conflicted):
                replay = self.store.replay(plan.marker_id, plan.idempotency, plan.fingerprint, plan.operation)
                if replay is not None:
                    return replay  # type: ignore[return-value]
                _pause()
                continue
            if attempt.fault.outcome_unknown or reconnected:
                raise attempt.fault
            reconnected = True
        raise ConcurrencyError(f"{plan.what} kept changing")

    @property
    def conflicted_lately(self) -> bool:
        """Whether a save failed on a key lately: cached accounts are then checked against the log first."""
        return time.monotonic() - self._conflicted_at < TRUST_AFTER_SECONDS

    def collided(self) -> None:
        """A save failed on a key: another process may be writing these accounts."""
        self._conflicted_at = time.monotonic()

    def _attempt(self, batch: Batch, *, verify: bool) -> _Committed | Conflicted | _Lost:
        """Decide and save a batch once. Its cached accounts are checked against the log when ``verify`` is
        set or a save failed on a key lately; otherwise they are trusted (a stale copy fails its save)."""
        held: dict[int, threading.Lock] = {}
        working: dict[UUID, Any] = {}
        checked = verify or self.conflicted_lately
        try:
            lock_all(batch, held, blocking=True)
            # Every account of the batch, up to date in the cache, in two queries.
            ids = list(dict.fromkeys(plan.aggregate_id for plan, _ in batch))
            self.store.refresh_accounts(ids, cached_too=checked)
            decision = self.decide(batch, working, checked=checked)
            if isinstance(decision, Conflicted):
                return decision
            recordings = self.store.save(*decision.to_save) if decision.to_save else []
        except IntegrityError:
            self.forget(working)
            self.collided()
            return Conflicted(decision.decided)
        except CONNECTION_FAULTS as lost:
            # Nothing of this batch is known to have committed: the aggregates it changed in memory must
            # go, and so must every pooled connection that died with the one this batch held.
            self.forget(working)
            self.store.discard_broken_connections()
            if isinstance(lost, StoreUnavailableError):
                return _Lost(lost)
            return _Lost(StoreUnavailableError(str(lost), outcome_unknown=False))
        except BaseException:
            self.forget(working)
            raise
        finally:
            release_all(held)
        return _Committed(decision.decided, [r.notification.id for r in recordings if r.notification is not None])

    def decide(self, batch: Batch, working: dict[UUID, Any], *, checked: bool) -> Decision | Conflicted:
        """Decide a batch whose account locks are held, in memory: what to save, or that it cannot be saved as
        decided (then nothing it changed stays in memory). ``checked``: its cached accounts are the log's."""
        decision = self._decide_all(batch, working, checked=checked)
        if not checked and any(_read_only(item) for item in decision.decided):
            # A refusal, or an answer that only read its account, saves nothing of the account, so a stale
            # copy would not fail it: it may rest on a balance another process has moved on from. The batch
            # is decided again on the log's state.
            self.forget(working)
            return Conflicted(decision.decided)
        if any(item.unsaveable for item in decision.decided):
            # Decided again on fresh state, then one command at a time, where no refusal shares its
            # aggregate with another command.
            self.forget(working)
            return Conflicted(decision.decided)
        return decision

    def after_lost_connection(self, batch: Batch, fault: StoreUnavailableError) -> None:
        """Answer a batch whose connection was lost twice, or lost while committing.

        When the commit's outcome is unknown, no caller may be told it succeeded or was refused: each
        command with an idempotency key is decided again on its own, and its marker says whether the
        batch committed it (its first answer) or not (decided afresh). A command without a key cannot be
        told apart from a new one, so its caller hears that the store is unavailable.
        """
        for plan, future in batch:
            if plan.idempotency is None or not fault.outcome_unknown:
                future.set_exception(fault)
                post_all([future])
            else:
                settle(future, lambda plan=plan: self.run_alone(plan))  # type: ignore[misc]

    def _decide_all(self, batch: Batch, working: dict[UUID, Any], *, checked: bool) -> Decision:
        markers: dict[UUID, tuple[Plan[Any], Receipt]] = {}
        decided = [self._decide(plan, future, working, markers, checked=checked) for plan, future in batch]
        # An aggregate a command only looked at (a refusal, nothing due) has nothing to save.
        to_save = [aggregate for aggregate in working.values() if aggregate.pending_events]
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
        return Decision(decided, to_save)

    def answer(self, decided: list[_Decided], positions: list[int]) -> None:
        """Answer every caller of a committed batch; ``positions`` are its events' places in the log."""
        position = max(positions) if positions else None
        for item in decided:
            if item.error is not None:
                item.future.set_exception(item.error)
                continue
            assert item.receipt is not None  # noqa: S101 - decided without error.
            receipt = item.receipt
            if not receipt.replayed:
                if position is None:
                    # Nothing written: the log's head is enough to read one's own (unchanged) state.
                    position = self.store.recorder.max_notification_id() or 0
                receipt = msgspec.structs.replace(receipt, position=position)
                if item.plan.saved is not None:
                    item.plan.saved(item.aggregate)
            item.future.set_result(receipt)
        post_all(item.future for item in decided)  # Answered now, not after the rest of the batch's retries.

    def forget(self, working: dict[UUID, Any]) -> None:
        """Drop aggregates changed in memory by a batch that did not commit, so nobody reads them."""
        cache = self.store.repository.cache
        if cache is None:
            return
        for aggregate_id in working:
            with contextlib.suppress(KeyError):
                cache.get(aggregate_id, evict=True)

    def _load(self, plan: Plan[Any], working: dict[UUID, Any]) -> tuple[Any, bool]:
        """The aggregate a plan works on, and whether it is shared (the batch's, or the cache's own)."""
        aggregate = working.get(plan.aggregate_id)
        if aggregate is not None:
            return aggregate, True
        cache = self.store.repository.cache
        if cache is not None:
            try:
                # The cached object itself, not a copy: the lock keeps other writers out, and a batch that
                # fails drops it from the cache.
                return cache.get(plan.aggregate_id), True
            except KeyError:
                pass
        return plan.load(), False

    def _decide(
        self,
        plan: Plan[Any],
        future: Reply,
        working: dict[UUID, Any],
        markers: dict[UUID, tuple[Plan[Any], Receipt]],
        *,
        checked: bool,
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
        aggregate, shared = self._load(plan, working)
        item.aggregate = aggregate
        plan.companions.clear()
        pending_before = len(aggregate.pending_events)
        try:
            make_receipt = plan.decide(aggregate, marker_id)
        except LedgerError as refusal:
            self._refused(item, refusal, shared=shared, pending_before=pending_before, working=working, checked=checked)
            return item
        except Exception:
            # Not a refusal but a fault, perhaps halfway through changing a shared aggregate: the whole
            # batch fails and its aggregates leave the cache, rather than save half a change.
            working[plan.aggregate_id] = aggregate
            raise
        working[plan.aggregate_id] = aggregate
        item.receipt = make_receipt(0)
        if marker_id is not None:
            markers[marker_id] = (plan, item.receipt)
        return item

    def _refused(
        self,
        item: _Decided,
        refusal: LedgerError,
        *,
        shared: bool,
        pending_before: int,
        working: dict[UUID, Any],
        checked: bool,
    ) -> None:
        """Answer a refused command: its first answer if its key was used before, else the refusal; and keep
        of its aggregate only what had fallen due.

        Unless the batch's accounts were ``checked`` against the log, a refusal has the batch decided again
        there (``decide``), which is where a key's first answer is looked up: a lookup now would be a read
        made for nothing, and on an event loop a read that blocks it."""
        plan, aggregate, marker_id = item.plan, item.aggregate, item.plan.marker_id
        item.error = refusal
        if checked:
            try:
                item.receipt = self.store.replay(marker_id, plan.idempotency, plan.fingerprint, plan.operation)
            except IdempotencyConflictError as conflict:
                # The key was used before with another body: that caller's answer, not the whole batch's.
                item.error = conflict
        if item.receipt is not None:
            item.error = None
        if all(isinstance(event, FALLEN_DUE) for event in aggregate.pending_events[pending_before:]):
            if shared:
                # A refused command writes nothing of its own, but the expiries it noticed on an aggregate
                # already in memory are facts, saved with the batch.
                working[plan.aggregate_id] = aggregate
            return
        # The refusal came after a change of its own (a checkout recorded a payment whose credits the
        # account then refused): none of it may be saved, nor stay in memory.
        if plan.aggregate_id in working:
            item.unsaveable = True  # Earlier commands of the batch changed it too: the attempt goes.
        else:
            self.forget({plan.aggregate_id: aggregate})


def lock_all(batch: Batch, held: dict[int, threading.Lock], *, blocking: bool) -> bool:
    """Take the account locks of a batch into ``held``; without ``blocking``, False if one is taken."""
    for plan, _ in batch:
        if id(plan.lock) not in held:
            if not plan.lock.acquire(blocking=blocking):
                return False
            held[id(plan.lock)] = plan.lock
    return True


def release_all(held: dict[int, threading.Lock]) -> None:
    for lock in held.values():
        lock.release()
    held.clear()


def _read_only(item: _Decided) -> bool:
    """Whether a decided command rests on its aggregate's state without saving anything of it."""
    if item.error is not None:
        return True
    changed = item.aggregate is not None and bool(item.aggregate.pending_events)
    return item.receipt is not None and not item.receipt.replayed and not changed


def settle(future: Reply, run: Callable[[], Receipt]) -> None:
    """Give ``future`` what ``run`` answers or raises: each caller gets its own answer."""
    try:
        future.set_result(run())
    except BaseException as error:  # noqa: BLE001 - handed to the caller through the future.
        future.set_exception(error)
    post_all([future])


def _pause() -> None:
    """A short random wait before retrying a conflict, so racing processes do not collide again."""
    time.sleep(random.uniform(0.0005, 0.005))  # noqa: S311 - jitter, not security
