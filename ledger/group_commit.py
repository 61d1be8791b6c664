"""Group commit: many commands, one transaction.

The event store locks its table for every write transaction, so one command per transaction is capped
at a few thousand a second whatever the concurrency. Here one writer thread per process takes every
command that has arrived (up to ``max_batch``, waiting at most ``max_wait_seconds`` for more) and hands
them to the committer (``ledger.commit``) as one batch: decided in memory in arrival order, saved in one
transaction, every caller answered after the commit.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, TypeVar

from ledger.commit import Committer
from ledger.plan import Batch, Plan
from ledger.receipts import Receipt
from ledger.replies import Reply, post_all

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Receipt)


class GroupCommitWriter:
    def __init__(self, committer: Committer, *, max_batch: int = 256, max_wait_seconds: float = 0.0) -> None:
        self.committer = committer
        self.max_batch = max_batch
        self.max_wait_seconds = max_wait_seconds
        self._queue: queue.SimpleQueue[tuple[Plan[Any], Reply] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="ledger-writer", daemon=True)

    @property
    def batches(self) -> int:
        return self.committer.batches

    @property
    def commands(self) -> int:
        return self.committer.commands

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

    def submit_reply(self, plan: Plan[Any], reply: Reply) -> None:
        """Queue ``plan``; its answer goes to ``reply`` once its batch is done."""
        self._queue.put((plan, reply))

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch: Batch = [first]
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
                self.committer.commit(batch)
            except BaseException as error:
                log.exception("group commit failed")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                # The committer hands over every answer it sets; these it never reached.
                post_all(reply for _, reply in batch)
