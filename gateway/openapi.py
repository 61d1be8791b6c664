"""The OpenAPI document: its configuration, the problem responses each operation documents, and the few
corrections that make it describe exactly what the server accepts.

Litestar builds the document from the handlers' signatures and the msgspec Structs, but not every rule the
decoder applies reaches it: Litestar drops a bound of 0 (it tests the bound's truth), ignores
``forbid_unknown_fields``, and writes an optional parameter as "a value or null", though a query string or a
header has no null. So the request bodies are described by msgspec's own JSON Schema, from the same Structs
that ``gateway.body`` decodes them with, an optional parameter by its value's schema alone, and a pattern's
end of string in the document's own regex dialect.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
from litestar import Controller, Router
from litestar.datastructures import CacheControlHeader
from litestar.enums import RequestEncodingType
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Example, OpenAPI
from litestar.params import BodyKwarg
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from gateway.schemas import Body, Problem

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
    503: ("unavailable", "A dependency did not answer in time, or the account is busy; retry after Retry-After."),
}


def problem_responses(
    *statuses: int, auth: bool = True, details: Mapping[int, str] | None = None
) -> dict[int, ResponseSpec]:
    """The problems an operation may answer: the common ones of an authenticated call, and ``statuses``.

    ``details`` replaces the description of a status where the operation has reasons of its own.
    """
    specs = {}
    for status in ((400, 401, 403, 422, 429, 503) if auth else ()) + statuses:
        type_, description = PROBLEMS[status]
        description = (details or {}).get(status, description)
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
    return ExactOpenAPIConfig(
        title="Credit ledger",
        version=version,
        description=(
            "An event-sourced credit ledger for AI products. Amounts are integers of the smallest unit "
            '(millicredits, tokens, minor units of money), written as JSON integers: 5, never 5.0 or "5" (a '
            "schema's `integer` alone would allow 5.0). Every state-changing POST takes an Idempotency-Key. "
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


# The corrections (see the module's docstring).


def _request_bodies() -> Iterator[type[Body]]:
    """Every request body Struct: the subclasses of ``Body``, wherever the routes define them."""
    pending = list(Body.__subclasses__())
    while pending:
        struct = pending.pop()
        pending.extend(struct.__subclasses__())
        yield struct


def _exact_request_bodies(components: dict[str, Any]) -> None:
    bodies = [struct for struct in _request_bodies() if struct.__name__ in components]
    _, exact = msgspec.json.schema_components(bodies, ref_template="#/components/schemas/{name}")
    for name, schema in exact.items():
        examples = components.get(name, {}).get("examples")
        components[name] = schema | ({"examples": examples} if examples else {})
    for struct in bodies:
        # A rule between fields, which no field's type can state (e.g. "tokens, or input and output tokens").
        components[struct.__name__].update(struct.json_schema_rules)


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``{"oneOf": [X, {"type": "null"}], ...}`` as ``X`` with the rest: an omitted parameter is never null."""
    choices = schema.get("oneOf")
    if not isinstance(choices, list) or {"type": "null"} not in choices or len(choices) != 2:  # noqa: PLR2004
        return schema
    (value,) = (choice for choice in choices if choice != {"type": "null"})
    return {**value, **{key: item for key, item in schema.items() if key != "oneOf"}}


def ecma(pattern: str) -> str:
    """A server's pattern as the document writes it: Python's end of the string, \\Z, is $ in ECMA-262."""
    return pattern.removesuffix("\\Z") + "$" if pattern.endswith("\\Z") else pattern


def _ecma_patterns(value: Any) -> None:
    if isinstance(value, dict):
        if isinstance(value.get("pattern"), str):
            value["pattern"] = ecma(value["pattern"])
        for item in value.values():
            _ecma_patterns(item)
    elif isinstance(value, list):
        for item in value:
            _ecma_patterns(item)


def exact(document: dict[str, Any]) -> dict[str, Any]:
    """The document Litestar built, corrected to describe exactly what the server accepts."""
    _exact_request_bodies(document.get("components", {}).get("schemas", {}))
    for item in document.get("paths", {}).values():
        for operation in item.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                parameter["schema"] = _without_null(parameter["schema"])
    _ecma_patterns(document)
    return document


@dataclasses.dataclass
class ExactOpenAPI(OpenAPI):
    """The OpenAPI object Litestar fills in; what it renders (``/schema`` and the viewer) is corrected."""

    def to_schema(self) -> dict[str, Any]:
        return exact(super().to_schema())


@dataclasses.dataclass
class ExactOpenAPIConfig(OpenAPIConfig):
    def to_openapi_schema(self) -> OpenAPI:
        document = super().to_openapi_schema()
        return ExactOpenAPI(**{field.name: getattr(document, field.name) for field in dataclasses.fields(document)})


# OPTIONS and the Allow header.


class ApiController(Controller):
    """A controller whose paths answer OPTIONS with every method they take.

    Litestar 2 makes a path's OPTIONS handler when the path's first handler is registered and keeps it as
    more join the path, so ``Allow`` names only the first method (litestar-org/litestar#4169, fixed in
    Litestar 3): here each path of several methods is built again with all its handlers at once.
    """

    def as_router(self) -> Router:
        router = super().as_router()
        for index, route in enumerate(router.routes):
            if isinstance(route, HTTPRoute):
                handlers = [handler for handler in route.route_handlers if handler.handler_name != "options_handler"]
                if len(handlers) > 1:
                    router.routes[index] = HTTPRoute(path=route.path, route_handlers=handlers)
        return router
