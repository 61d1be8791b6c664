"""What the writing endpoints do with bad input, over HTTP against a real gateway.

The contract: integers are integers (no floats, not even 1.0; no numeric strings; no booleans), every amount is
within its bounds and at most 2^53 - 1, unknown fields are refused, strings have lengths, and the whole body is
one JSON object no larger than 64 KiB. A refusal is a 4xx problem, never a 5xx: 422 `validation` naming the
field, 400 `malformed-request` for a body that is not JSON, 413 for one that is too large. Nothing is written.

Each bad request differs from a valid one (accepted, as the positive control shows) in one thing only, and the
account it names is funded, so a refusal is for that one thing and never for want of credits.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from ledger.amounts import MAX_AMOUNT
from tests.gateway.server import Api, Gateway, private_database, running

USER = "bad-input-user"
MAX_BODY_BYTES = 64 * 1024
TOO_BIG = 2**53  # One past the largest amount the contract allows.
DROP = object()  # In a case: the field is left out.


@pytest.fixture(scope="module")
def gateway(database_url: str) -> Iterator[Gateway]:
    # One gateway for the module keeps it fast; every test compares the event count with its own starting point.
    with private_database(database_url, f"ledger_bad_input_{os.getpid()}") as url:
        yield from running(url)


@dataclass
class World:
    """The gateway, a caller per role, a funded account with an open reservation, and fresh numbers."""

    gateway: Gateway
    callers: dict[str, Api]
    reservation_id: str = ""
    counter: Iterator[int] = field(default_factory=itertools.count)

    def unique(self) -> int:
        return next(self.counter)

    def reserve(self) -> str:
        response = self.callers["service"].post(
            "/api/usage/reservations",
            json={"user_id": USER, "estimated_tokens": 10},
            headers={"Idempotency-Key": f"bad-input-reservation-{self.unique()}"},
        )
        assert response.status_code == 201, response.text
        reservation_id: str = response.json()["reservation_id"]
        return reservation_id


@pytest.fixture(scope="module")
def world(gateway: Gateway) -> Iterator[World]:
    with gateway.client("service", "bad-input-service") as service, gateway.client("admin", "bad-input-admin") as admin:
        funded = admin.post(
            "/api/admin/credits/adjust",
            json={"user_id": USER, "amount_millicredits": 10**12, "reason": "fund the bad input tests"},
            headers={"Idempotency-Key": "bad-input-fund"},
        )
        assert funded.status_code == 201, funded.text
        world = World(gateway, {"service": service, "admin": admin})
        world.reservation_id = world.reserve()  # Stays open: every request that names it is refused.
        yield world


@dataclass(frozen=True)
class Endpoint:
    """A writing endpoint, the role that calls it, and a body it accepts (given a fresh number)."""

    method: str
    path: str
    role: str
    valid: Callable[[int], dict[str, Any]]
    key_required: bool = True


ENDPOINTS = {
    "debit": Endpoint("POST", "/api/usage/debits", "service", lambda _: {"user_id": USER, "tokens": 5}),
    "debit by input and output": Endpoint(
        "POST", "/api/usage/debits", "service", lambda _: {"user_id": USER, "input_tokens": 3, "output_tokens": 2}
    ),
    "reserve": Endpoint(
        "POST", "/api/usage/reservations", "service", lambda _: {"user_id": USER, "estimated_tokens": 10}
    ),
    "settle": Endpoint("POST", "/api/usage/reservations/{reservation_id}/settle", "service", lambda _: {"tokens": 5}),
    "settle by input and output": Endpoint(
        "POST",
        "/api/usage/reservations/{reservation_id}/settle",
        "service",
        lambda _: {"input_tokens": 3, "output_tokens": 2},
    ),
    "adjust": Endpoint(
        "POST",
        "/api/admin/credits/adjust",
        "admin",
        lambda n: {"user_id": USER, "amount_millicredits": 1_000 + n, "reason": "bad input tests"},
    ),
    # A partial update: the valid body changes one setting to a value it never had, so it always writes.
    "billing-config": Endpoint(
        "PUT", "/api/admin/billing-config", "admin", lambda n: {"welcome_credits": 1 + n}, key_required=False
    ),
    "add package": Endpoint(
        "POST",
        "/api/admin/credits/packages",
        "admin",
        lambda n: {
            "id": f"bad-input-{n}",
            "name": "Bad input",
            "credits": 10,
            "price": {"amount_minor": 990, "currency": "BRL"},
            "active": True,
        },
    ),
    "change package": Endpoint(
        "PATCH",
        "/api/admin/credits/packages/starter",
        "admin",
        lambda n: {"name": f"Starter {n}"},
        key_required=False,
    ),
}
# The endpoints by their own path; the variants above ("by input and output") share one.
DISTINCT = ["debit", "reserve", "settle", "adjust", "billing-config", "add package", "change package"]
# A string field of each endpoint that has one (the billing settings are all integers).
STRING_FIELDS = {
    "debit": "model",
    "reserve": "analysis_id",
    "settle": "model",
    "adjust": "reason",
    "add package": "name",
    "change package": "name",
}


def valid(world: World, endpoint: str) -> dict[str, Any]:
    """A body the endpoint accepts, with a fresh number wherever a repeated value would change nothing."""
    return ENDPOINTS[endpoint].valid(world.unique())


def send(
    world: World, endpoint: Endpoint, content: bytes, *, keyed: bool = True, path: str | None = None
) -> tuple[httpx.Response, int]:
    """Send raw bytes as the body, with a fresh Idempotency-Key unless `keyed` is False.

    Returns the response and the number of events written meanwhile.
    """
    headers = {"Content-Type": "application/json"}
    if keyed:
        headers["Idempotency-Key"] = f"bad-input-{world.unique()}"
    url = (path or endpoint.path).format(reservation_id=world.reservation_id)
    before = world.gateway.events()
    response = world.callers[endpoint.role].request(endpoint.method, url, content=content, headers=headers)
    return response, world.gateway.events() - before


def encoded(body: Any) -> bytes:
    return json.dumps(body).encode()


def changed(body: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """The body with one (possibly nested) field set to `value`, or left out for DROP."""
    body = json.loads(json.dumps(body))
    *parents, name = dotted.split(".")
    target = body
    for parent in parents:
        target = target[parent]
    if value is DROP:
        target.pop(name, None)
    else:
        target[name] = value
    return body


def assert_refused(response: httpx.Response, status: int, type_: str, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    problem = response.json()
    assert (problem["type"], problem["status"]) == (type_, status)
    if field is not None:
        # A header is named either way, `Idempotency-Key` or `idempotency_key`: both say which field.
        named = {error["field"].lower().replace("-", "_") for error in problem["errors"]}
        assert field.lower().replace("-", "_") in named, problem


# The field cases: each endpoint's fields, each with the values it must refuse.

NOT_INTEGERS = [1.5, 1.0, "5", True, False]
# A required integer must not be null either (an optional one may be: null means "not given").
NOT_INTEGERS_OR_NULL = [*NOT_INTEGERS, None]
BEYOND_2_53 = [TOO_BIG, 2**64, 10**30]
BAD_USER_IDS = ["", "u" * 129, "has space", "naïve", 5, None, DROP]
# model, agent_id, analysis_id: 1 to 128 characters, none of them NUL (PostgreSQL's text cannot hold it).
BAD_LABELS = ["", "m" * 129, "m" * 60_000, 5, "gemini\u0000pro"]

FIELD_CASES: list[tuple[str, str, list[Any]]] = [
    # Usage is counted in whole tokens, at least one.
    ("debit", "tokens", [*NOT_INTEGERS, 0, -1, *BEYOND_2_53, -(10**30)]),
    ("debit", "user_id", BAD_USER_IDS),
    ("debit", "model", BAD_LABELS),
    ("debit", "agent_id", BAD_LABELS),
    ("debit", "analysis_id", BAD_LABELS),
    ("debit", "occurred_at", ["yesterday", "2026-01-01", "2026-13-01T00:00:00Z", 1_767_225_600]),
    ("debit by input and output", "input_tokens", [*NOT_INTEGERS, -1, *BEYOND_2_53]),
    ("debit by input and output", "output_tokens", [*NOT_INTEGERS, -1, *BEYOND_2_53]),
    ("reserve", "estimated_tokens", [*NOT_INTEGERS_OR_NULL, 0, -1, *BEYOND_2_53, DROP]),
    ("reserve", "ttl_seconds", [*NOT_INTEGERS, 0, -1, 86_401, TOO_BIG]),
    ("reserve", "user_id", BAD_USER_IDS),
    ("reserve", "analysis_id", BAD_LABELS),
    # A settlement may be of zero tokens (the work used none), but never fewer.
    ("settle", "tokens", [*NOT_INTEGERS, -1, *BEYOND_2_53]),
    ("settle", "model", BAD_LABELS),
    ("settle by input and output", "input_tokens", [*NOT_INTEGERS, -1, *BEYOND_2_53]),
    ("settle by input and output", "output_tokens", [*NOT_INTEGERS, -1, *BEYOND_2_53]),
    # An adjustment is signed but never zero, and within 2^53 - 1 either way.
    ("adjust", "amount_millicredits", [*NOT_INTEGERS_OR_NULL, 0, *BEYOND_2_53, -TOO_BIG, -(10**30), DROP]),
    ("adjust", "reason", ["", "r" * 501, "r" * 60_000, 5, None, DROP, "refund\u0000"]),
    ("adjust", "user_id", BAD_USER_IDS),
    ("billing-config", "api_monthly_limit_tokens", [*NOT_INTEGERS, 0, -1, TOO_BIG]),
    ("billing-config", "alert_threshold_percent", [*NOT_INTEGERS, 0, 101]),
    ("billing-config", "hourly_token_limit", [*NOT_INTEGERS, 0, TOO_BIG]),
    ("billing-config", "daily_token_limit", [*NOT_INTEGERS, 0, TOO_BIG]),
    ("billing-config", "min_balance_for_analysis_millicredits", [*NOT_INTEGERS, -1, TOO_BIG]),
    ("billing-config", "tokens_per_credit", [*NOT_INTEGERS, 0, 1_000_000_001]),
    ("billing-config", "welcome_credits", [*NOT_INTEGERS, -1, 1_000_000_001]),
    # A package is whole credits and a price in minor units, each at most (2^53 - 1) / 1000.
    ("add package", "credits", [*NOT_INTEGERS_OR_NULL, 0, -1, MAX_AMOUNT // 1_000 + 1, TOO_BIG, DROP]),
    ("add package", "price.amount_minor", [*NOT_INTEGERS_OR_NULL, 0, -1, MAX_AMOUNT // 1_000 + 1, TOO_BIG, DROP]),
    ("add package", "price.currency", ["brl", "BR", "BRLX", "", 986, None]),
    ("add package", "price", [[990], "9.90", 990, None, DROP]),
    ("add package", "id", ["", "has space", "p" * 65, "pacote-ção", 5, None, DROP]),
    ("add package", "name", ["", "n" * 101, "n" * 60_000, 5, None, DROP, "Pro\u0000"]),
    ("add package", "active", ["true", 1, 0, None]),
    ("add package", "stripe_price_id", ["", "p" * 256, 5, "price_\u0000"]),
    ("change package", "credits", [*NOT_INTEGERS, 0, -1, TOO_BIG]),
    ("change package", "price", [[990], "9.90"]),
    ("change package", "name", ["", "n" * 101, 5, "Pro\u0000"]),
    ("change package", "active", ["false", 0]),
    ("change package", "stripe_price_id", ["", "p" * 256]),
]
# Fields that only mean something beside others: the field the refusal names, then the body's change.
COMBINATION_CASES: list[tuple[str, str, str, Callable[[dict[str, Any]], dict[str, Any]]]] = [
    ("debit", "neither tokens nor input and output", "tokens", lambda b: changed(b, "tokens", DROP)),
    ("debit", "input without output", "tokens", lambda b: {"user_id": USER, "input_tokens": 3}),
    (
        "debit",
        "tokens that disagree with input and output",
        "tokens",
        lambda b: b | {"input_tokens": 3, "output_tokens": 1},
    ),
    (
        "debit",
        "input and output adding up past 2^53 - 1",
        "tokens",
        lambda b: {"user_id": USER, "input_tokens": MAX_AMOUNT, "output_tokens": 1},
    ),
    ("settle", "neither tokens nor input and output", "tokens", lambda b: {}),
    ("settle", "output without input", "tokens", lambda b: {"output_tokens": 2}),
    (
        "change package",
        "a price without its amount",
        "price.amount_minor",
        lambda b: b | {"price": {"currency": "BRL"}},
    ),
    ("add package", "a price with a field of its own", "price.discount", lambda b: changed(b, "price.discount", 5)),
    # Unknown fields are refused, not ignored: a near miss of a real name is the usual way they arrive.
    *[
        (endpoint, f"the unknown field {unknown!r}", unknown, lambda b, unknown=unknown: b | {unknown: 1})
        for endpoint, unknown in [
            ("debit", "token"),
            ("reserve", "ttl"),
            ("settle", "tokens_used"),
            ("adjust", "amount"),
            ("billing-config", "welcome_credit"),
            ("add package", "price_minor"),
            ("change package", "enabled"),
        ]
    ],
]


def shown(value: Any) -> str:
    if value is DROP:
        return "left out"
    if isinstance(value, str) and len(value) > 20:
        return f"a {len(value):,}-character string"
    return json.dumps(value)


@pytest.mark.parametrize(
    ("endpoint", "dotted", "value"),
    [
        pytest.param(endpoint, dotted, value, id=f"{endpoint}: {dotted} {shown(value)}")
        for endpoint, dotted, values in FIELD_CASES
        for value in values
    ],
)
def test_a_bad_field_is_422_naming_it_and_writes_nothing(world: World, endpoint: str, dotted: str, value: Any) -> None:
    body = changed(valid(world, endpoint), dotted, value)
    response, written = send(world, ENDPOINTS[endpoint], encoded(body))
    assert_refused(response, 422, "validation", field=dotted)
    assert written == 0


@pytest.mark.parametrize(
    ("endpoint", "named", "change"),
    [
        pytest.param(endpoint, named, change, id=f"{endpoint}: {why}")
        for endpoint, why, named, change in COMBINATION_CASES
    ],
)
def test_a_bad_combination_of_fields_is_422_and_writes_nothing(
    world: World, endpoint: str, named: str, change: Callable[[dict[str, Any]], dict[str, Any]]
) -> None:
    body = change(valid(world, endpoint))
    response, written = send(world, ENDPOINTS[endpoint], encoded(body))
    assert_refused(response, 422, "validation", field=named)
    assert written == 0


def test_a_debit_at_a_time_without_a_zone_is_refused(world: World) -> None:
    body = {"user_id": USER, "tokens": 5, "occurred_at": "2026-01-01T00:00:00"}
    response, written = send(world, ENDPOINTS["debit"], encoded(body))
    assert_refused(response, 422, "validation", field="occurred_at")
    assert written == 0


def test_adding_a_package_under_an_existing_id_is_refused_and_writes_nothing(world: World) -> None:
    body = valid(world, "add package") | {"id": "starter"}
    response, written = send(world, ENDPOINTS["add package"], encoded(body))
    # The contract does not say which 4xx; the app says 422 on `id`, and a 409 would do as well.
    assert response.status_code in {409, 422}, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    assert written == 0


# Bodies that are not a JSON object at all.

NOT_JSON = {
    "a truncated document": lambda valid: encoded(valid)[:-1],
    "a trailing comma": lambda valid: encoded(valid)[:-1] + b",}",
    "single quotes": lambda valid: encoded(valid).replace(b'"', b"'"),
    # In place of the first field's value: an unknown key would be refused before its value was even read.
    "NaN for a value": lambda valid: re.sub(rb': ("[^"]*"|-?[0-9]+)', b": NaN", encoded(valid), count=1),
    "an empty body": lambda _: b"",
    "bytes that are not UTF-8": lambda _: b"\xff\xfe{}",
    # Inside the document's first string (a key), where the decoder meets them only as it reads that string.
    "a string that is not UTF-8": lambda valid: re.sub(rb'"([^"]*)"', b'"\\1\xff"', encoded(valid), count=1),
    "two documents": lambda valid: encoded(valid) * 2,
}
NOT_AN_OBJECT = {
    "an array holding the valid body": lambda valid: encoded([valid]),
    "null": lambda _: b"null",
    "a number": lambda _: b"5",
    "a string": lambda _: b'"{}"',
    "true": lambda _: b"true",
}


@pytest.mark.parametrize("shape", NOT_JSON)
@pytest.mark.parametrize("endpoint", DISTINCT)
def test_a_body_that_is_not_json_is_400_malformed_request(world: World, endpoint: str, shape: str) -> None:
    content = NOT_JSON[shape](valid(world, endpoint))
    response, written = send(world, ENDPOINTS[endpoint], content)
    assert_refused(response, 400, "malformed-request")
    assert written == 0


@pytest.mark.parametrize("shape", NOT_AN_OBJECT)
@pytest.mark.parametrize("endpoint", DISTINCT)
def test_json_that_is_not_an_object_is_422_about_the_body(world: World, endpoint: str, shape: str) -> None:
    content = NOT_AN_OBJECT[shape](valid(world, endpoint))
    response, written = send(world, ENDPOINTS[endpoint], content)
    assert_refused(response, 422, "validation", field="body")
    assert written == 0


@pytest.mark.parametrize("endpoint", DISTINCT)
def test_a_valid_body_padded_past_64_kib_is_413(world: World, endpoint: str) -> None:
    # Whitespace is valid JSON: the body would be accepted but for its size.
    accepted = encoded(valid(world, endpoint))
    content = accepted[:-1] + b" " * (MAX_BODY_BYTES + 1 - len(accepted)) + b"}"
    assert len(content) == MAX_BODY_BYTES + 1
    response, written = send(world, ENDPOINTS[endpoint], content)
    assert_refused(response, 413, "payload-too-large")
    assert written == 0


@pytest.mark.parametrize("endpoint", STRING_FIELDS)
def test_a_string_past_64_kib_is_413_before_its_length_is_looked_at(world: World, endpoint: str) -> None:
    body = valid(world, endpoint) | {STRING_FIELDS[endpoint]: "x" * (MAX_BODY_BYTES + 1)}
    response, written = send(world, ENDPOINTS[endpoint], encoded(body))
    assert_refused(response, 413, "payload-too-large")
    assert written == 0


# The Idempotency-Key header: 1 to 255 visible ASCII characters.

BAD_KEYS = {
    "empty": b"",
    "256 characters": b"k" * 256,
    "non-ASCII": "clé-ação".encode(),
    "a space": b"two words",
}


@pytest.mark.parametrize("flaw", BAD_KEYS)
@pytest.mark.parametrize("endpoint", DISTINCT)
def test_an_invalid_idempotency_key_is_422_and_writes_nothing(world: World, endpoint: str, flaw: str) -> None:
    body = encoded(valid(world, endpoint))
    headers = {"Content-Type": "application/json", "Idempotency-Key": BAD_KEYS[flaw]}
    url = ENDPOINTS[endpoint].path.format(reservation_id=world.reservation_id)
    before = world.gateway.events()
    caller = world.callers[ENDPOINTS[endpoint].role]
    response = caller.request(ENDPOINTS[endpoint].method, url, content=body, headers=headers)
    assert_refused(response, 422, "validation", field="Idempotency-Key")
    assert world.gateway.events() == before


@pytest.mark.parametrize("endpoint", [name for name in DISTINCT if ENDPOINTS[name].key_required])
def test_a_missing_idempotency_key_is_422_where_the_contract_requires_one(world: World, endpoint: str) -> None:
    response, written = send(world, ENDPOINTS[endpoint], encoded(valid(world, endpoint)), keyed=False)
    assert_refused(response, 422, "validation", field="Idempotency-Key")
    assert written == 0


# Paths that name nothing, or nothing that could exist.


@pytest.mark.parametrize(
    ("endpoint", "path", "status", "type_", "named"),
    [
        ("settle", "/api/usage/reservations/no-such-reservation/settle", 404, "not-found", None),
        ("settle", f"/api/usage/reservations/{'r' * 129}/settle", 422, "validation", "reservation_id"),
        ("change package", "/api/admin/credits/packages/no-such-package", 404, "not-found", None),
        ("change package", "/api/admin/credits/packages/not%20an%20id", 422, "validation", "package_id"),
        ("change package", f"/api/admin/credits/packages/{'p' * 65}", 422, "validation", "package_id"),
    ],
)
def test_a_path_naming_nothing_is_refused_and_writes_nothing(
    world: World, endpoint: str, path: str, status: int, type_: str, named: str | None
) -> None:
    response, written = send(world, ENDPOINTS[endpoint], encoded(valid(world, endpoint)), path=path)
    assert_refused(response, status, type_, field=named)
    assert written == 0


# The positive control.


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_the_valid_body_each_case_departs_from_is_accepted(world: World, endpoint: str) -> None:
    # Without this, a refusal above could be for something other than the one thing each case changes.
    path = ENDPOINTS[endpoint].path.format(reservation_id=world.reserve())
    response, written = send(world, ENDPOINTS[endpoint], encoded(valid(world, endpoint)), path=path)
    assert response.is_success, response.text
    assert written > 0
