"""Balances as of an instant and statements, for the user's and the admin's routes alike.

Both are computed by the ledger from the account's events (``Ledger.balance_as_of``, ``Ledger.statement``),
not from the views, so they are exact whatever the views' lag. A statement is JSON, or CSV when the caller
prefers ``text/csv``: RFC 4180 (CRLF, a header row, quotes where needed), amounts as integers of
millicredits, times in UTC, and text cells that a spreadsheet would run as a formula prefixed with ``'``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from datetime import UTC, datetime
from typing import Annotated, Any, Final

import msgspec
from litestar import Request, Response
from litestar.datastructures import State
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema
from litestar.params import ParameterKwarg, QueryParameter

from gateway.schemas import BalanceAtInstant, StatementResponse
from ledger.amounts import credits_text
from ledger.as_of import AccountAsOf, Statement
from ledger.errors import InvalidCommandError
from projections import queries

CSV_MEDIA_TYPE: Final = "text/csv"
CSV_CONTENT_TYPE: Final = "text/csv; charset=utf-8; header=present"
CSV_COLUMNS: Final = (
    "occurred_at",
    "id",
    "kind",
    "amount_millicredits",
    "balance_after_millicredits",
    "reference",
    "description",
)
# OWASP ASVS 5.0 V1.2.10: a cell starting with one of these is a formula to a spreadsheet.
FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r", "\0")


def instant(name: str, description: str, *, required: bool) -> ParameterKwarg:
    # Taken as text and parsed here, as the usage range's times are (see gateway.routes.user.usage_time).
    return QueryParameter(
        name=name,
        required=required,
        pattern=queries.USAGE_TIME_PATTERN,
        schema_extra={"format": "date-time"},
        description=f"{description}; RFC 3339 with a zone, in the years 2000 to 2999",
    )


AtQuery = Annotated[
    str | None,
    instant("at", "The instant: the balance exactly as it was then. Not in the future", required=False),
]
FromQuery = Annotated[str, instant("from", "The period's start, included", required=True)]
ToQuery = Annotated[str, instant("to", "The period's end, excluded; not in the future", required=True)]

AS_OF_DESCRIPTION: Final = (
    "With at: the balance, holds and available credits exactly as they were at that instant, computed from the "
    "account's events (a hold past its expiry no longer counts, recorded or not), with as_of; before the "
    "account's first event, zeros. An instant in the future is 422."
)
STATEMENT_DESCRIPTION: Final = (
    "The movements from `from` (included) to `to` (excluded), oldest first, as the history shows them, computed "
    "from the account's events. opening_balance_millicredits is the balance just before `from`, "
    "closing_balance_millicredits the balance just before `to` (the next period's opening): the movements that "
    "move the balance (every kind but reservation and release) add up from one to the other. `from` after `to`, "
    "`to` in the future, or a period longer than 366 days is 422. With `Accept: text/csv`: RFC 4180 CSV with a "
    "header row, an opening_balance row first and a closing_balance row last, amounts in millicredits, times in "
    "UTC."
)
STATEMENT_422: Final = (
    "A parameter is out of range, from is after to, to is in the future, or the period is longer than 366 days; "
    "nothing was read."
)


@dataclasses.dataclass
class StatementOperation(Operation):
    """A statement's operation: its 200 answer is JSON or, when the caller prefers it, CSV."""

    def __post_init__(self) -> None:
        answer = (self.responses or {}).get("200")
        if isinstance(answer, OpenAPIResponse) and answer.content is not None:
            answer.content[CSV_MEDIA_TYPE] = OpenAPIMediaType(
                schema=Schema(
                    type=OpenAPIType.STRING,
                    description="RFC 4180 CSV, a header row of " + ", ".join(CSV_COLUMNS),
                )
            )


def balance_at(result: AccountAsOf) -> BalanceAtInstant:
    return BalanceAtInstant(
        user_id=result.user_id,
        balance_millicredits=result.balance_millicredits,
        reserved_millicredits=result.reserved_millicredits,
        available_millicredits=result.available_millicredits,
        balance_credits=credits_text(result.balance_millicredits),
        as_of=result.as_of,
    )


def parse_instant(name: str, text: str) -> datetime:
    try:
        return msgspec.convert(text, datetime)
    except msgspec.ValidationError:
        raise InvalidCommandError(name, "must be an RFC 3339 time with a zone, e.g. 2026-01-01T00:00:00Z") from None


async def read_balance_at(state: State, user_id: str, at: datetime) -> BalanceAtInstant:
    result = await state.calls.read(state.ledger.balance_as_of, user_id, at=at, now=state.clock())
    return balance_at(result)


async def read_statement(request: Request[Any, Any, State], user_id: str, start: str, end: str) -> Response[Any]:
    state = request.app.state
    result: Statement = await state.calls.read(
        state.ledger.statement,
        user_id,
        start=parse_instant("from", start),
        end=parse_instant("to", end),
        now=state.clock(),
    )
    if request.accept.best_match(["application/json", CSV_MEDIA_TYPE], default="application/json") == CSV_MEDIA_TYPE:
        return Response(statement_csv(result), media_type=CSV_CONTENT_TYPE)
    return Response(
        StatementResponse(
            user_id=result.user_id,
            start=result.start,
            end=result.end,
            opening_balance_millicredits=result.opening_balance_millicredits,
            closing_balance_millicredits=result.closing_balance_millicredits,
            movements=[msgspec.convert(m, queries.HistoryItem, from_attributes=True) for m in result.movements],
        )
    )


def statement_csv(result: Statement) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerow([_utc(result.start), "", "opening_balance", "", result.opening_balance_millicredits, "", ""])
    writer.writerows(
        [
            _utc(m.occurred_at),
            _text(m.id),
            m.kind,
            m.amount_millicredits,
            m.balance_after_millicredits,
            _text(m.reference),
            _text(m.description),
        ]
        for m in result.movements
    )
    writer.writerow([_utc(result.end), "", "closing_balance", "", result.closing_balance_millicredits, "", ""])
    return out.getvalue()


def _utc(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _text(value: str | None) -> str:
    if value is None:
        return ""
    return "'" + value if value.startswith(FORMULA_STARTS) else value
