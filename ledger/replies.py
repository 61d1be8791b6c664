"""Where a command's answer goes: a concurrent Future, or a caller's own future on an event loop.

A concurrent Future per command, wrapped in an asyncio future, costs a lock and a condition to make and
one call into the event loop (a write to its wake-up pipe) per answer: about a tenth of the server's CPU
per debit in the benchmark's profile. A caller on an event loop instead gives its own asyncio future
(``LoopReply``); the writer thread collects the answers of a batch in the loop's ``Mailbox`` and hands
them over in one call when the batch is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Iterable
from typing import Any, Protocol

from ledger.receipts import Receipt


class Reply(Protocol):
    """What the committer needs of a caller's answer (``concurrent.futures.Future`` is one)."""

    def set_running_or_notify_cancel(self) -> bool: ...

    def set_result(self, result: Receipt) -> None: ...

    def set_exception(self, exception: BaseException | None) -> None: ...

    def done(self) -> bool: ...


Answer = tuple["asyncio.Future[Receipt]", Receipt | None, BaseException | None]


class Mailbox:
    """The answers waiting for one event loop, handed over together by ``post``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: the pipeline keeps a mailbox per loop for as long as the loop lives, and no longer.
        self._loop = weakref.ref(loop)
        # Answers set on the loop's own thread go straight to their futures.
        self.thread = threading.get_ident()
        self._lock = threading.Lock()
        self._answers: list[Answer] = []

    def put(self, answer: Answer) -> None:
        with self._lock:
            self._answers.append(answer)

    def post(self) -> None:
        with self._lock:
            answers, self._answers = self._answers, []
        loop = self._loop()
        if not answers or loop is None:
            return
        # A loop that has closed (its server stopped) has no caller left to answer; the writer goes on.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_deliver, answers)


class LoopReply:
    """A caller's asyncio future, answered through its loop's mailbox."""

    __slots__ = ("_answered", "future", "mailbox")

    def __init__(self, future: asyncio.Future[Receipt], mailbox: Mailbox) -> None:
        self.future = future
        self.mailbox = mailbox
        self._answered = False

    def set_running_or_notify_cancel(self) -> bool:
        # A caller whose deadline passed cancelled its future: its command is dropped unless it has begun.
        return not self.future.cancelled()

    def set_result(self, result: Receipt) -> None:
        self._answered = True
        if threading.get_ident() == self.mailbox.thread:
            _deliver([(self.future, result, None)])
        else:
            self.mailbox.put((self.future, result, None))

    def set_exception(self, exception: BaseException | None) -> None:
        self._answered = True
        if threading.get_ident() == self.mailbox.thread:
            _deliver([(self.future, None, exception)])
        else:
            self.mailbox.put((self.future, None, exception))

    def done(self) -> bool:
        return self._answered or self.future.done()


def post_all(replies: Iterable[Any]) -> None:
    """Hand over the answers of a batch: one call per event loop among its callers."""
    mailboxes = {id(reply.mailbox): reply.mailbox for reply in replies if isinstance(reply, LoopReply)}
    for mailbox in mailboxes.values():
        mailbox.post()


def _deliver(answers: list[Answer]) -> None:
    for future, result, error in answers:
        if future.done():
            continue  # The caller stopped waiting.
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]
