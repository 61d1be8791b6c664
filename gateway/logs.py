"""Structured JSON logs, one object a line, each with the request id of the request it belongs to.

Nothing here logs a header or a body: tokens, secrets and JWTs never reach the log. A request id comes
from a valid ``X-Request-Id`` header or is made up, and is returned in every response's ``X-Request-Id``.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import re
import secrets
import time
from datetime import UTC, datetime

from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
access_log = logging.getLogger("gateway.access")

# A made-up request id is this process's random prefix and a counter: unique across processes and
# restarts like a UUID, without reading the system's random source on every request (uuid4 was 4% of
# a debit's CPU in the benchmark's profile).
_ID_PREFIX = secrets.token_hex(6)
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}-{next(_ID_COUNTER):x}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


# Where, in the request's scope state, the middleware leaves the id for the hook that sends it back.
_REQUEST_ID_KEY = "gateway.logs.request_id"


def _request_id_of(scope: Scope) -> str:
    """The caller's own id when it is a valid one, or a new one."""
    given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
    return given if _VALID_ID.match(given) else new_request_id()


async def send_request_id(message: Message, scope: Scope) -> None:
    """The app's ``before_send`` hook: every answer carries ``X-Request-Id``.

    Answers that no route's middleware sees (an unknown route's 404, a refusal raised by a middleware
    and answered by the app's outer handler) pass here too; they get an id of their own.
    """
    if message["type"] == "http.response.start":
        request_id = scope["state"].get(_REQUEST_ID_KEY) or scope["state"].setdefault(
            _REQUEST_ID_KEY, _request_id_of(scope)
        )
        MutableScopeHeaders.from_message(message)["X-Request-Id"] = request_id


class RequestIdMiddleware(ASGIMiddleware):
    """Outermost: gives every request an id for its log lines, and writes one access line when it ends."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        token = begin_request(scope)
        started = time.perf_counter()
        status = 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await next_app(scope, receive, send_noting_status)
        except Exception as error:
            # Raised past us (an auth refusal, say): the app's outer handler answers it with this status.
            status = getattr(error, "status_code", 500)
            raise
        finally:
            end_request(scope, status, started, token)


def begin_request(scope: Scope) -> contextvars.Token[str | None]:
    """Give the request its id: in its scope for the answer's header, and in the context for log lines."""
    request_id = _request_id_of(scope)
    scope["state"][_REQUEST_ID_KEY] = request_id
    return REQUEST_ID.set(request_id)


def request_id_in(scope: Scope) -> str:
    """The id ``begin_request`` gave the request."""
    request_id: str = scope["state"][_REQUEST_ID_KEY]
    return request_id


def end_request(scope: Scope, status: int, started: float, token: contextvars.Token[str | None]) -> None:
    """Write the request's access line (at INFO) and leave its id's context."""
    if access_log.isEnabledFor(logging.INFO):
        user = scope.get("user")
        access_log.info(
            "request",
            extra={
                "fields": {
                    "method": scope.get("method"),
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "principal": getattr(user, "scope", None),
                }
            },
        )
    REQUEST_ID.reset(token)
