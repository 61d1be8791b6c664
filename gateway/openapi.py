"""The OpenAPI document: its configuration and the problem responses each operation documents."""

from __future__ import annotations

from pathlib import Path

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.enums import RequestEncodingType
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Example
from litestar.params import BodyKwarg
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from gateway.schemas import Problem

# Swagger UI's files come from an installed package (swagger-ui-bundle-v2, Swagger UI 5, which renders
# OpenAPI 3.1; the older swagger-ui-bundle's 4.15 refuses it), so the page works with no internet. The
# package names its folder after the Swagger UI version, and so does the address: a new version is a new
# address, and browsers may keep each file for a year without asking again.
SWAGGER_UI_FILES = Path(str(swagger_ui_path))
SWAGGER_UI_PATH = f"/static/{SWAGGER_UI_FILES.name}"
SWAGGER_UI_MAX_AGE_SECONDS = 365 * 24 * 3600

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
        render_plugins=[
            JsonRenderPlugin(path=["/", "/openapi.json"]),
            SwaggerRenderPlugin(
                path="/swagger",
                js_url=f"{SWAGGER_UI_PATH}/swagger-ui-bundle.js",
                css_url=f"{SWAGGER_UI_PATH}/swagger-ui.css",
                standalone_preset_js_url=f"{SWAGGER_UI_PATH}/swagger-ui-standalone-preset.js",
                # Litestar's default favicon is a link to a CDN.
                favicon=f'<link rel="icon" type="image/png" href="{SWAGGER_UI_PATH}/favicon-32x32.png">',
            ),
        ],
    )


def swagger_ui_files() -> Router:
    """The Swagger UI files the document's viewer loads, served by the service itself."""
    return create_static_files_router(
        SWAGGER_UI_PATH,
        [SWAGGER_UI_FILES],
        name="swagger-ui",
        cache_control=CacheControlHeader(max_age=SWAGGER_UI_MAX_AGE_SECONDS, immutable=True),
        include_in_schema=False,
    )


# An operation that needs no token: one empty requirement says "anonymous", where an empty list would be
# dropped and the document-wide bearer requirement inherited.
NO_TOKEN: list[dict[str, list[str]]] = [{}]


def body_example(summary: str, value: dict[str, object]) -> BodyKwarg:
    """A JSON body marker carrying one example request, for the document's interactive viewer."""
    return BodyKwarg(media_type=RequestEncodingType.JSON, examples=[Example(summary=summary, value=value)])
