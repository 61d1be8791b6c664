"""The API front door: authentication, routing, idempotent replay, ``expand[]`` and error bodies.

It knows nothing of HTTP servers: it takes a request's parts and returns status, JSON body and headers, so the
whole API can also be driven without a socket.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.stripe_fake import catalog, checkout, errors, payments
from tests.stripe_fake.call import Call, Handler
from tests.stripe_fake.expand import expand
from tests.stripe_fake.forms import Params, decode
from tests.stripe_fake.ids import new_id
from tests.stripe_fake.store import RecordedRequest, RequestContext, SavedResponse, Store

_ROUTES: list[tuple[str, str, Handler]] = [
    ("POST", "/v1/products", catalog.create_product),
    ("GET", "/v1/products", catalog.list_products),
    ("GET", "/v1/products/{id}", catalog.retrieve_product),
    ("POST", "/v1/products/{id}", catalog.update_product),
    ("POST", "/v1/prices", catalog.create_price),
    ("GET", "/v1/prices", catalog.list_prices),
    ("GET", "/v1/prices/{id}", catalog.retrieve_price),
    ("POST", "/v1/prices/{id}", catalog.update_price),
    ("POST", "/v1/checkout/sessions", checkout.create_session),
    ("GET", "/v1/checkout/sessions", checkout.list_sessions),
    ("GET", "/v1/checkout/sessions/{id}", checkout.retrieve_session),
    ("POST", "/v1/checkout/sessions/{id}", checkout.update_session),
    ("POST", "/v1/checkout/sessions/{id}/expire", checkout.expire_session),
    ("GET", "/v1/checkout/sessions/{id}/line_items", checkout.list_line_items),
    ("GET", "/v1/payment_intents/{id}", payments.retriever("payment_intent")),
    ("GET", "/v1/charges", payments.list_charges),
    ("GET", "/v1/charges/{id}", payments.retriever("charge")),
    ("POST", "/v1/refunds", payments.create_refund),
    ("GET", "/v1/refunds", payments.list_refunds),
    ("GET", "/v1/refunds/{id}", payments.retriever("refund")),
    ("GET", "/v1/disputes", payments.list_disputes),
    ("GET", "/v1/disputes/{id}", payments.retriever("dispute")),
    ("GET", "/v1/events", payments.list_events),
    ("GET", "/v1/events/{id}", payments.retriever("event")),
]
_COMPILED = [
    (method, re.compile(re.escape(path).replace(r"\{id\}", "([^/]+)") + "$"), handler)
    for method, path, handler in _ROUTES
]
_TEST_KEY_PREFIXES = ("sk_test_", "rk_test_")


@dataclass(frozen=True)
class Response:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def handle(store: Store, method: str, path: str, query: str, body: str, headers: Mapping[str, str]) -> Response:
    """Answer one API request; ``body`` is the raw form body, ``query`` the raw query string."""
    lowered = {name.lower(): value for name, value in headers.items()}
    request_id = new_id("req_", 14)
    idempotency_key = lowered.get("idempotency-key") if method == "POST" else None
    version = lowered.get("stripe-version") or store.api_version
    params: dict[str, Any] = {}
    with store.lock:
        try:
            _authenticate(lowered.get("authorization"))
            params = decode(body if method == "POST" else query)
            status, payload, replayed = _dispatch(store, method, path, params, version, request_id, idempotency_key)
        except errors.StripeError as error:
            status, payload, replayed = error.status, error.body(), False
        except Exception as bug:
            # A fault in the fake itself: answer like Stripe's api_error so the test fails with the reason.
            status, payload, replayed = (
                500,
                {"error": {"type": "api_error", "message": f"fake Stripe bug: {bug!r}"}},
                False,
            )
        store.requests.append(RecordedRequest(method, path, params, lowered, status))
    response_headers = {"Request-Id": request_id, "Stripe-Version": version}
    if idempotency_key is not None:
        response_headers["Idempotency-Key"] = idempotency_key
    if replayed:
        response_headers["Idempotent-Replayed"] = "true"
    return Response(status, payload, response_headers)


def _authenticate(authorization: str | None) -> None:
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise errors.no_api_key()
    if not key.strip().startswith(_TEST_KEY_PREFIXES):
        # The fake is test mode only; a live key here means a test is misconfigured.
        raise errors.bad_api_key(key.strip())


def _dispatch(
    store: Store,
    method: str,
    path: str,
    params: dict[str, Any],
    version: str,
    request_id: str,
    idempotency_key: str | None,
) -> tuple[int, dict[str, Any], bool]:
    if idempotency_key is not None and idempotency_key in store.idempotency:
        saved = store.idempotency[idempotency_key]
        if (saved.method, saved.path, saved.params) != (method, path, params):
            raise errors.idempotency_mismatch(idempotency_key)
        return saved.status, copy.deepcopy(saved.body), True
    handler, path_id = _route(method, path)
    wrapped = Params(params)
    call = Call(wrapped, path_id, version, RequestContext(request_id, idempotency_key))
    result = handler(store, call)
    payload = expand(store, copy.deepcopy(result), wrapped.strings("expand") or [])
    # Stripe keeps a result for replay only once the endpoint ran; requests that failed validation are not saved.
    if idempotency_key is not None:
        store.idempotency[idempotency_key] = SavedResponse(method, path, params, 200, copy.deepcopy(payload))
    return 200, payload, False


def _route(method: str, path: str) -> tuple[Handler, str]:
    for route_method, pattern, handler in _COMPILED:
        match = pattern.match(path)
        if match and route_method == method:
            return handler, match.group(1) if match.groups() else ""
    raise errors.unrecognized_url(method, path)
