"""The one place where errors become HTTP: RFC 9457 problem details with a stable ``type`` each.

Ledger refusals, Litestar's own errors (validation, auth, routing, body size) and anything unexpected
all pass through here. An unexpected error is logged with its request id and answered with a 500 that
says nothing of its cause; a dependency that fails (the database, Stripe) is a 503 with ``Retry-After``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg
import eventsourcing.persistence
import psycopg
import psycopg_pool
import stripe
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    TooManyRequestsException,
    ValidationException,
)
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsException, ProblemDetailsPlugin

from ledger.errors import (
    ConcurrencyError,
    IdempotencyConflictError,
    InsufficientCreditsError,
    InvalidCommandError,
    LedgerError,
    NotFoundError,
    QuotaExceededError,
    RemovalExceedsAvailableError,
    ReservationNotOpenError,
    SalesPausedError,
    StateConflictError,
    StoreUnavailableError,
)

log = logging.getLogger("gateway.errors")
# Litestar names a parameter by its Python name; callers know it by its name on the wire.
WIRE_NAMES = {
    "idempotency_key": "Idempotency-Key",
    "min_position": "Ledger-Min-Position",
    "signature": "Stripe-Signature",
    "start": "from",
    "end": "to",
}
_MISSING = re.compile(r"Missing required (?P<where>\w+ parameter) '(?P<name>[^']+)'")

TITLES: Mapping[str, str] = {
    "validation": "The request is not valid",
    "malformed-request": "The request body is not valid JSON",
    "insufficient-credits": "Not enough credits",
    "quota-exceeded": "Token quota exceeded",
    "idempotency-conflict": "Idempotency key reused with a different request",
    "conflict": "The current state does not allow this change",
    "reservation-not-open": "The reservation is not open",
    "sales-paused": "Sales are paused",
    "not-found": "Not found",
    "unauthorized": "Authentication required",
    "forbidden": "Not allowed",
    "rate-limited": "Too many requests",
    "method-not-allowed": "Method not allowed",
    "payload-too-large": "Request body too large",
    "busy": "The account is busy; retry",
    "unavailable": "A dependency is unavailable; retry",
    "internal-error": "Internal error",
    "invalid-signature": "The Stripe signature does not verify",
    "payment-provider-error": "The payment provider refused or failed",
    "payments-unavailable": "Payments are not configured",
    "http-error": "HTTP error",
}


def problem(
    type_: str,
    status: int,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> ProblemDetailsException:
    return ProblemDetailsException(
        type_=type_, title=TITLES[type_], status_code=status, detail=detail, headers=headers, extra=extra or None
    )


def _ledger(error: LedgerError) -> ProblemDetailsException:  # noqa: C901, PLR0911 - one answer per refusal.
    if isinstance(error, InvalidCommandError):
        return problem("validation", 422, str(error), errors=[{"field": error.field, "reason": error.reason}])
    if isinstance(error, RemovalExceedsAvailableError):
        return problem(
            "insufficient-credits",
            409,
            str(error),
            available_millicredits=error.available_millicredits,
            required_millicredits=error.required_millicredits,
        )
    if isinstance(error, InsufficientCreditsError):
        return problem(
            "insufficient-credits",
            402,
            str(error),
            available_millicredits=error.available_millicredits,
            required_millicredits=error.required_millicredits,
        )
    if isinstance(error, QuotaExceededError):
        return problem(
            "quota-exceeded",
            429,
            str(error),
            headers={"Retry-After": str(error.retry_after_seconds)},
            window=error.window,
            limit_tokens=error.limit_tokens,
            used_tokens=error.used_tokens,
            retry_after_seconds=error.retry_after_seconds,
        )
    if isinstance(error, ReservationNotOpenError):
        return problem(
            "reservation-not-open",
            409,
            str(error),
            reservation_id=error.reservation_id,
            reservation_status=error.status,
        )
    if isinstance(error, NotFoundError):
        return problem("not-found", 404, str(error))
    if isinstance(error, IdempotencyConflictError):
        return problem("idempotency-conflict", 409, str(error))
    if isinstance(error, StateConflictError):
        return problem("conflict", 409, str(error), errors=[{"field": error.field, "reason": error.reason}])
    if isinstance(error, SalesPausedError):
        return problem(
            "sales-paused",
            409,
            str(error),
            potential_tokens=error.potential_tokens,
            package_tokens=error.package_tokens,
            allowed_tokens=error.allowed_tokens,
        )
    if isinstance(error, ConcurrencyError):
        return problem("busy", 503, str(error), headers={"Retry-After": "1"})
    return problem("validation", 422, str(error))


def _validation(error: ValidationException) -> ProblemDetailsException:
    details = error.extra if isinstance(error.extra, list) else []
    if not details and "malformed" in str(error.detail).lower():
        return problem("malformed-request", 400, "the body is not valid JSON")
    errors = [
        {
            "field": WIRE_NAMES.get(str(item.get("key")), str(item.get("key") or "body")),
            "reason": str(item.get("message", "is not valid")),
        }
        for item in details
        if isinstance(item, dict)
    ]
    missing = _MISSING.search(str(error.detail))
    if not errors and missing:
        errors = [{"field": missing["name"], "reason": f"the {missing['where']} is required"}]
    detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors) or str(error.detail)
    return problem("validation", 422, detail, errors=errors) if errors else problem("validation", 422, detail)


def _http(error: HTTPException) -> ProblemDetailsException:  # noqa: PLR0911 - one answer per status.
    if isinstance(error, ProblemDetailsException):
        return error
    if isinstance(error, ValidationException):
        return _validation(error)
    if isinstance(error, NotAuthorizedException):
        return problem("unauthorized", 401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    if isinstance(error, PermissionDeniedException):
        return problem("forbidden", 403, str(error.detail) or "this role may not do that")
    if isinstance(error, NotFoundException):
        return problem("not-found", 404, "no such resource")
    if isinstance(error, TooManyRequestsException):
        return problem("rate-limited", 429, str(error.detail), headers=error.headers)
    if error.status_code == 405:  # noqa: PLR2004
        return problem("method-not-allowed", 405, str(error.detail), headers=error.headers)
    if error.status_code == 413:  # noqa: PLR2004
        return problem("payload-too-large", 413, "the request body is larger than this API accepts")
    return problem("http-error", error.status_code, str(error.detail))


# What answers 503: a dependency that failed or did not answer in time. The caller may retry after
# Retry-After with the same Idempotency-Key; a write whose outcome the service could not learn is then
# answered from its marker, or applied once.
DEPENDENCY_FAULTS: Mapping[type[Exception], str] = {
    psycopg.OperationalError: "the database",
    psycopg.InterfaceError: "the database",
    psycopg_pool.PoolTimeout: "the database",
    eventsourcing.persistence.OperationalError: "the database",
    eventsourcing.persistence.InterfaceError: "the database",
    asyncpg.PostgresConnectionError: "the database",
    asyncpg.InterfaceError: "the database",
    asyncpg.exceptions.TooManyConnectionsError: "the database",
    asyncpg.exceptions.CannotConnectNowError: "the database",
    StoreUnavailableError: "the database",
    stripe.APIConnectionError: "Stripe",
    TimeoutError: "a dependency",
    OSError: "a dependency",
}
RETRY_AFTER_SECONDS = 1


def _unavailable(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    dependency = next((name for kind, name in DEPENDENCY_FAULTS.items() if isinstance(error, kind)), "a dependency")
    log.warning("%s did not answer: %s", dependency, type(error).__name__)
    retry = "retry with the same Idempotency-Key" if request.method == "POST" else "retry"
    return problem(
        "unavailable",
        503,
        f"{dependency} did not answer; {retry} after {RETRY_AFTER_SECONDS} s",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    ).to_response(request)


def _internal(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return problem("internal-error", 500, "an unexpected error happened; it has been logged").to_response(request)


def problem_details_plugin() -> ProblemDetailsPlugin:
    mapping: dict[type[Exception], Callable[[Any], ProblemDetailsException]] = {
        LedgerError: _ledger,
        HTTPException: _http,
    }
    return ProblemDetailsPlugin(ProblemDetailsConfig(exception_to_problem_detail_map=mapping))


EXCEPTION_HANDLERS: dict[type[Exception], Callable[[Request[Any, Any, Any], Any], Response[Any]]] = {
    **dict.fromkeys(DEPENDENCY_FAULTS, _unavailable),
    Exception: _internal,
}
# Every answer to an error, as the app's exception handling chooses it: the most specific class wins.
_ANSWERS: dict[type[Exception], Callable[[Request[Any, Any, Any], Any], Response[Any]]] = {
    LedgerError: lambda request, error: _ledger(error).to_response(request),
    HTTPException: lambda request, error: _http(error).to_response(request),
    **EXCEPTION_HANDLERS,
}


def problem_response(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    """The answer the app gives ``error``, for a path that answers outside Litestar's handlers (gateway.hot)."""
    answer = next(_ANSWERS[kind] for kind in type(error).__mro__ if kind in _ANSWERS)
    return answer(request, error)
