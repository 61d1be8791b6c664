"""The lean path of the metered-work routes: report usage, hold credits, settle a hold.

These three routes carry nearly all of an AI product's traffic, and Litestar's per-request machinery
(router, middleware stack, kwargs model, response object, send hooks) was about half of a debit's
server CPU in the benchmark's profile. So the app answers them here first, with the same parts the
routes use: the auth middleware's cache of verified tokens, the request-rate counter, the request
metrics' series, the request id and access line, and the routes' own command and answer builders
(``gateway.routes.service``). Errors are answered by the app's own problem mapping. A successful answer
leaves in one socket write (``gateway.wire``).

Anything but the plain case goes to Litestar untouched, before any side effect: a token not verified
before (Litestar verifies it, and the next request comes here), another role, a missing or unusual
header, a body that is too large, not JSON or not valid. Litestar then answers it as it answers every
route. The routes stay declared in Litestar, so the OpenAPI document is unchanged.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request

# Litestar's router checks the Host header with this before routing; the lean path must refuse the same ones
# (tests/gateway/test_lean_routes.py fails if it moves or changes).
from litestar._asgi.utils import is_valid_host
from litestar.enums import ScopeType
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent, Message, Receive, Scope, Send

from gateway.auth import ROLES_OPT, BearerMiddleware, Principal
from gateway.calls import MAX_IDEMPOTENCY_KEY_LENGTH, publish_change, run_command_as
from gateway.framing import NEWLINE, end_json_with_newline
from gateway.logs import begin_request, end_request, request_id_in, send_request_id
from gateway.metrics import RequestMetricsMiddleware
from gateway.problems import problem_response
from gateway.ratelimit import count_request
from gateway.routes import service
from gateway.schemas import VISIBLE_ASCII, Body, DebitRequest, ReservationRequest, SettleRequest
from gateway.wire import send_whole
from ledger.application import Ledger
from ledger.errors import InvalidCommandError

if TYPE_CHECKING:
    from litestar import Litestar

_VISIBLE = re.compile(VISIBLE_ASCII)
_SETTLE = re.compile(r"^/api/usage/reservations/([^/]+)/settle\Z")
_JSON = b"application/json"
# Who may call these routes: the roles their controller names.
ROLES: tuple[str, ...] = service.UsageController.opt[ROLES_OPT]


@dataclass(frozen=True)
class HotRoute:
    """One metered-work route: what its body is, what it becomes, which use case runs it, what it answers."""

    operation: str
    template: str  # Litestar's path template: the request metrics' label.
    body: type[Body]
    command: Callable[[Any, str], Any]
    use_case: Callable[..., Any]  # The ledger's method for the command, called on the app's ledger.
    answer: Callable[[Any], msgspec.Struct]
    status: int


DEBIT = HotRoute(
    "debit", "/api/usage/debits", DebitRequest, service.debit_command, Ledger.debit_usage, service.debit_answer, 201
)
RESERVE = HotRoute(
    "reserve",
    "/api/usage/reservations",
    ReservationRequest,
    service.reserve_command,
    Ledger.reserve_credits,
    service.reserve_answer,
    201,
)
SETTLE = HotRoute(
    "settle",
    "/api/usage/reservations/{reservation_id:str}/settle",
    SettleRequest,
    service.settle_command,
    Ledger.settle_reservation,
    service.settle_answer,
    200,
)
_EXACT = {DEBIT.template: DEBIT, RESERVE.template: RESERVE}


@dataclass(frozen=True)
class Call:
    """A request the lean path can answer: everything checked that can be checked without a side effect."""

    route: HotRoute
    principal: Principal
    key: str
    command: Any


class HotPath:
    def __init__(self, app: Litestar, metrics: RequestMetricsMiddleware, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.secret: str = app.state.settings.jwt_secret

    @staticmethod
    def route(scope: Scope) -> tuple[HotRoute, str] | None:
        """The route and its path's id when this request is for one of the lean routes."""
        if scope["type"] != ScopeType.HTTP or scope["method"] != "POST":
            return None
        path: str = scope["path"]
        exact = _EXACT.get(path)
        if exact is not None:
            return exact, ""
        settle = _SETTLE.match(path)
        if settle is not None and len(settle[1]) <= service.MAX_RESERVATION_ID_LENGTH:
            return SETTLE, settle[1]
        return None

    async def answer(self, route: HotRoute, path_id: str, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Answer the request, or give back the receive Litestar must use to answer it instead."""
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None  # The client went away before its request was whole: there is no one to answer.
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                break
        again = _replay(body, receive, more=more)
        whole = not more and len(body) <= self.max_body_bytes
        call = self._call(route, path_id, scope, body) if whole else None
        if call is None:
            return again
        await self._run(call, scope, again, send)
        return None

    def _call(self, route: HotRoute, path_id: str, scope: Scope, body: bytes) -> Call | None:
        token = key = content_type = None
        for name, value in scope["headers"]:
            if name == b"host" and not is_valid_host(value):
                return None  # Litestar's router refuses it (400).
            if name == b"authorization":
                token = value if token is None else b""
            elif name == b"idempotency-key":
                key = value if key is None else b""
            elif name == b"content-type":
                content_type = value
        if not token or not key or content_type is None or content_type.partition(b";")[0].strip() != _JSON:
            return None
        principal = self._known(token)
        if principal is None or principal.role not in ROLES:
            return None
        idempotency_key = key.decode("latin-1")
        if len(idempotency_key) > MAX_IDEMPOTENCY_KEY_LENGTH or not _VISIBLE.match(idempotency_key):
            return None
        try:
            data = msgspec.json.decode(body, type=route.body, strict=True)
            command = route.command(data, path_id)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, InvalidCommandError):
            return None  # Litestar names the field and the reason.
        return Call(route, principal, idempotency_key, command)

    def _known(self, header: bytes) -> Principal | None:
        scheme, _, encoded = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer":
            return None
        known = BearerMiddleware.verified.get((self.secret, encoded.strip()))
        if known is None or known[1] <= time.time() or not isinstance(known[0].user, Principal):
            return None
        return known[0].user

    async def _run(self, call: Call, scope: Scope, receive: Receive, send: Send) -> None:
        scope["user"] = call.principal
        request_token = begin_request(scope)
        started = self.metrics.begin("POST", call.route.template)
        status = 500
        try:
            status = await self._respond(call, scope, receive, send)
        finally:
            self.metrics.end("POST", call.route.template, status, time.perf_counter() - started)
            end_request(scope, status, started, request_token)

    async def _respond(self, call: Call, scope: Scope, receive: Receive, send: Send) -> int:
        state = self.app.state
        counted = await count_request(state, call.principal)
        rate_headers = counted.headers if counted is not None else {}
        if counted is not None and counted.refusal is not None:
            return await self._problem(counted.refusal, rate_headers, scope, receive, send)
        try:
            use_case = functools.partial(call.route.use_case, state.ledger)
            receipt = await run_command_as(
                state, call.principal, call.route.operation, use_case, call.command, call.key
            )
        except Exception as error:  # noqa: BLE001 - every error is answered as the app answers it.
            return await self._problem(error, rate_headers, scope, receive, send)
        content = msgspec.json.encode(call.route.answer(receipt)) + NEWLINE
        headers = [
            (b"content-type", _JSON),
            (b"content-length", b"%d" % len(content)),
            (b"ledger-position", b"%d" % receipt.position),
            *((name.lower().encode(), value.encode()) for name, value in rate_headers.items()),
            (b"x-request-id", request_id_in(scope).encode()),
        ]
        if receipt.replayed:
            headers.append((b"idempotent-replayed", b"true"))
        try:
            if not await send_whole(send, call.route.status, headers, content):
                start: HTTPResponseStartEvent = {
                    "type": "http.response.start",
                    "status": call.route.status,
                    "headers": headers,
                }
                whole: HTTPResponseBodyEvent = {"type": "http.response.body", "body": content, "more_body": False}
                await send(start)
                await send(whole)
        finally:
            # The caller's answer goes first; the live streams hear of the change right after it, whether or
            # not the caller stayed to read it.
            publish_change(state, receipt)
        return call.route.status

    async def _problem(
        self, error: Exception, rate_headers: dict[str, str], scope: Scope, receive: Receive, send: Send
    ) -> int:
        request: Request[Any, Any, Any] = Request(scope, receive)
        response = problem_response(request, error)
        for name, value in rate_headers.items():
            response.headers.setdefault(name, value)

        async def framed(message: Message) -> None:
            await send_request_id(message, scope)
            await end_json_with_newline(message, scope)
            await send(message)

        await response.to_asgi_response(app=None, request=request)(scope, receive, framed)
        return response.status_code or HTTP_500_INTERNAL_SERVER_ERROR


def _replay(body: bytes, receive: Receive, *, more: bool) -> Receive:
    """A receive that gives the body read so far once, then the client's own messages."""
    given = False

    async def again() -> Any:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": more}

    return again
