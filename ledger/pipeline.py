"""The write pipeline: every command is planned, then decided and saved with its marker (``ledger.commit``).

A command is planned (``Plan``: its aggregate, its lock, how to load it and how to decide), then run: by
group commit when it is on (``serve``), on the caller's event loop where the batch needs no reading
(``ledger.loop_writer``) and otherwise on the writer thread (``ledger.group_commit``), else as a batch of
one on the caller's thread. Every way goes through the same decision (``Committer``); conflicts are
resolved by the database.
Within one process, commands on the same account take a lock first, so they do not conflict with each
other at all.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import msgspec
from eventsourcing.application import AggregateNotFoundError

from ledger.account import CreditAccount
from ledger.appender import Appender, ConnectTo
from ledger.commands import (
    AdjustCredits,
    Command,
    DebitUsage,
    GrantCredits,
    IdempotencyKey,
    Origin,
    ReleaseReservation,
    ReserveCredits,
    SettleReservation,
)
from ledger.commit import Committer, settle
from ledger.config import (
    BillingConfig,
    BillingSettings,
)
from ledger.errors import IdempotencyConflictError
from ledger.group_commit import GroupCommitWriter
from ledger.idempotency import IdempotencyRecord
from ledger.ids import BILLING_CONFIG_ID, account_id
from ledger.loop_writer import PIPELINE_DEPTH, LoopWriter
from ledger.plan import Plan
from ledger.receipts import (
    AdjustmentReceipt,
    DebitReceipt,
    GrantReceipt,
    InitializeReceipt,
    PackageReceipt,
    PaymentReceipt,
    Receipt,
    ReleaseReceipt,
    ReservationReceipt,
    RevocationReceipt,
    SettingsReceipt,
    SettlementReceipt,
)
from ledger.recorder import LedgerRecorder
from ledger.replies import LoopReply, Mailbox
from ledger.store import LedgerStore

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Receipt)
# The commands ``submit`` may take (``submittable`` says which, by type and, for a reservation's, by owner).
AccountCommand = DebitUsage | ReserveCredits | GrantCredits | AdjustCredits | SettleReservation | ReleaseReservation
Planner = Callable[[Any, IdempotencyKey | None, datetime, Origin | None], Plan[Any]]

# Settings are read from their own aggregate at most this often; a change made here applies at once.
SETTINGS_MAX_AGE_SECONDS = 1.0
LOCK_STRIPES = 1024


class Pipeline(LedgerStore):
    """Plans and runs the commands of every aggregate: the one write pipeline."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        self._account_locks = [threading.Lock() for _ in range(LOCK_STRIPES)]
        self._settings: BillingSettings | None = None
        self._settings_read_at = 0.0
        self._settings_lock = threading.Lock()
        # The configuration and the catalogue are one aggregate each: their changes take turns.
        self._singleton_lock = threading.Lock()
        self._committer = Committer(self)
        self._writer: GroupCommitWriter | None = None
        # The account commands a caller on an event loop may submit (``submit``), by type: each reads nothing
        # before deciding, so planning it does no I/O. The application fills it.
        self._planners: dict[type[Command], Planner] = {}
        # Each event loop's mailbox for ``submit_async``; a loop that is gone takes its mailbox with it.
        self._mailboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Mailbox] = weakref.WeakKeyDictionary()
        # Each event loop's own group commit (``ledger.loop_writer``); None where the store is not PostgreSQL.
        self._loop_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopWriter | None] = (
            weakref.WeakKeyDictionary()
        )

    def billing_settings(self) -> BillingSettings:
        with self._settings_lock:
            if self._settings is None or time.monotonic() - self._settings_read_at > SETTINGS_MAX_AGE_SECONDS:
                try:
                    config: BillingConfig = self.repository.get(BILLING_CONFIG_ID)
                    self._settings = config.settings
                except AggregateNotFoundError:
                    self._settings = BillingSettings()
                self._settings_read_at = time.monotonic()
            return self._settings

    # The shared path of every account command.

    def _run(
        self,
        command: Command,
        operation: str,
        idempotency: IdempotencyKey | None,
        now: datetime,
        decide: Callable[[CreditAccount, BillingSettings, UUID | None], Callable[[int], R]],
        companions: list[Any] | None = None,
    ) -> R:
        return self._run_plan(self._plan(command, operation, idempotency, now, decide, companions))

    def _plan(
        self,
        command: Command,
        operation: str,
        idempotency: IdempotencyKey | None,
        now: datetime,
        decide: Callable[[CreditAccount, BillingSettings, UUID | None], Callable[[int], R]],
        companions: list[Any] | None = None,
    ) -> Plan[R]:
        """An account command, ready for the pipeline; ``companions`` are aggregates ``decide`` creates to be
        saved with it."""
        user_id: str = command.user_id  # type: ignore[attr-defined]
        return Plan(
            aggregate_id=account_id(user_id),
            lock=self._account_lock(user_id),
            load=lambda: self._load_account(user_id, now) or CreditAccount.open(user_id, now),
            decide=lambda account, marker: decide(account, self.billing_settings(), marker),
            command=command,
            operation=operation,
            idempotency=idempotency,
            now=now,
            what=f"account {user_id}",
            companions=companions if companions is not None else [],
        )

    def _run_plan(self, plan: Plan[R]) -> R:
        """With group commit on, the command joins the writer's next batch and this thread waits for the
        batch's transaction; otherwise it runs here, as a batch of one."""
        if self._writer is not None and not self._writer.in_writer:
            return self._writer.submit(plan).result()
        return self._committer.run_alone(plan)

    def submittable(self, command: object) -> bool:
        """Whether ``submit`` takes this command: an account command that reads nothing before deciding."""
        return type(command) in self._planners

    def submit(
        self,
        command: AccountCommand,
        *,
        idempotency: IdempotencyKey | None,
        now: datetime,
        origin: Origin | None = None,
    ) -> Future[Receipt]:
        """Hand an account command to the group-commit writer without waiting for it.

        For callers on an event loop: the future resolves when the command's batch has committed (or with
        its refusal). Without the writer, the command runs here and now.
        """
        plan = self._planners[type(command)](command, idempotency, now, origin)
        if self._writer is not None:
            return self._writer.submit(plan)
        done: Future[Receipt] = Future()
        settle(done, lambda: self._committer.run_alone(plan))
        return done

    def submit_async(
        self,
        command: AccountCommand,
        *,
        idempotency: IdempotencyKey | None,
        now: datetime,
        origin: Origin | None = None,
    ) -> asyncio.Future[Receipt]:
        """``submit`` for a caller on an event loop: the answer comes as a future of that loop.

        Cancelling the future before the command's batch begins drops the command.
        """
        loop = asyncio.get_running_loop()
        mailbox = self._mailboxes.get(loop)
        if mailbox is None:
            mailbox = self._mailboxes.setdefault(loop, Mailbox(loop))
        reply = LoopReply(loop.create_future(), mailbox)
        plan = self._planners[type(command)](command, idempotency, now, origin)
        if self._writer is not None:
            loop_writer = self._loop_writers.get(loop)
            if loop_writer is None:
                loop_writer = self._loop_writers.setdefault(loop, self._new_loop_writer(self._writer))
            if loop_writer is not None:
                loop_writer.submit(plan, reply)
            else:
                self._writer.submit_reply(plan, reply)
        else:
            settle(reply, lambda: self._committer.run_alone(plan))
            mailbox.post()
        return reply.future

    @property
    def group_commit(self) -> bool:
        """True when account commands go through the group-commit writer."""
        return self._writer is not None

    def enable_group_commit(self, *, max_batch: int = 256, max_wait_seconds: float = 0.0) -> None:
        """Commit account commands that arrive together in one transaction (see ``ledger.group_commit``)."""
        if self._writer is None:
            writer = GroupCommitWriter(self._committer, max_batch=max_batch, max_wait_seconds=max_wait_seconds)
            self._writer = writer.start()

    def _new_loop_writer(self, thread: GroupCommitWriter) -> LoopWriter | None:
        if not isinstance(self.recorder, LedgerRecorder):
            return None
        env = self.env
        target = ConnectTo(
            host=env.get("POSTGRES_HOST", ""),
            port=int(env.get("POSTGRES_PORT", "5432")),
            database=env.get("POSTGRES_DBNAME", ""),
            user=env.get("POSTGRES_USER", ""),
            password=env.get("POSTGRES_PASSWORD", ""),
            connect_timeout_seconds=float(env.get("POSTGRES_CONNECT_TIMEOUT", "5")),
            lock_timeout_seconds=float(self.recorder.datastore.lock_timeout),
        )
        appenders = [Appender(target) for _ in range(PIPELINE_DEPTH)]
        return LoopWriter(self, self._committer, appenders, thread, max_batch=thread.max_batch)

    async def close_loop_writer(self) -> None:
        """Finish this event loop's batches and close its connection; for a server shutting down."""
        loop_writer = self._loop_writers.pop(asyncio.get_running_loop(), None)
        if loop_writer is not None:
            await loop_writer.close()

    def close(self) -> None:
        for loop_writer in list(self._loop_writers.values()):
            if loop_writer is not None:
                loop_writer.terminate()
        self._loop_writers.clear()
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        super().close()

    def replay(
        self, marker_id: UUID | None, idempotency: IdempotencyKey | None, fingerprint: str, operation: str
    ) -> Receipt | None:
        """The first receipt of a request already committed, or None; a different request is a conflict."""
        if marker_id is None or idempotency is None:
            return None
        try:
            marker: IdempotencyRecord = self.repository.get(marker_id)
        except AggregateNotFoundError:
            return None
        if marker.fingerprint != fingerprint or marker.operation != operation:
            raise IdempotencyConflictError(idempotency.key)
        receipt_type = RECEIPT_TYPES[marker.receipt_type]
        # The original position is at most the log's head now, which is enough to read one's own write.
        position = self.recorder.max_notification_id() or 0
        return msgspec.convert({**marker.receipt, "position": position, "replayed": True}, receipt_type)

    def _account_lock(self, user_id: str) -> threading.Lock:
        return self._account_locks[hash(user_id) % LOCK_STRIPES]


RECEIPT_TYPES: dict[str, type[Receipt]] = {
    cls.__name__: cls
    for cls in (
        InitializeReceipt,
        GrantReceipt,
        DebitReceipt,
        ReservationReceipt,
        SettlementReceipt,
        ReleaseReceipt,
        AdjustmentReceipt,
        RevocationReceipt,
        SettingsReceipt,
        PackageReceipt,
        PaymentReceipt,
    )
}


def _who(origin: Origin | None) -> dict[str, str | None]:
    """The audit fields an audited change's events carry."""
    if origin is None:
        return {}
    return {"actor_role": origin.actor_role, "request_id": origin.request_id}
