"""Being told: webhook endpoints and the notifications sent (admin), and where a user's email goes."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from litestar import Request, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.params import PathParameter, QueryParameter

from gateway.auth import Principal, requires
from gateway.calls import IdempotencyKeyHeader, OptionalIdempotencyKeyHeader
from gateway.openapi import ApiController, body_example, problem_responses
from gateway.outbound.addresses import private_address_of, url_problem
from gateway.problems import problem
from gateway.routes.user import CURSOR_DESCRIPTION
from gateway.schemas import STORABLE_TEXT, VISIBLE_ASCII, Body
from projections import notification_queries as store
from projections.notices import NOTIFICATION_TYPES

EventType = Literal[
    "*",
    "credits.low_balance",
    "credits.purchased",
    "payment.failed",
    "credits.clawed_back",
    "credits.welcome_granted",
    "alert.api_usage_threshold",
    "alert.sales_paused",
    "alert.sales_resumed",
    "alert.webhook_failures",
    "alert.unusual_consumption",
]
NotificationTypeName = Literal[
    "credits.low_balance",
    "credits.purchased",
    "payment.failed",
    "credits.clawed_back",
    "credits.welcome_granted",
    "alert.api_usage_threshold",
    "alert.sales_paused",
    "alert.sales_resumed",
    "alert.webhook_failures",
    "alert.unusual_consumption",
]
# Visible ASCII but "," and "@" on each side of one "@": the same in every regex dialect, unlike \s.
EMAIL_PATTERN = r"^[!-+\--?A-~]{1,64}@[!-+\--?A-~]{1,255}$"
# An http or https URL with a host and no user info; whether its host is private is checked by the handler.
URL_PATTERN = r"^https?://[A-Za-z0-9._~%!$&'()*+,;=:\[\]-]+(?:[/?#][!-~]*)?$"
UserIdPath = Annotated[
    str, PathParameter(min_length=1, max_length=128, pattern=VISIBLE_ASCII, description="The user's id")
]
Cursor = Annotated[
    str | None, QueryParameter(required=False, pattern=store.CURSOR_PATTERN, description=CURSOR_DESCRIPTION)
]
TypeQuery = Annotated[
    NotificationTypeName | None, QueryParameter(query="type", required=False, description="Only this type")
]
StatusQuery = Annotated[
    Literal["pending", "delivered", "failed"] | None, QueryParameter(required=False, description="Only this status")
]
Limit = Annotated[int, QueryParameter(ge=1, le=store.MAX_PAGE_SIZE, description="Page size, 1 to 500")]


class EndpointCreate(Body, frozen=True, kw_only=True):
    url: Annotated[str, msgspec.Meta(min_length=1, max_length=2_000, pattern=URL_PATTERN)]
    event_types: Annotated[list[EventType], msgspec.Meta(min_length=1, max_length=len(NOTIFICATION_TYPES) + 1)]
    description: Annotated[str, msgspec.Meta(max_length=500, pattern=STORABLE_TEXT)] = ""


class EndpointCreated(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    url: str
    event_types: list[str]
    description: str
    secret: str
    created_at: str


class ContactBody(Body, frozen=True, kw_only=True):
    email: Annotated[str, msgspec.Meta(pattern=EMAIL_PATTERN, max_length=320)]
    locale: Literal["pt-BR", "en"] = "pt-BR"


class Redelivery(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    status: str


def _conflict(key: str) -> Exception:
    return problem("idempotency-conflict", 409, f"Idempotency-Key {key!r} was used with a different request")


async def _once(
    request: Request[Principal, Any, State], operation: str, key: str | None, body: Any, write: Any
) -> Response[Any]:
    try:
        status, answer, replayed = await store.once(
            request.app.state.pool, principal=request.user.scope, operation=operation, key=key, body=body, write=write
        )
    except store.WriteConflictError:
        raise _conflict(key or "") from None
    return Response(answer, status_code=status, headers={"Idempotent-Replayed": "true"} if replayed else {})


class WebhookEndpointsController(ApiController):
    path = "/api/admin/webhook-endpoints"
    tags = ["Admin"]  # noqa: RUF012
    opt = requires("admin")

    @post(
        operation_id="CreateWebhookEndpoint",
        summary="Register a webhook endpoint; the answer carries its signing secret, shown this once",
        description='event_types: the notification types to send, or ["*"] for all. A URL whose host is on a '
        "loopback, link-local or private address is refused unless LEDGER_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true; "
        "the address is checked again at every delivery.",
        status_code=201,
        responses=problem_responses(409),
    )
    async def create(
        self,
        request: Request[Principal, Any, State],
        data: Annotated[
            EndpointCreate,
            body_example(
                "Every notification",
                {"url": "https://hooks.example.com/ledger", "event_types": ["*"], "description": "ops"},
            ),
        ],
        idempotency_key: IdempotencyKeyHeader,
    ) -> Response[EndpointCreated]:
        settings = request.app.state.settings
        reason = url_problem(data.url)
        if reason is None and not settings.webhook_allow_private_networks:
            private = await private_address_of(data.url)
            if private is not None:
                reason = f"reaches {private}, a private, loopback or link-local address"
        errors = [{"field": "url", "reason": reason}] if reason else []
        if errors:
            raise problem("validation", 422, "; ".join(f"{e['field']} {e['reason']}" for e in errors), errors=errors)
        event_types: list[str] = sorted(set(data.event_types))

        async def write(conn: Any) -> tuple[int, Any]:
            added = await store.add_endpoint(conn, url=data.url, event_types=event_types, description=data.description)
            return 201, added

        return await _once(request, "create-webhook-endpoint", idempotency_key, data, write)

    @get(
        operation_id="ListWebhookEndpoints",
        summary="The webhook endpoints (without their secrets)",
        responses=problem_responses(),
    )
    async def list_endpoints(self, request: Request[Principal, Any, State]) -> store.EndpointList:
        return await store.endpoints(request.app.state.pool)

    @delete(
        "/{endpoint_id:uuid}",
        operation_id="DeleteWebhookEndpoint",
        summary="Stop sending to an endpoint; its pending deliveries fail",
        status_code=204,
        responses=problem_responses(404, 409),
    )
    async def delete_endpoint(
        self,
        request: Request[Principal, Any, State],
        endpoint_id: UUID,
        idempotency_key: OptionalIdempotencyKeyHeader,
    ) -> None:
        async def write(conn: Any) -> tuple[int, Any]:
            if not await store.delete_endpoint(conn, endpoint_id):
                raise problem("not-found", 404, f"no webhook endpoint {endpoint_id}")
            return 204, None

        await _once(request, "delete-webhook-endpoint", idempotency_key, {"id": str(endpoint_id)}, write)


class NotificationsController(ApiController):
    path = "/api/admin/notifications"
    tags = ["Admin"]  # noqa: RUF012
    opt = requires("admin")

    @get(
        operation_id="ListNotifications",
        summary="The notifications created, newest first, with their delivery status",
        responses=problem_responses(),
    )
    async def list_notifications(
        self,
        request: Request[Principal, Any, State],
        type_: TypeQuery = None,
        status: StatusQuery = None,
        limit: Limit = store.DEFAULT_PAGE_SIZE,
        cursor: Cursor = None,
    ) -> store.NotificationPage:
        return await store.notifications(request.app.state.pool, kind=type_, status=status, limit=limit, cursor=cursor)

    @post(
        "/{notification_id:uuid}/redeliver",
        operation_id="RedeliverNotification",
        summary="Send a notification again to every recipient, under the same webhook-id",
        status_code=202,
        responses=problem_responses(404, 409),
    )
    async def redeliver(
        self,
        request: Request[Principal, Any, State],
        notification_id: UUID,
        idempotency_key: OptionalIdempotencyKeyHeader,
    ) -> Response[Redelivery]:
        async def write(conn: Any) -> tuple[int, Any]:
            if not await store.redeliver(conn, notification_id):
                raise problem("not-found", 404, f"no notification {notification_id}")
            return 202, Redelivery(id=notification_id, status="pending")

        return await _once(request, "redeliver", idempotency_key, {"id": str(notification_id)}, write)


class ContactsController(ApiController):
    path = "/api/users/{user_id:str}/contact"
    tags = ["Internal services"]  # noqa: RUF012
    opt = requires("service", "admin")

    @put(
        operation_id="SetContact",
        summary="Where the user's own notifications go by email, and in which language",
        description="Not an event: DELETE erases it. Email is sent only while LEDGER_SMTP_URL is set.",
        status_code=200,
        responses=problem_responses(409),
    )
    async def set_contact(
        self,
        request: Request[Principal, Any, State],
        user_id: UserIdPath,
        data: Annotated[ContactBody, body_example("A user's address", {"email": "ana@example.com", "locale": "pt-BR"})],
        idempotency_key: OptionalIdempotencyKeyHeader,
    ) -> Response[store.Contact]:
        contact = store.Contact(user_id=user_id, email=data.email, locale=data.locale)

        async def write(conn: Any) -> tuple[int, Any]:
            await store.set_contact(conn, contact)
            return 200, contact

        return await _once(request, "set-contact", idempotency_key, contact, write)

    @delete(
        operation_id="EraseContact",
        summary="Erase the user's address, also from deliveries not yet sent",
        status_code=204,
        responses=problem_responses(404, 409),
    )
    async def erase_contact(
        self,
        request: Request[Principal, Any, State],
        user_id: UserIdPath,
        idempotency_key: OptionalIdempotencyKeyHeader,
    ) -> None:
        async def write(conn: Any) -> tuple[int, Any]:
            if not await store.erase_contact(conn, user_id):
                raise problem("not-found", 404, f"no contact for user {user_id!r}")
            return 204, None

        await _once(request, "erase-contact", idempotency_key, {"user_id": user_id}, write)
