"""The HTTP contract's bodies as msgspec Structs: every input bounded, unknown fields refused.

Bodies are decoded strictly (see ``gateway.body``): a string, a float or a boolean where an integer is
expected is refused, never coerced. The ledger checks every value again; these bounds make the schema
say what the ledger will accept, and refuse the rest before any work is done.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from ledger.amounts import MAX_AMOUNT
from ledger.errors import InvalidCommandError
from projections.queries import HistoryItem

MAX_TTL_SECONDS = 86_400

# Patterns end in \Z, the end of the string: Python's $ also matches before a final newline, so "u\n" would pass
# for a user id. The API document writes it $, which is the end of the string in its (ECMA-262) regexes.
VISIBLE_ASCII = r"^[\x21-\x7e]+\Z"
UserId = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=128, pattern=VISIBLE_ASCII, description="1 to 128 visible ASCII characters"),
]
Tokens = Annotated[int, msgspec.Meta(ge=1, le=MAX_AMOUNT, description="a whole number of tokens")]
TokenCount = Annotated[int, msgspec.Meta(ge=0, le=MAX_AMOUNT)]
# Any text but the NUL character, which PostgreSQL's text cannot hold.
STORABLE_TEXT = r"^[^\x00]*\Z"
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=STORABLE_TEXT)]
Adjustment = Annotated[
    int,
    msgspec.Meta(
        ge=-MAX_AMOUNT,
        le=MAX_AMOUNT,
        description="signed, never zero",
        extra_json_schema={"not": {"const": 0}},
    ),
]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=500, pattern=STORABLE_TEXT)]
# Letters, digits, '-' and '_', with at least one letter or digit (the catalogue's rule).
PACKAGE_ID_PATTERN = r"^[A-Za-z0-9_-]*[A-Za-z0-9][A-Za-z0-9_-]*\Z"
PackageId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=PACKAGE_ID_PATTERN)]
PackageName = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=STORABLE_TEXT)]
WholeCredits = Annotated[int, msgspec.Meta(ge=1, le=MAX_AMOUNT // 1_000)]
MinorUnits = Annotated[int, msgspec.Meta(ge=1, le=MAX_AMOUNT // 1_000)]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}\Z")]
StripeId = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=STORABLE_TEXT)]


class Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every request body: unknown fields are an error, not something to ignore."""

    # A rule between fields, which no field's type can state, for the API document (``gateway.openapi``);
    # the handler or the ledger enforces it.
    json_schema_rules: ClassVar[Mapping[str, Any]] = {}


# Usage is given as ``tokens``, or as ``input_tokens`` and ``output_tokens``: one form, never both (a field
# that is null counts as not given). Their total is an amount too, at most 2^53 - 1, which no schema can say.
_TOKENS_ALONE = {
    "required": ["tokens"],
    "properties": {"tokens": {"type": "integer"}, "input_tokens": {"type": "null"}, "output_tokens": {"type": "null"}},
}
_INPUT_AND_OUTPUT = {
    "required": ["input_tokens", "output_tokens"],
    "properties": {
        "tokens": {"type": "null"},
        "input_tokens": {"type": "integer"},
        "output_tokens": {"type": "integer"},
    },
}
SETTLEMENT_FORMS: Mapping[str, Any] = {"anyOf": [_TOKENS_ALONE, _INPUT_AND_OUTPUT]}
# A debit is of at least one token, however it is given.
DEBIT_FORMS: Mapping[str, Any] = {
    "anyOf": [
        _TOKENS_ALONE,
        _INPUT_AND_OUTPUT | {"not": {"properties": {"input_tokens": {"const": 0}, "output_tokens": {"const": 0}}}},
    ]
}
TokenPart = Annotated[
    int,
    msgspec.Meta(
        ge=0, le=MAX_AMOUNT, description="with the other of input_tokens and output_tokens, at most 2^53 - 1 in all"
    ),
]


# Internal services.


class DebitRequest(Body, frozen=True, kw_only=True):
    json_schema_rules = DEBIT_FORMS

    user_id: UserId
    tokens: Tokens | None = None
    input_tokens: TokenPart | None = None
    output_tokens: TokenPart | None = None
    model: Label | None = None
    agent_id: Label | None = None
    analysis_id: Label | None = None
    occurred_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None


class ReservationRequest(Body, frozen=True, kw_only=True):
    user_id: UserId
    estimated_tokens: Tokens
    ttl_seconds: Annotated[int, msgspec.Meta(ge=1, le=MAX_TTL_SECONDS)] = 900
    analysis_id: Label | None = None


class SettleRequest(Body, frozen=True, kw_only=True):
    json_schema_rules = SETTLEMENT_FORMS

    tokens: TokenCount | None = None
    input_tokens: TokenPart | None = None
    output_tokens: TokenPart | None = None
    model: Label | None = None


def usage_tokens(tokens: int | None, input_tokens: int | None, output_tokens: int | None) -> int:
    """The contract takes ``tokens``, or ``input_tokens`` and ``output_tokens``; the ledger takes the total."""
    if tokens is not None and input_tokens is None and output_tokens is None:
        return tokens
    if tokens is None and input_tokens is not None and output_tokens is not None:
        return input_tokens + output_tokens
    raise InvalidCommandError("tokens", "give tokens, or both input_tokens and output_tokens, not both forms")


class DebitResponse(msgspec.Struct, frozen=True, kw_only=True):
    debit_id: str
    user_id: str
    tokens: int
    amount_millicredits: int
    balance_after_millicredits: int
    available_after_millicredits: int


class ReservationResponse(msgspec.Struct, frozen=True, kw_only=True):
    reservation_id: str
    held_millicredits: int
    expires_at: datetime
    available_after_millicredits: int


class SettlementResponse(msgspec.Struct, frozen=True, kw_only=True):
    reservation_id: str
    debited_millicredits: int
    released_millicredits: int
    balance_after_millicredits: int


class ReleaseResponse(msgspec.Struct, frozen=True, kw_only=True):
    reservation_id: str
    released_millicredits: int
    available_after_millicredits: int


class InitializeResponse(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    created: bool
    welcome_millicredits: int
    balance_after_millicredits: int


# Admin.


# A removal takes from the lots in their order; only a grant makes a lot, so only a grant says what kind and
# until when. (That ``expires_at`` is in the future no schema can say; the ledger refuses it with 422.)
ADJUSTMENT_FORMS: Mapping[str, Any] = {
    "if": {"properties": {"amount_millicredits": {"maximum": -1}}, "required": ["amount_millicredits"]},
    "then": {"properties": {"kind": {"type": "null"}, "expires_at": {"type": "null"}}},
}


class AdjustRequest(Body, frozen=True, kw_only=True):
    json_schema_rules = ADJUSTMENT_FORMS

    user_id: UserId
    amount_millicredits: Adjustment
    reason: Reason
    kind: (
        Annotated[Literal["paid", "promo"], msgspec.Meta(description="the granted lot's kind; promo if not given")]
        | None
    ) = None
    expires_at: Annotated[datetime, msgspec.Meta(tz=True, description="when the granted lot stops counting")] | None = (
        None
    )


class AdjustResponse(msgspec.Struct, frozen=True, kw_only=True):
    adjustment_id: str
    user_id: str
    amount_millicredits: int
    balance_after_millicredits: int


class BillingConfigPatch(Body, frozen=True, kw_only=True, omit_defaults=True):
    """A partial update: only the settings given change."""

    api_monthly_limit_tokens: Annotated[int, msgspec.Meta(ge=1, le=MAX_AMOUNT)] | None = None
    alert_threshold_percent: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None
    hourly_token_limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_AMOUNT)] | None = None
    daily_token_limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_AMOUNT)] | None = None
    min_balance_for_analysis_millicredits: Annotated[int, msgspec.Meta(ge=0, le=MAX_AMOUNT)] | None = None
    tokens_per_credit: Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)] | None = None
    welcome_credits: Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000)] | None = None
    welcome_credits_ttl_days: Annotated[int, msgspec.Meta(ge=0, le=3_650)] | None = None


class BillingConfigView(msgspec.Struct, frozen=True, kw_only=True):
    api_monthly_limit_tokens: int
    alert_threshold_percent: int
    hourly_token_limit: int
    daily_token_limit: int
    min_balance_for_analysis_millicredits: int
    tokens_per_credit: int
    welcome_credits: int
    welcome_credits_ttl_days: int


class PriceBody(Body, frozen=True, kw_only=True):
    amount_minor: MinorUnits
    currency: Currency = "BRL"


class PackageCreate(Body, frozen=True, kw_only=True):
    id: PackageId
    name: PackageName
    credits: WholeCredits
    price: PriceBody
    active: bool = True
    stripe_price_id: StripeId | None = None


class PackagePatch(Body, frozen=True, kw_only=True):
    name: PackageName | None = None
    credits: WholeCredits | None = None
    price: PriceBody | None = None
    active: bool | None = None
    stripe_price_id: StripeId | None = None


class Price(msgspec.Struct, frozen=True, kw_only=True):
    amount_minor: int
    currency: str


class PackageResponse(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    credits: int
    price: Price
    active: bool
    stripe_price_id: str | None


class PackageList(msgspec.Struct, frozen=True, kw_only=True):
    packages: list[PackageResponse]


class PublicPackage(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    credits: int
    price: Price
    active: bool


class PublicPackageList(msgspec.Struct, frozen=True, kw_only=True):
    packages: list[PublicPackage]


# Problems (RFC 9457), for the OpenAPI document.


class FieldError(msgspec.Struct, frozen=True, kw_only=True):
    field: str
    reason: str


class Problem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


UserOrder = Literal["balance_desc", "updated_desc"]


# Time travel: the balance as of an instant, and statements (gateway.statements).


class BalanceAtInstant(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    balance_millicredits: int
    reserved_millicredits: int
    available_millicredits: int
    balance_credits: str
    as_of: datetime


class StatementResponse(msgspec.Struct, frozen=True, kw_only=True, rename={"start": "from", "end": "to"}):
    user_id: str
    start: datetime
    end: datetime
    opening_balance_millicredits: int
    closing_balance_millicredits: int
    movements: list[HistoryItem]
