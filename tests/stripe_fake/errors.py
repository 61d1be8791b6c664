"""Stripe's error responses: ``{"error": {"type", "message", "code", "param", "doc_url"}}`` with an HTTP status.

Handlers raise ``StripeError``; the dispatcher turns it into the JSON body, so every failure has the one shape that
stripe-python parses into ``InvalidRequestError``, ``IdempotencyError`` or ``AuthenticationError``.
"""

from __future__ import annotations

from typing import Any


class StripeError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": self.error_type}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param is not None:
            error["param"] = self.param
        return {"error": error}


def invalid(message: str, *, param: str | None = None, code: str | None = None) -> StripeError:
    return StripeError(400, message, param=param, code=code)


def missing(kind: str, object_id: str, *, param: str = "id", status: int = 404) -> StripeError:
    # An id in the URL that does not exist is a 404; an id inside the request body is a 400, with the same message.
    return StripeError(status, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


def unknown_parameter(param: str) -> StripeError:
    return invalid(f"Received unknown parameter: {param}", param=param, code="parameter_unknown")


def missing_parameter(param: str) -> StripeError:
    return invalid(f"Missing required param: {param}.", param=param, code="parameter_missing")


def unrecognized_url(method: str, path: str) -> StripeError:
    return StripeError(
        404,
        f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
        "or we can help at https://support.stripe.com/.",
    )


def idempotency_mismatch(key: str) -> StripeError:
    return StripeError(
        400,
        "Keys for idempotent requests can only be used with the same parameters they were first used with. "
        f"Try using a key other than '{key}' if you meant to execute a different request.",
        error_type="idempotency_error",
    )


def no_api_key() -> StripeError:
    return StripeError(
        401,
        "You did not provide an API key. You need to provide your API key in the Authorization header, "
        "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). "
        "See https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.",
    )


def bad_api_key(key: str) -> StripeError:
    # Stripe never echoes a whole key back; it masks all but the ends.
    shown = f"{key[:8]}{'*' * 12}{key[-4:]}" if len(key) > 12 else key
    return StripeError(401, f"Invalid API Key provided: {shown}")
