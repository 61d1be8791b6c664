"""How handlers reach the ledger and answer: the one path from an HTTP request to a command and back.

The ledger is synchronous and holds database connections while it works, so it runs on worker threads
bounded by a limiter sized with the database pool: a burst of requests queues here instead of
exhausting connections. Every answer to a command carries the log position of its events
(``Ledger-Position``), which a later read can pass back (``Ledger-Min-Position``) to see its own write;
an answer replayed from an idempotency marker says so (``Idempotent-Replayed: true``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
from litestar import Request, Response
from litestar.datastructures import State
from litestar.params import HeaderParameter

from gateway.auth import Principal
from gateway.live import publish
from gateway.logs import REQUEST_ID
from gateway.metrics import COMMANDS, REPLAYS
from gateway.schemas import VISIBLE_ASCII
from ledger.amounts import MAX_AMOUNT
from ledger.application import Ledger
from ledger.commands import AddPackage, AdjustCredits, ChangeBillingSettings, ChangePackage, Origin
from ledger.errors import LedgerError, StoreUnavailableError
from ledger.receipts import Receipt

R = TypeVar("R", bound=Receipt)
T = TypeVar("T")

MAX_IDEMPOTENCY_KEY_LENGTH = 255
IdempotencyKeyHeader = Annotated[
    str,
    HeaderParameter(
        name="Idempotency-Key",
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY_LENGTH,
        pattern=VISIBLE_ASCII,
        description="1 to 255 visible ASCII characters, chosen by the caller; scoped to the caller and endpoint.",
    ),
]
OptionalIdempotencyKeyHeader = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        required=False,
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY_LENGTH,
        pattern=VISIBLE_ASCII,
        description="Optional here; 1 to 255 visible ASCII characters.",
    ),
]
# An int defaulting to 0 (no wait), not an optional int: msgspec reads the text "null" as an absent optional
# value, and a header has no null (the document says an integer).
MinPositionHeader = Annotated[
    int,
    HeaderParameter(
        name="Ledger-Min-Position",
        required=False,
        ge=0,
        le=MAX_AMOUNT,
        # Litestar leaves a bound of 0 out of the document (it tests the bound's truth); it is stated again here.
        schema_extra={"minimum": 0},
        description="Wait (at most 2 s) until the views include this log position, e.g. a write's Ledger-Position.",
    ),
]


# Changes the audit trail records: the ledger writes the caller's role and the request id into their events.
AUDITED = (AdjustCredits, ChangeBillingSettings, AddPackage, ChangePackage)


# The longest a request waits for the ledger. A command not answered by then may still commit: its caller
# hears 503 with Retry-After, and sending it again with the same Idempotency-Key gets its first answer.
ANSWER_DEADLINE_SECONDS = 1.5


class LedgerCalls:
    def __init__(self, ledger: Ledger, threads: int, *, deadline_seconds: float = ANSWER_DEADLINE_SECONDS) -> None:
        self.ledger = ledger
        self.limiter = anyio.CapacityLimiter(threads)
        self.deadline_seconds = deadline_seconds

    async def command(self, operation: str, method: Callable[..., R], command: Any, **kwargs: Any) -> R:
        """Run ``command`` through ``method``, the ledger's use case for it."""
        try:
            if self.ledger.group_commit and self.ledger.submittable(command):
                # Straight onto the writer's queue, awaited here: no worker thread waits on it. A command
                # whose caller stopped waiting is cancelled, and the writer drops it unless it has begun.
                submitted = self.ledger.submit_async(command, **kwargs)
                receipt: R = await self._within_deadline(submitted, operation)  # type: ignore[arg-type]
            else:
                receipt = await self._in_thread(functools.partial(method, command, **kwargs), operation)
        except LedgerError as error:
            COMMANDS.labels(operation, type(error).__name__).inc()
            raise
        COMMANDS.labels(operation, "replayed" if receipt.replayed else "committed").inc()
        if receipt.replayed:
            REPLAYS.labels(operation).inc()
        return receipt

    async def read(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self._in_thread(functools.partial(method, *args, **kwargs), getattr(method, "__name__", "read"))

    async def _within_deadline(self, answer: asyncio.Future[T], what: str) -> T:
        loop = asyncio.get_running_loop()
        # A timer that cancels the awaited answer at the deadline, not a timeout scope: the scope's task
        # bookkeeping on entry and exit was a twentieth of the event loop's time under load.
        expiry = loop.call_at(loop.time() + self.deadline_seconds, answer.cancel)
        try:
            return await answer
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling() or not answer.cancelled():
                raise  # The request itself was cancelled (its client went away), not its answer.
            COMMANDS.labels(what, "unanswered").inc()
            raise StoreUnavailableError(
                f"the ledger did not answer within {self.deadline_seconds} s", outcome_unknown=True
            ) from None
        finally:
            expiry.cancel()

    async def _in_thread(self, call: Callable[[], T], what: str) -> T:
        # A thread cannot be stopped: past the deadline it is left to finish on its own, and its caller
        # is answered now.
        with anyio.move_on_after(self.deadline_seconds):
            return await anyio.to_thread.run_sync(call, limiter=self.limiter, abandon_on_cancel=True)
        COMMANDS.labels(what, "unanswered").inc()
        raise StoreUnavailableError(f"the ledger did not answer within {self.deadline_seconds} s", outcome_unknown=True)


async def run_command(
    request: Request[Any, Any, State], operation: str, method: Callable[..., R], command: Any, key: str | None
) -> R:
    """Run a caller's command under their idempotency key, then tell live streams the balance moved."""
    receipt = await run_command_as(request.app.state, request.user, operation, method, command, key)
    publish_change(request.app.state, receipt)
    return receipt


async def run_command_as(
    state: State, principal: Principal, operation: str, method: Callable[..., R], command: Any, key: str | None
) -> R:
    """The command part of ``run_command``, for the lean path, which has the app's state and the caller
    instead of a Litestar request. It calls ``publish_change`` itself, after writing its answer."""
    audit: dict[str, Any] = {}
    if isinstance(command, AUDITED):
        audit["origin"] = Origin(actor_role=principal.role, request_id=REQUEST_ID.get())
    receipt: R = await state.calls.command(
        operation, method, command, idempotency=principal.idempotency(key), now=state.clock(), **audit
    )
    return receipt


def publish_change(state: State, receipt: Receipt) -> None:
    """Tell the live balance streams that the account of ``receipt`` moved (a receipt names its user)."""
    user_id = getattr(receipt, "user_id", None)
    if user_id is not None:
        publish(state.channels, user_id, receipt.position)


def reply(body: Any, receipt: Receipt, status_code: int) -> Response[Any]:
    headers = {"Ledger-Position": str(receipt.position)}
    if receipt.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(body, status_code=status_code, headers=headers)
