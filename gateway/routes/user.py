"""A user's own account: balance (also as a live stream), history and usage. The account is the token's sub."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.params import ParameterKwarg, QueryParameter
from litestar.response import ServerSentEvent

from gateway.auth import Principal, requires
from gateway.calls import MinPositionHeader
from gateway.live import balance_events
from gateway.openapi import ApiController, problem_responses
from gateway.schemas import BalanceAtInstant, StatementResponse
from gateway.statements import (
    AS_OF_DESCRIPTION,
    STATEMENT_422,
    STATEMENT_DESCRIPTION,
    AtQuery,
    FromQuery,
    StatementOperation,
    ToQuery,
    parse_instant,
    read_balance_at,
    read_statement,
)
from ledger.errors import InvalidCommandError
from projections import queries

Limit = Annotated[int, QueryParameter(ge=1, le=queries.MAX_PAGE_SIZE, description="Page size, 1 to 500")]
CURSOR_DESCRIPTION = "The next_cursor of the page before; opaque, only its form is stated here."
HistoryCursor = Annotated[
    str | None,
    QueryParameter(required=False, pattern=queries.HISTORY_CURSOR_PATTERN, description=CURSOR_DESCRIPTION),
]


def usage_time(name: str) -> ParameterKwarg:
    # Taken as text and parsed here: as an optional datetime, msgspec would read the text "null" as no time.
    return QueryParameter(
        name=name,
        required=False,
        pattern=queries.USAGE_TIME_PATTERN,
        schema_extra={"format": "date-time"},
        description="RFC 3339 with a zone, in the years 2000 to 2999",
    )


def moment(name: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return msgspec.convert(text, datetime)
    except msgspec.ValidationError:
        raise InvalidCommandError(name, "must be an RFC 3339 time with a zone, e.g. 2026-01-01T00:00:00Z") from None


READ_WAIT_SECONDS = 2.0


async def wait_for(state: State, position: int) -> dict[str, str]:
    """Headers for a read: ``Ledger-Stale`` when the views did not reach the position asked for in time."""
    if position and not await queries.wait_for_position(state.pool, position, timeout_seconds=READ_WAIT_SECONDS):
        return {"Ledger-Stale": "true"}
    return {}


class UserCreditsController(ApiController):
    path = "/api/credits"
    tags = ["User"]  # noqa: RUF012 - Litestar reads a list here.
    opt = requires("user")

    @get(
        "/balance",
        operation_id="GetBalance",
        summary="The caller's balance, holds and available credits, now or as of an instant",
        description="Holds and lots past their expiry no longer count. lots are the open lots, in the order usage "
        "consumes them: the earliest expiry first, promo before paid at equal expiry, then the oldest. A user with "
        "no events yet has zeros. " + AS_OF_DESCRIPTION,
        responses=problem_responses(
            details={422: "A parameter is out of range, or at is in the future; nothing was read."}
        ),
    )
    async def balance(
        self, request: Request[Principal, Any, State], min_position: MinPositionHeader = 0, at: AtQuery = None
    ) -> Response[queries.BalanceView | BalanceAtInstant]:
        state = request.app.state
        if at is not None:
            # From the events themselves: exact whatever the views' lag, so there is no position to wait for.
            return Response(await read_balance_at(state, request.user.sub, parse_instant("at", at)))
        headers = await wait_for(state, min_position)
        view = await queries.balance(state.pool, request.user.sub, now=state.clock())
        return Response(view, headers=headers)

    @get(
        "/balance/stream",
        operation_id="StreamBalance",
        summary="Server-sent events: the balance on connect and after each change",
        description="Each event is named `balance` and carries the same body as GET /api/credits/balance. With "
        "Ledger-Min-Position, the event sent on connect waits (at most 2 s) until the views include that position.",
        media_type="text/event-stream",
        responses=problem_responses(),
    )
    async def stream(
        self, request: Request[Principal, Any, State], min_position: MinPositionHeader = 0
    ) -> ServerSentEvent:
        state = request.app.state
        user_id = request.user.sub

        async def read(position: int) -> str:
            await wait_for(state, position)
            view = await queries.balance(state.pool, user_id, now=state.clock())
            return msgspec.json.encode(view).decode()

        return ServerSentEvent(balance_events(state.channels, user_id, read, first_position=min_position))

    @get(
        "/history",
        operation_id="GetHistory",
        summary="The caller's movements, newest first",
        description="kind is one of purchase, grant, debit, reservation, settlement, release, adjustment, refund, "
        "dispute, expiry (a lot's remaining credits at its expiry, reference the lot's id). Paginated with limit and "
        "cursor.",
        responses=problem_responses(),
    )
    async def history(
        self,
        request: Request[Principal, Any, State],
        min_position: MinPositionHeader = 0,
        limit: Limit = queries.DEFAULT_PAGE_SIZE,
        cursor: HistoryCursor = None,
    ) -> Response[queries.HistoryPage]:
        state = request.app.state
        headers = await wait_for(state, min_position)
        page = await queries.history(state.pool, request.user.sub, limit=limit, cursor=cursor)
        return Response(page, headers=headers)

    @get(
        "/statement",
        operation_id="GetStatement",
        summary="The caller's movements between two instants, with the balances at both ends",
        description=STATEMENT_DESCRIPTION,
        responses=problem_responses(details={422: STATEMENT_422}),
        operation_class=StatementOperation,
    )
    async def statement(
        self, request: Request[Principal, Any, State], start: FromQuery, end: ToQuery
    ) -> Response[StatementResponse]:
        return await read_statement(request, request.user.sub, start, end)

    @get(
        "/usage",
        operation_id="GetUsage",
        summary="Token usage in hourly or daily buckets",
        description="Buckets oldest first, empty ones included. Without from and to: the last 24 hours by hour, "
        "or the last 30 days by day; with only to, that span up to it; with only from, from it up to now (at most "
        "the longest range). from equal to to is an empty range. from after to, or a range longer than 31 days by "
        "hour or 366 days by day, is 422.",
        responses=problem_responses(
            details={
                422: "A parameter is out of range, from is after to, or the range is longer than 31 days by hour or "
                "366 days by day; nothing was read."
            }
        ),
    )
    async def usage(
        self,
        request: Request[Principal, Any, State],
        min_position: MinPositionHeader = 0,
        granularity: Annotated[queries.Granularity, QueryParameter(description="hour or day")] = "hour",
        start: Annotated[str | None, usage_time("from")] = None,
        end: Annotated[str | None, usage_time("to")] = None,
    ) -> Response[queries.UsageReport]:
        state = request.app.state
        headers = await wait_for(state, min_position)
        report = await queries.usage(
            state.pool,
            request.user.sub,
            granularity=granularity,
            start=moment("from", start),
            end=moment("to", end),
            now=state.clock(),
        )
        return Response(report, headers=headers)
