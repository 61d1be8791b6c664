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

from gateway.live import publish
from gateway.metrics import COMMANDS, REPLAYS
from ledger.amounts import MAX_AMOUNT
from ledger.application import Ledger
from ledger.errors import LedgerError
from ledger.receipts import Receipt

R = TypeVar("R", bound=Receipt)
T = TypeVar("T")

IdempotencyKeyHeader = Annotated[
    str,
    HeaderParameter(
        name="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="1 to 255 visible ASCII characters, chosen by the caller; scoped to the caller and endpoint.",
    ),
]
OptionalIdempotencyKeyHeader = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        required=False,
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Optional here; 1 to 255 visible ASCII characters.",
    ),
]
MinPositionHeader = Annotated[
    int | None,
    HeaderParameter(
        name="Ledger-Min-Position",
        required=False,
        ge=0,
        le=MAX_AMOUNT,
        description="Wait (at most 2 s) until the views include this log position, e.g. a write's Ledger-Position.",
    ),
]


# Account use cases that read nothing before deciding, so they can be queued from the event loop.
QUEUED_DIRECTLY = frozenset({"debit_usage", "reserve_credits", "grant_credits", "adjust_credits"})


class LedgerCalls:
    def __init__(self, ledger: Ledger, threads: int) -> None:
        self.ledger = ledger
        self.limiter = anyio.CapacityLimiter(threads)

    async def command(self, operation: str, method: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        try:
            if self.ledger.group_commit and getattr(method, "__name__", "") in QUEUED_DIRECTLY:
                # Straight onto the writer's queue, awaited here: no worker thread waits on it.
                receipt = await asyncio.wrap_future(self.ledger.submit(method, *args, **kwargs))
            else:
                receipt = await anyio.to_thread.run_sync(
                    functools.partial(method, *args, **kwargs), limiter=self.limiter
                )
        except LedgerError as error:
            COMMANDS.labels(operation, type(error).__name__).inc()
            raise
        COMMANDS.labels(operation, "replayed" if receipt.replayed else "committed").inc()
        if receipt.replayed:
            REPLAYS.labels(operation).inc()
        return receipt

    async def read(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(functools.partial(method, *args, **kwargs), limiter=self.limiter)


async def run_command(
    request: Request[Any, Any, State], operation: str, method: Callable[..., R], command: Any, key: str | None
) -> R:
    """Run a caller's command under their idempotency key, then tell live streams the balance moved."""
    state = request.app.state
    receipt: R = await state.calls.command(
        operation, method, command, idempotency=request.user.idempotency(key), now=state.clock()
    )
    user_id = getattr(receipt, "user_id", None)
    if user_id is not None:
        publish(state.channels, user_id, receipt.position)
    return receipt


def reply(body: Any, receipt: Receipt, status_code: int) -> Response[Any]:
    headers = {"Ledger-Position": str(receipt.position)}
    if receipt.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(body, status_code=status_code, headers=headers)
