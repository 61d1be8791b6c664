"""Internal services: report usage, hold and settle credits for metered work, set accounts up."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Request, Response, post
from litestar.datastructures import State
from litestar.openapi import ResponseSpec
from litestar.params import PathParameter

from gateway.auth import Principal, requires
from gateway.calls import IdempotencyKeyHeader, OptionalIdempotencyKeyHeader, reply, run_command
from gateway.openapi import ApiController, body_example, problem_responses
from gateway.schemas import (
    VISIBLE_ASCII,
    DebitRequest,
    DebitResponse,
    InitializeResponse,
    ReleaseResponse,
    ReservationRequest,
    ReservationResponse,
    SettlementResponse,
    SettleRequest,
    usage_tokens,
)
from ledger.commands import DebitUsage, InitializeAccount, ReleaseReservation, ReserveCredits, SettleReservation
from ledger.receipts import Receipt

MAX_RESERVATION_ID_LENGTH = 128
ReservationId = Annotated[
    str, PathParameter(min_length=1, max_length=MAX_RESERVATION_ID_LENGTH, description="The id a reservation returned")
]
S = TypeVar("S", bound=msgspec.Struct)
PathUserId = Annotated[
    str, PathParameter(min_length=1, max_length=128, pattern=VISIBLE_ASCII, description="The user's id")
]


# What a metered-work request becomes and what its receipt answers: one definition each, for these
# routes and for their lean path (gateway.hot).


def answer_of(response: type[S]) -> Callable[[Receipt], S]:
    """A route's answer to a receipt: the response's fields, read from the receipt's fields of the same name."""
    return lambda receipt: msgspec.convert(receipt, response, from_attributes=True)


debit_answer = answer_of(DebitResponse)
reserve_answer = answer_of(ReservationResponse)
settle_answer = answer_of(SettlementResponse)
release_answer = answer_of(ReleaseResponse)


def debit_command(data: DebitRequest, _: str = "") -> DebitUsage:
    return DebitUsage(
        user_id=data.user_id,
        tokens=usage_tokens(data.tokens, data.input_tokens, data.output_tokens),
        input_tokens=data.input_tokens,
        output_tokens=data.output_tokens,
        model=data.model,
        agent_id=data.agent_id,
        analysis_id=data.analysis_id,
        occurred_at=data.occurred_at,
    )


def reserve_command(data: ReservationRequest, _: str = "") -> ReserveCredits:
    return ReserveCredits(
        user_id=data.user_id,
        estimated_tokens=data.estimated_tokens,
        ttl_seconds=data.ttl_seconds,
        analysis_id=data.analysis_id,
    )


def settle_command(data: SettleRequest, reservation_id: str) -> SettleReservation:
    return SettleReservation(
        reservation_id=reservation_id,
        tokens=usage_tokens(data.tokens, data.input_tokens, data.output_tokens),
        input_tokens=data.input_tokens,
        output_tokens=data.output_tokens,
        model=data.model,
    )


class UsageController(ApiController):
    path = "/api/usage"
    tags = ["Internal services"]  # noqa: RUF012 - Litestar reads a list here.
    opt = requires("service")

    @post(
        "/debits",
        operation_id="DebitUsage",
        summary="Debit the credits of usage that has happened",
        description="Prices the tokens at the configured rate and debits them, never past the available balance.",
        status_code=201,
        responses=problem_responses(402, 409, 413),
    )
    async def debit(
        self,
        request: Request[Principal, Any, State],
        data: Annotated[
            DebitRequest,
            body_example(
                "An analysis used 1,500 tokens",
                {
                    "user_id": "user-42",
                    "input_tokens": 1200,
                    "output_tokens": 300,
                    "model": "gemini-2.5-pro",
                    "analysis_id": "analysis-7",
                },
            ),
        ],
        idempotency_key: IdempotencyKeyHeader,
    ) -> Response[DebitResponse]:
        ledger = request.app.state.ledger
        receipt = await run_command(request, "debit", ledger.debit_usage, debit_command(data), idempotency_key)
        return reply(debit_answer(receipt), receipt, 201)

    @post(
        "/reservations",
        operation_id="ReserveCredits",
        summary="Hold credits for work about to start",
        description=(
            "Holds the estimate's cost until settled, released or expired (ttl_seconds, default 900). Needs an "
            "available balance of at least the larger of that cost and the minimum balance for an analysis."
        ),
        status_code=201,
        responses=problem_responses(402, 409, 413),
    )
    async def reserve(
        self,
        request: Request[Principal, Any, State],
        data: Annotated[
            ReservationRequest,
            body_example(
                "Hold for an analysis",
                {"user_id": "user-42", "estimated_tokens": 120000, "ttl_seconds": 900, "analysis_id": "analysis-7"},
            ),
        ],
        idempotency_key: IdempotencyKeyHeader,
    ) -> Response[ReservationResponse]:
        ledger = request.app.state.ledger
        receipt = await run_command(request, "reserve", ledger.reserve_credits, reserve_command(data), idempotency_key)
        return reply(reserve_answer(receipt), receipt, 201)

    @post(
        "/reservations/{reservation_id:str}/settle",
        operation_id="SettleReservation",
        summary="Debit a reservation's actual usage and release the rest of its hold",
        description=(
            "The actual usage is debited even past the hold (the work has happened); the balance may then go "
            "below zero. A settled, released or expired reservation is 409 reservation-not-open."
        ),
        status_code=200,
        responses=problem_responses(404, 409, 413),
    )
    async def settle(
        self,
        request: Request[Principal, Any, State],
        reservation_id: ReservationId,
        data: Annotated[
            SettleRequest,
            body_example(
                "It used 90,000 tokens", {"input_tokens": 70000, "output_tokens": 20000, "model": "gemini-2.5-pro"}
            ),
        ],
        idempotency_key: IdempotencyKeyHeader,
    ) -> Response[SettlementResponse]:
        ledger = request.app.state.ledger
        command = settle_command(data, reservation_id)
        receipt = await run_command(request, "settle", ledger.settle_reservation, command, idempotency_key)
        return reply(settle_answer(receipt), receipt, 200)

    @post(
        "/reservations/{reservation_id:str}/release",
        operation_id="ReleaseReservation",
        summary="Give a reservation's hold back unused",
        status_code=200,
        responses=problem_responses(404, 409),
    )
    async def release(
        self,
        request: Request[Principal, Any, State],
        reservation_id: ReservationId,
        idempotency_key: IdempotencyKeyHeader,
    ) -> Response[ReleaseResponse]:
        state = request.app.state
        receipt = await run_command(
            request,
            "release",
            state.ledger.release_reservation,
            ReleaseReservation(reservation_id=reservation_id),
            idempotency_key,
        )
        return reply(release_answer(receipt), receipt, 200)


class AccountsController(ApiController):
    path = "/api/users"
    tags = ["Internal services"]  # noqa: RUF012
    opt = requires("service", "admin")

    @post(
        "/{user_id:str}/initialize",
        operation_id="InitializeAccount",
        summary="Set an account up, granting the welcome credits once",
        description="201 the first time (with the configured welcome credits, 0 by default), 200 after that. "
        "The same Idempotency-Key gets the first answer again, with Idempotent-Replayed: true.",
        status_code=201,
        responses={
            200: ResponseSpec(InitializeResponse, description="The account was set up before; nothing changed"),
            **problem_responses(409),
        },
    )
    async def initialize(
        self,
        request: Request[Principal, Any, State],
        user_id: PathUserId,
        idempotency_key: OptionalIdempotencyKeyHeader = None,
    ) -> Response[InitializeResponse]:
        receipt = await run_command(
            request,
            "initialize",
            request.app.state.ledger.initialize_account,
            InitializeAccount(user_id=user_id),
            idempotency_key,
        )
        body = InitializeResponse(
            user_id=receipt.user_id,
            created=receipt.created,
            welcome_millicredits=receipt.welcome_millicredits,
            balance_after_millicredits=receipt.balance_after_millicredits,
        )
        return reply(body, receipt, 201 if receipt.created else 200)
