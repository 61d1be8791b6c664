"""Group commit on the caller's event loop, pipelined: the common batch never leaves it.

The commands an event loop submits form its batches. The commands of a batch whose accounts are in the
cache (and whose locks are free) are decided right there (``Committer.decide``: in memory, no I/O), their
events are appended with one awaited statement (``ledger.appender``), and each caller's future is
answered directly. The writer thread (``ledger.group_commit``) is then not involved: no hand-over to it and back,
and no wait for the GIL while the loop and a thread take turns (measured: a quarter of a single debit's
time, and most of an append's time under load).

Batches are pipelined: while one batch is being appended, the next is decided and sent on a second
connection, where it waits for the event table's lock and goes in as soon as the first commits, instead
of being decided only once the first has answered. A batch takes only commands whose accounts no batch
in flight holds (a command on such an account waits for the batch after), so it never rests on a
decision that may not commit, and never waits for a batch it does not depend on. The table lock keeps
commit order equal to position order, and each batch is answered when its own append returns.

Anything else is the writer thread's, with the semantics it has always had: an account to read first, a
lock another thread holds, a refusal or a conflict to decide again on fresh state, a lost connection whose
outcome only the idempotency markers can tell.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from ledger.appender import Appended, Appender, Collided
from ledger.commit import Committer, Conflicted, Decision, lock_all, release_all
from ledger.errors import StoreUnavailableError
from ledger.group_commit import GroupCommitWriter
from ledger.plan import Batch, Plan
from ledger.replies import LoopReply
from ledger.store import LedgerStore

log = logging.getLogger(__name__)

# Commands waiting for the loop's next batch, at most: past it, a caller hears at once that the ledger is
# busy (503), rather than joining a queue it would time out in.
MAX_WAITING = 10_000
# Batches of one loop being appended at once, each on a connection of its own: one committing, the next
# waiting for the table lock.
PIPELINE_DEPTH = 2


@dataclass
class _Sending:
    """A batch decided on the loop, on its way to the log."""

    batch: Batch
    decision: Decision
    working: dict[UUID, Any]
    held: dict[int, threading.Lock]
    processing_event: Any
    stored_events: list[StoredEvent]
    started: bool = False
    given_back: bool = False


class LoopWriter:
    def __init__(
        self,
        store: LedgerStore,
        committer: Committer,
        appenders: Sequence[Appender],
        thread: GroupCommitWriter,
        max_batch: int,
    ) -> None:
        if not appenders:
            raise ValueError("a loop writer needs at least one appender")
        self.store = store
        self.committer = committer
        self.appenders = tuple(appenders)
        self.thread = thread
        self.max_batch = max_batch
        # What this loop committed itself, as the writer thread counts its own.
        self.batches = 0
        self.commands = 0
        self._waiting: collections.deque[tuple[Plan[Any], LoopReply]] = collections.deque()
        self._draining: asyncio.Task[None] | None = None
        # Connections free to append, and the batches being appended with the account locks they hold.
        self._free: list[Appender] = list(reversed(self.appenders))
        self._in_flight: dict[asyncio.Task[None], frozenset[int]] = {}
        self._wakeup: asyncio.Future[None] | None = None

    def submit(self, plan: Plan[Any], reply: LoopReply) -> None:
        """Queue ``plan`` for this loop's next batch; called on the loop."""
        if len(self._waiting) >= MAX_WAITING:
            reply.set_exception(StoreUnavailableError("the ledger is busy", outcome_unknown=False))
            return
        self._waiting.append((plan, reply))
        if self._draining is None:
            # An idle loop (no batch in flight, none waiting) sends the command at once: handing it to the
            # drain task first was a turn of the loop on a lone debit's path (measured, 8 pairs of windows
            # at one connection: with the answer published after it is sent, about 40 µs of its 1 ms). The
            # drain runs after the callbacks already due in this turn: requests read with this one join
            # its next batch.
            if self._free and not self._in_flight:
                self._start(self._next_batch())
            self._draining = asyncio.get_running_loop().create_task(self._drain())
        elif self._wakeup is not None and not self._wakeup.done() and not self._held(plan):
            self._wakeup.set_result(None)

    async def _drain(self) -> None:
        try:
            while self._waiting or self._in_flight:
                batch = self._next_batch() if self._free else []
                if batch:
                    self._start(batch)
                    continue
                # Until a batch in flight is answered (its accounts free, its connection free) or, with a
                # connection free, a command arrives. The wake-up runs after the turn that queued it, so
                # the commands read in that turn go together.
                waits: list[asyncio.Future[Any]] = list(self._in_flight)
                if self._free:
                    self._wakeup = asyncio.get_running_loop().create_future()
                    waits.append(self._wakeup)
                done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                self._wakeup = None
                for task in done:
                    if task in self._in_flight:
                        del self._in_flight[task]
                        if not task.cancelled():
                            task.result()  # Anything but an Exception (answered to the callers) goes on up.
        finally:
            self._draining = None

    def _held(self, plan: Plan[Any]) -> bool:
        """Whether a batch in flight holds the account of ``plan``."""
        return id(plan.lock) in self._held_locks()

    def _held_locks(self) -> frozenset[int]:
        """The account locks the batches in flight hold (their ids)."""
        return frozenset().union(*self._in_flight.values())

    def _next_batch(self) -> Batch:
        """Up to ``max_batch`` waiting commands, in arrival order, none on an account a batch in flight holds.

        At most ``max_batch`` commands are looked at, so a queue of commands on held accounts costs little."""
        held = self._held_locks()
        if not held:
            size = min(len(self._waiting), self.max_batch)
            return [self._waiting.popleft() for _ in range(size)]
        batch: Batch = []
        later: list[tuple[Plan[Any], LoopReply]] = []
        for _ in range(min(len(self._waiting), self.max_batch)):
            item = self._waiting.popleft()
            (later if id(item[0].lock) in held else batch).append(item)
        self._waiting.extendleft(reversed(later))
        return batch

    def _start(self, batch: Batch) -> None:
        """Decide a batch now and send it to the log on a free connection, or hand it to the writer thread."""
        # A caller that stopped waiting has its command dropped; from here on, none can be cancelled.
        batch = [(plan, reply) for plan, reply in batch if reply.set_running_or_notify_cancel()]
        if self.committer.conflicted_lately:
            self._to_thread(batch)
            return
        # An account not in memory is read by the writer thread, with its commands; the rest of the batch
        # need not wait for that read (every command of an account goes the same way, in order). Only the
        # commands decided here are answered here, a failure included.
        batch, cold = self._in_memory(batch)
        self._to_thread(cold)
        if not batch:
            return
        try:
            sending = self._decide(batch)
        except BaseException as error:
            self._failed(batch, error)
            if not isinstance(error, Exception):
                raise
            return
        if sending is None:
            return
        appender = self._free.pop()
        task = asyncio.get_running_loop().create_task(self._send(sending, appender))
        # A task cancelled before its first step never runs its body: this gives its locks and connection
        # back and answers its callers then.
        task.add_done_callback(lambda _: self._sent(sending, appender))
        self._in_flight[task] = frozenset(sending.held)

    def _decide(self, batch: Batch) -> _Sending | None:
        """The batch decided, holding its account locks, if it has events to append; None when it was
        answered already or handed to the writer thread."""
        held: dict[int, threading.Lock] = {}
        # In memory still once locked: an account the writer thread dropped meanwhile is the thread's to read.
        if not lock_all(batch, held, blocking=False) or self._in_memory(batch)[1]:
            release_all(held)
            self._to_thread(batch)
            return None
        working: dict[UUID, Any] = {}
        try:
            decision = self.committer.decide(batch, working, checked=False)
            if isinstance(decision, Conflicted):
                release_all(held)
                self._to_thread(batch)
                return None
            if not decision.to_save:
                release_all(held)
                self._answer(decision, [])
                return None
            processing_event = self.store.collect(decision.to_save)
            stored_events = [self.store.mapper.to_stored_event(event) for event in processing_event.events]
        except BaseException:
            self.committer.forget(working)
            release_all(held)
            raise
        return _Sending(batch, decision, working, held, processing_event, stored_events)

    async def _send(self, sending: _Sending, appender: Appender) -> None:
        sending.started = True
        try:
            try:
                outcome = await appender.append(sending.stored_events)
                if isinstance(outcome, Appended):
                    # Kept while the batch holds its accounts' locks: once they are free another writer may
                    # change an account, and the cache must not be given this batch's copy after that.
                    snapshots = self.store.recorded(sending.processing_event)
                    if snapshots:
                        asyncio.get_running_loop().run_in_executor(None, self.store.put_snapshots, snapshots)
                else:
                    self.committer.forget(sending.working)
            except BaseException:
                self.committer.forget(sending.working)
                raise
            finally:
                self._sent(sending, appender)
            if isinstance(outcome, Appended):
                self._answer(sending.decision, outcome.positions)
            elif isinstance(outcome, Collided):
                self.committer.collided()
                self._to_thread(sending.batch)
            else:
                self._after_lost_connection(sending.batch, outcome.fault)
        except BaseException as error:
            self._failed(sending.batch, error)
            if not isinstance(error, Exception):
                raise

    def _sent(self, sending: _Sending, appender: Appender) -> None:
        """Give back a batch's locks and connection, once; a batch that never ran is dropped from memory
        and its callers hear that nothing was written."""
        if sending.given_back:
            return
        sending.given_back = True
        if not sending.started:  # Cancelled before its body ran.
            self.committer.forget(sending.working)
            self._failed(sending.batch, StoreUnavailableError("the ledger is stopping", outcome_unknown=False))
        release_all(sending.held)
        self._free.append(appender)

    def _answer(self, decision: Decision, positions: list[int]) -> None:
        self.batches, self.commands = self.batches + 1, self.commands + len(decision.decided)
        self.committer.answer(decision.decided, positions)

    def _failed(self, batch: Batch, error: BaseException) -> None:
        log.error("group commit failed", exc_info=error)
        for _, reply in batch:
            if not reply.done():
                reply.set_exception(error)

    def _in_memory(self, batch: Batch) -> tuple[Batch, Batch]:
        """The commands of the batch whose accounts are in memory (deciding them reads nothing), and the others."""
        cache = self.store.repository.cache
        if cache is None:
            return [], batch
        warm: Batch = []
        cold: Batch = []
        for item in batch:
            try:
                cache.get(item[0].aggregate_id)
            except KeyError:
                cold.append(item)
            else:
                warm.append(item)
        return warm, cold

    def _to_thread(self, batch: Batch) -> None:
        """The writer thread decides these (again, on fresh state after a conflict), as if they came to it."""
        for plan, reply in batch:
            self.thread.submit_reply(plan, reply)

    def _after_lost_connection(self, batch: Batch, fault: StoreUnavailableError) -> None:
        if fault.outcome_unknown:
            # Only the markers can tell what committed (``Committer.after_lost_connection``): read on a thread.
            asyncio.get_running_loop().run_in_executor(None, self.committer.after_lost_connection, batch, fault)
        else:
            self._to_thread(batch)  # Nothing committed: tried again, as the writer thread tries its own.

    async def close(self) -> None:
        if self._draining is not None:
            await asyncio.shield(self._draining)
        if self._in_flight:  # Left by a drain that stopped on something other than an Exception.
            await asyncio.wait(list(self._in_flight))
        for appender in self.appenders:
            await appender.close()

    def terminate(self) -> None:
        """Drop the connections without waiting, when the event loop no longer runs."""
        for appender in self.appenders:
            appender.terminate()
