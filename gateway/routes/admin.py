"""Admin: system figures, every user's balance, manual adjustments, billing settings and packages."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, patch, post, put
from litestar.datastructures import State
from litestar.params import PathParameter, QueryParameter

from gateway.auth import Principal, requires
from gateway.calls import IdempotencyKeyHeader, MinPositionHeader, OptionalIdempotencyKeyHeader, reply, run_command
from gateway.openapi import ApiController, body_example, problem_responses
from gateway.routes.user import CURSOR_DESCRIPTION, READ_WAIT_SECONDS, Limit, wait_for
from gateway.schemas import (
    PACKAGE_ID_PATTERN,
    VISIBLE_ASCII,
    AdjustRequest,
    AdjustResponse,
    BalanceAtInstant,
    BillingConfigPatch,
    BillingConfigView,
    PackageCreate,
    PackageList,
    PackagePatch,
    PackageResponse,
    Price,
    StatementResponse,
    UserOrder,
)
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
from ledger.commands import AddPackage, AdjustCredits, ChangeBillingSettings, ChangePackage
from ledger.receipts import PackageReceipt
from projections import audit_queries, queries
from projections.audit import AuditProjection

PackageIdPath = Annotated[str, PathParameter(min_length=1, max_length=64, pattern=PACKAGE_ID_PATTERN)]
UserIdPath = Annotated[
    str, PathParameter(min_length=1, max_length=128, pattern=VISIBLE_ASCII, description="The user's id")
]
AuditCursor = Annotated[
    str | None,
    QueryParameter(required=False, pattern=audit_queries.AUDIT_CURSOR_PATTERN, description=CURSOR_DESCRIPTION),
]
ActorQuery = Annotated[
    str | None,
    QueryParameter(
        required=False,
        min_length=1,
        max_length=128,
        pattern=VISIBLE_ASCII,
        description="Only changes by this actor: a token's sub, system, or cli:<login name>",
    ),
]
# Text with the actions as its enum, not an optional Literal: that would be documented as "an action or null".
ActionQuery = Annotated[
    str | None,
    QueryParameter(
        required=False, schema_extra={"enum": list(audit_queries.ACTIONS)}, description="Only changes of this action"
    ),
]
UsersCursor = Annotated[
    str | None,
    QueryParameter(required=False, pattern=queries.USERS_CURSOR_PATTERN, description=CURSOR_DESCRIPTION),
]


def _package(receipt: PackageReceipt) -> PackageResponse:
    return PackageResponse(
        id=receipt.package_id,
        name=receipt.name,
        credits=receipt.credits,
        price=Price(amount_minor=receipt.price_amount_minor, currency=receipt.currency),
        active=receipt.active,
        stripe_price_id=receipt.stripe_price_id,
    )


class AdminController(ApiController):
    path = "/api/admin"
    tags = ["Admin"]  # noqa: RUF012 - Litestar reads a list here.
    opt = requires("admin")

    @get(
        "/credits/stats",
        operation_id="GetCreditStats",
        summary="Credits sold against the upstream API's monthly limit, and recent usage",
        description="Circulation counts positive balances only. api_usage_percent is potential tokens over "
        "api_monthly_limit_tokens, floored to two decimals.",
        responses=problem_responses(),
    )
    async def stats(
        self, request: Request[Principal, Any, State], min_position: MinPositionHeader = 0
    ) -> Response[queries.SystemStats]:
        state = request.app.state
        headers = await wait_for(state, min_position)
        return Response(await queries.system_stats(state.pool, now=state.clock()), headers=headers)

    @get(
        "/credits/users",
        operation_id="ListUserBalances",
        summary="Every user's balance, richest or most recently changed first",
        responses=problem_responses(),
    )
    async def users(
        self,
        request: Request[Principal, Any, State],
        min_position: MinPositionHeader = 0,
        order: Annotated[UserOrder, QueryParameter(description="balance_desc or updated_desc")] = "balance_desc",
        limit: Limit = queries.DEFAULT_PAGE_SIZE,
        cursor: UsersCursor = None,
    ) -> Response[queries.UserPage]:
        state = request.app.state
        headers = await wait_for(state, min_position)
        page = await queries.users(state.pool, order=order, limit=limit, cursor=cursor)
        return Response(page, headers=headers)

    @get(
        "/credits/users/{user_id:str}/balance",
        operation_id="GetUserBalanceAsOf",
        summary="A user's balance, holds and available credits as of an instant (now by default)",
        description=AS_OF_DESCRIPTION + " Without at: as of now, from the events too.",
        responses=problem_responses(
            details={422: "A parameter is out of range, or at is in the future; nothing was read."}
        ),
    )
    async def user_balance(
        self, request: Request[Principal, Any, State], user_id: UserIdPath, at: AtQuery = None
    ) -> Response[BalanceAtInstant]:
        state = request.app.state
        when = parse_instant("at", at) if at is not None else state.clock()
        return Response(await read_balance_at(state, user_id, when))

    @get(
        "/credits/users/{user_id:str}/statement",
        operation_id="GetUserStatement",
        summary="A user's movements between two instants, with the balances at both ends",
        description=STATEMENT_DESCRIPTION,
        responses=problem_responses(details={422: STATEMENT_422}),
        operation_class=StatementOperation,
    )
    async def user_statement(
        self, request: Request[Principal, Any, State], user_id: UserIdPath, start: FromQuery, end: ToQuery
    ) -> Response[StatementResponse]:
        return await read_statement(request, user_id, start, end)

    @get(
        "/audit",
        operation_id="ListAuditEntries",
        summary="Every change made by an admin, a service or the system, other than usage; newest first",
        description="One entry per recorded change: adjustments (new holds the signed amount), billing settings "
        "(one entry per setting, old and new its value), packages (added: new holds its fields; changed: old and "
        "new the changed fields), sales paused and resumed by the oversell guard (actor system). actor is the "
        "token's sub, or system for the ledger's own actions; actor_role and request_id are null for changes "
        "recorded before they were. id is the log position of the change. A request replayed under its "
        "Idempotency-Key changes nothing and adds no entry. Paginated with limit and cursor.",
        responses=problem_responses(),
    )
    async def audit(
        self,
        request: Request[Principal, Any, State],
        min_position: MinPositionHeader = 0,
        actor: ActorQuery = None,
        action: ActionQuery = None,
        limit: Limit = queries.DEFAULT_PAGE_SIZE,
        cursor: AuditCursor = None,
    ) -> Response[audit_queries.AuditPage]:
        state = request.app.state
        # The audit trail is a view of its own: the other views' position says nothing about it.
        headers = {}
        if min_position and not await queries.wait_for_position(
            state.pool, min_position, names=(AuditProjection.name,), timeout_seconds=READ_WAIT_SECONDS
        ):
            headers["Ledger-Stale"] = "true"
        page = await audit_queries.audit(state.pool, actor=actor, action=action, limit=limit, cursor=cursor)
        return Response(page, headers=headers)

    @post(
        "/credits/adjust",
        operation_id="AdjustCredits",
        summary="Add (positive) or remove (negative) credits by hand, with a reason",
        description="A positive amount grants a lot: kind promo unless given, never expiring unless expires_at "
        "(in the future) is given. A negative one takes from the lots in their order; a removal larger than the "
        "available balance is 409 insufficient-credits. The admin's sub is recorded with the reason.",
        status_code=201,
        responses=problem_responses(409, 413),
    )
    async def adjust(
        self,
        request: Request[Principal, Any, State],
        data: Annotated[
            AdjustRequest,
            body_example(
                "Give 50 credits back",
                {"user_id": "user-42", "amount_millicredits": 50000, "reason": "support ticket 1234"},
            ),
        ],
        idempotency_key: IdempotencyKeyHeader,
    ) -> Response[AdjustResponse]:
        state = request.app.state
        command = AdjustCredits(
            user_id=data.user_id,
            amount_millicredits=data.amount_millicredits,
            reason=data.reason,
            admin_id=request.user.sub,
            kind=data.kind,
            expires_at=data.expires_at,
        )
        receipt = await run_command(request, "adjust", state.ledger.adjust_credits, command, idempotency_key)
        body = AdjustResponse(
            adjustment_id=receipt.adjustment_id,
            user_id=receipt.user_id,
            amount_millicredits=receipt.amount_millicredits,
            balance_after_millicredits=receipt.balance_after_millicredits,
        )
        return reply(body, receipt, 201)

    @get(
        "/billing-config",
        operation_id="GetBillingConfig",
        summary="The billing settings the ledger applies",
        responses=problem_responses(),
    )
    async def billing_config(
        self, request: Request[Principal, Any, State], min_position: MinPositionHeader = 0
    ) -> Response[BillingConfigView]:
        state = request.app.state
        headers = await wait_for(state, min_position)
        settings = await queries.billing_settings(state.pool)
        return Response(msgspec.convert(msgspec.structs.asdict(settings), BillingConfigView), headers=headers)

    @put(
        "/billing-config",
        operation_id="ChangeBillingConfig",
        summary="Change some billing settings (a partial update)",
        description="Only the settings given change. Every change is an event recording who, when, old and new.",
        responses=problem_responses(409),
    )
    async def change_billing_config(
        self,
        request: Request[Principal, Any, State],
        data: Annotated[
            BillingConfigPatch,
            body_example(
                "Raise the monthly limit", {"api_monthly_limit_tokens": 200000000, "alert_threshold_percent": 90}
            ),
        ],
        idempotency_key: OptionalIdempotencyKeyHeader,
    ) -> Response[BillingConfigView]:
        state = request.app.state
        changes = msgspec.structs.asdict(data)
        command = ChangeBillingSettings(
            changes={key: value for key, value in changes.items() if value is not None}, changed_by=request.user.sub
        )
        receipt = await run_command(
            request, "billing-config", state.ledger.change_billing_settings, command, idempotency_key
        )
        return reply(msgspec.convert(receipt.settings, BillingConfigView), receipt, 200)

    @get(
        "/credits/packages",
        operation_id="ListAllPackages",
        summary="Every credit package, active or not",
        responses=problem_responses(),
    )
    async def packages(
        self, request: Request[Principal, Any, State], min_position: MinPositionHeader = 0
    ) -> Response[PackageList]:
        state = request.app.state
        headers = await wait_for(state, min_position)
        listed = await queries.packages(state.pool, active_only=False)
        body = PackageList(
            packages=[
                PackageResponse(
                    id=p.id,
                    name=p.name,
                    credits=p.credits,
                    price=Price(amount_minor=p.price.amount_minor, currency=p.price.currency),
                    active=p.active,
                    stripe_price_id=p.stripe_price_id,
                )
                for p in listed
            ]
        )
        return Response(body, headers=headers)

    @post(
        "/credits/packages",
        operation_id="AddPackage",
        summary="Add a credit package",
        status_code=201,
        responses=problem_responses(409),
    )
    async def add_package(
        self,
        request: Request[Principal, Any, State],
        data: Annotated[
            PackageCreate,
            body_example(
                "A larger package",
                {
                    "id": "studio",
                    "name": "Studio",
                    "credits": 5000,
                    "price": {"amount_minor": 150000, "currency": "BRL"},
                },
            ),
        ],
        idempotency_key: IdempotencyKeyHeader,
    ) -> Response[PackageResponse]:
        state = request.app.state
        command = AddPackage(
            package_id=data.id,
            name=data.name,
            credits=data.credits,
            price_amount_minor=data.price.amount_minor,
            currency=data.price.currency,
            active=data.active,
            stripe_price_id=data.stripe_price_id,
            added_by=request.user.sub,
        )
        receipt = await run_command(request, "add-package", state.ledger.add_package, command, idempotency_key)
        return reply(_package(receipt), receipt, 201)

    @patch(
        "/credits/packages/{package_id:str}",
        operation_id="ChangePackage",
        summary="Change a package's name, credits, price or active flag",
        responses=problem_responses(404, 409),
    )
    async def change_package(
        self,
        request: Request[Principal, Any, State],
        package_id: PackageIdPath,
        data: Annotated[PackagePatch, body_example("Take a package off sale", {"active": False})],
        idempotency_key: OptionalIdempotencyKeyHeader,
    ) -> Response[PackageResponse]:
        state = request.app.state
        changes: dict[str, str | int | bool | None] = {
            key: value
            for key, value in (("name", data.name), ("credits", data.credits), ("active", data.active))
            if value is not None
        }
        if data.price is not None:
            changes.update(price_amount_minor=data.price.amount_minor, currency=data.price.currency)
        if data.stripe_price_id is not None:
            changes["stripe_price_id"] = data.stripe_price_id
        receipt = await run_command(
            request,
            "change-package",
            state.ledger.change_package,
            ChangePackage(package_id=package_id, changes=changes, changed_by=request.user.sub),
            idempotency_key,
        )
        return reply(_package(receipt), receipt, 200)
