"""The OpenAPI document: its configuration and the problem responses each operation documents."""

from __future__ import annotations

from litestar.enums import RequestEncodingType
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Example
from litestar.params import BodyKwarg

from gateway.schemas import Problem

PROBLEMS: dict[int, tuple[str, str]] = {
    400: ("malformed-request", "The body is not valid JSON."),
    401: ("unauthorized", "No valid bearer token: missing, expired, malformed or wrongly signed."),
    402: ("insufficient-credits", "The available balance is smaller than the cost; nothing was written."),
    403: ("forbidden", "The token's role may not call this operation."),
    404: ("not-found", "The resource does not exist."),
    409: ("idempotency-conflict", "A conflict: the key was used with another body, or the state does not allow it."),
    413: ("payload-too-large", "The body is larger than the API accepts."),
    422: ("validation", "A field is missing, unknown, of the wrong type or out of range; nothing was written."),
    429: ("quota-exceeded", "A token quota or the request-rate limit is reached; see Retry-After."),
    503: ("unavailable", "The database did not answer in time; retry after Retry-After."),
}


def problem_responses(*statuses: int, auth: bool = True) -> dict[int, ResponseSpec]:
    """The problems an operation may answer: the common ones of an authenticated call, and ``statuses``."""
    specs = {}
    for status in ((400, 401, 403, 422, 429) if auth else ()) + statuses:
        type_, description = PROBLEMS[status]
        specs[status] = ResponseSpec(
            data_container=Problem,
            description=description,
            media_type="application/problem+json",
            generate_examples=False,
            examples=[
                Example(
                    summary=type_,
                    value={"type": type_, "title": type_.replace("-", " "), "status": status, "detail": description},
                )
            ],
        )
    return specs


def openapi_config(version: str) -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Credit ledger",
        version=version,
        description=(
            "An event-sourced credit ledger for AI products. Amounts are integers of the smallest unit "
            "(millicredits, tokens, minor units of money). Every state-changing POST takes an Idempotency-Key. "
            "Errors are RFC 9457 problem details with a stable `type`."
        ),
        path="/schema",
        render_plugins=[JsonRenderPlugin(path=["/", "/openapi.json"]), SwaggerRenderPlugin(path="/swagger")],
    )


# An operation that needs no token: one empty requirement says "anonymous", where an empty list would be
# dropped and the document-wide bearer requirement inherited.
NO_TOKEN: list[dict[str, list[str]]] = [{}]


def body_example(summary: str, value: dict[str, object]) -> BodyKwarg:
    """A JSON body marker carrying one example request, for the document's interactive viewer."""
    return BodyKwarg(media_type=RequestEncodingType.JSON, examples=[Example(summary=summary, value=value)])
