"""Who may call what, over HTTP against a real gateway.

Every route of the contract outside Stripe needs a valid bearer token: a missing, expired, malformed or
wrongly signed token, or one without a known role, is a 401 `unauthorized`; a valid token of the wrong role
is a 403 `forbidden`. A refusal writes nothing. Each request sent here is one the route accepts from the
right caller (the positive control below proves it), so a refusal is the token's doing and nothing else's.
A user only ever sees their own account.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

import httpx
import jwt
import psycopg
import pytest

from tests.gateway.server import SECRET, Api, Gateway, private_database, running
from tests.stripe_fake import FakeStripe

ROLES = ("user", "service", "admin")
OTHER_SECRET = "not-the-gateway-secret-" + "z" * 48
FUNDED_USER = "matrix-funded-user"
# Routes that need no token, by the contract: probes, metrics, the API document and the public catalogue.
OPEN_ROUTES = {"GET /health/live", "GET /health/ready", "GET /metrics", "GET /api/credits/packages"}


@pytest.fixture(scope="module")
def gateway(database_url: str, fake_stripe_server: FakeStripe) -> Iterator[Gateway]:
    # One gateway for the module keeps it fast; no test relies on a total, only on what it wrote itself. Stripe is
    # the fake, so that a purchase by the right caller reaches a Checkout.
    with private_database(database_url, f"ledger_auth_matrix_{os.getpid()}") as url:
        yield from running(
            url,
            STRIPE_SECRET_KEY="sk_test_ledger",
            STRIPE_WEBHOOK_SECRET=fake_stripe_server.webhook_secret,
            STRIPE_API_BASE=fake_stripe_server.api_base,
        )


@dataclass
class World:
    """What the requests refer to: a funded user, an open reservation, and a fresh number for each body."""

    gateway: Gateway
    anonymous: Api  # One client without a token for the whole module; each request brings its own header.
    counter: Iterator[int] = field(default_factory=itertools.count)
    open_reservation: str | None = None

    def unique(self) -> int:
        return next(self.counter)

    def reservation(self) -> str:
        # One open reservation serves every refusal; a request that really settles or releases it calls `spent`.
        if self.open_reservation is None:
            with self.gateway.client("service", "matrix-service") as service:
                response = service.post(
                    "/api/usage/reservations",
                    json={"user_id": FUNDED_USER, "estimated_tokens": 10},
                    headers={"Idempotency-Key": f"matrix-reservation-{self.unique()}"},
                )
            assert response.status_code == 201, response.text
            self.open_reservation = response.json()["reservation_id"]
        return self.open_reservation

    def spent(self) -> None:
        self.open_reservation = None


@pytest.fixture(scope="module")
def world(gateway: Gateway) -> Iterator[World]:
    with gateway.client("admin", "matrix-admin") as admin:
        funded = admin.post(
            "/api/admin/credits/adjust",
            # Enough for every hold and debit here, and little enough that the oversell guard leaves sales open.
            json={"user_id": FUNDED_USER, "amount_millicredits": 10**7, "reason": "fund the auth matrix"},
            headers={"Idempotency-Key": "matrix-fund"},
        )
    assert funded.status_code == 201, funded.text
    with gateway.client() as anonymous:
        yield World(gateway, anonymous)


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    """One route of the contract: the roles that may call it, and a request it accepts from them."""

    method: str
    path: str
    allowed: tuple[str, ...]
    build: Callable[[World], Request]
    consumes_reservation: bool = False
    streams: bool = False

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


def key(world: World) -> dict[str, str]:
    return {"Idempotency-Key": f"matrix-{world.unique()}"}


def read(path: str) -> Callable[[World], Request]:
    return lambda _: Request("GET", path)


def a_new_endpoints_deletion(world: World) -> Request:
    with world.gateway.client("admin", "matrix-admin") as admin:
        created = admin.post(
            "/api/admin/webhook-endpoints",
            json={"url": f"https://hooks.example.com/{world.unique()}", "event_types": ["*"]},
            headers=key(world),
        )
    assert created.status_code == 201, created.text
    return Request("DELETE", f"/api/admin/webhook-endpoints/{created.json()['id']}")


def a_notifications_redelivery(world: World) -> Request:
    notification_id = uuid4()
    with psycopg.connect(world.gateway.database_url) as conn:
        conn.execute(
            "INSERT INTO notifications (id, type, cause, log_position, occurred_at, data)"
            " VALUES (%s, 'alert.sales_paused', %s, 0, now(), '{}')",
            (notification_id, f"matrix:{notification_id}"),
        )
    return Request("POST", f"/api/admin/notifications/{notification_id}/redeliver")


def a_contacts_erasure(world: World) -> Request:
    user = f"matrix-erased-{world.unique()}"
    with world.gateway.client("service", "matrix-service") as service:
        kept = service.put(f"/api/users/{user}/contact", json={"email": "erase@example.com"})
    assert kept.status_code == 200, kept.text
    return Request("DELETE", f"/api/users/{user}/contact")


# The whole contract outside Stripe and the open routes. A body that changes state carries a fresh value each
# time (a new amount, name, id or key), so a request that slipped through would always write an event.
ROUTES = [
    # User.
    Route("GET", "/api/credits/balance", ("user",), read("/api/credits/balance")),
    Route("GET", "/api/credits/balance/stream", ("user",), read("/api/credits/balance/stream"), streams=True),
    Route("GET", "/api/credits/history", ("user",), read("/api/credits/history")),
    Route("GET", "/api/credits/usage", ("user",), read("/api/credits/usage?granularity=day")),
    Route(
        "GET",
        "/api/credits/statement",
        ("user",),
        read("/api/credits/statement?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z"),
    ),
    Route(
        "POST",
        "/api/credits/purchase",
        ("user",),
        lambda w: Request("POST", "/api/credits/purchase", {"package_id": "starter"}, key(w)),
    ),
    # Internal services.
    Route(
        "POST",
        "/api/usage/debits",
        ("service",),
        lambda w: Request("POST", "/api/usage/debits", {"user_id": FUNDED_USER, "tokens": 7}, key(w)),
    ),
    Route(
        "POST",
        "/api/usage/reservations",
        ("service",),
        lambda w: Request("POST", "/api/usage/reservations", {"user_id": FUNDED_USER, "estimated_tokens": 10}, key(w)),
    ),
    Route(
        "POST",
        "/api/usage/reservations/{reservation_id}/settle",
        ("service",),
        lambda w: Request("POST", f"/api/usage/reservations/{w.reservation()}/settle", {"tokens": 3}, key(w)),
        consumes_reservation=True,
    ),
    Route(
        "POST",
        "/api/usage/reservations/{reservation_id}/release",
        ("service",),
        lambda w: Request("POST", f"/api/usage/reservations/{w.reservation()}/release", None, key(w)),
        consumes_reservation=True,
    ),
    Route(
        "POST",
        "/api/users/{user_id}/initialize",
        ("service", "admin"),
        lambda w: Request("POST", f"/api/users/matrix-new-user-{w.unique()}/initialize"),
    ),
    # Admin.
    Route("GET", "/api/admin/credits/stats", ("admin",), read("/api/admin/credits/stats")),
    Route("GET", "/api/admin/credits/users", ("admin",), read("/api/admin/credits/users")),
    Route(
        "GET",
        "/api/admin/credits/users/{user_id}/balance",
        ("admin",),
        read(f"/api/admin/credits/users/{FUNDED_USER}/balance"),
    ),
    Route(
        "GET",
        "/api/admin/credits/users/{user_id}/statement",
        ("admin",),
        read(f"/api/admin/credits/users/{FUNDED_USER}/statement?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z"),
    ),
    Route("GET", "/api/admin/audit", ("admin",), read("/api/admin/audit")),
    Route(
        "POST",
        "/api/admin/credits/adjust",
        ("admin",),
        lambda w: Request(
            "POST",
            "/api/admin/credits/adjust",
            {"user_id": FUNDED_USER, "amount_millicredits": 1_000 + w.unique(), "reason": "auth matrix"},
            key(w),
        ),
    ),
    Route("GET", "/api/admin/billing-config", ("admin",), read("/api/admin/billing-config")),
    Route(
        "PUT",
        "/api/admin/billing-config",
        ("admin",),
        lambda w: Request("PUT", "/api/admin/billing-config", {"welcome_credits": 1 + w.unique()}),
    ),
    Route("GET", "/api/admin/credits/packages", ("admin",), read("/api/admin/credits/packages")),
    Route(
        "POST",
        "/api/admin/credits/packages",
        ("admin",),
        lambda w: Request(
            "POST",
            "/api/admin/credits/packages",
            {"id": f"matrix-{w.unique()}", "name": "Matrix", "credits": 10, "price": {"amount_minor": 990}},
            key(w),
        ),
    ),
    Route(
        "PATCH",
        "/api/admin/credits/packages/{package_id}",
        ("admin",),
        lambda w: Request("PATCH", "/api/admin/credits/packages/starter", {"name": f"Starter {w.unique()}"}),
    ),
    # Being told.
    Route("GET", "/api/admin/webhook-endpoints", ("admin",), read("/api/admin/webhook-endpoints")),
    Route(
        "POST",
        "/api/admin/webhook-endpoints",
        ("admin",),
        lambda w: Request(
            "POST",
            "/api/admin/webhook-endpoints",
            {"url": f"https://hooks.example.com/{w.unique()}", "event_types": ["*"]},
            key(w),
        ),
    ),
    Route("DELETE", "/api/admin/webhook-endpoints/{endpoint_id}", ("admin",), a_new_endpoints_deletion),
    Route("GET", "/api/admin/notifications", ("admin",), read("/api/admin/notifications?status=failed")),
    Route(
        "POST",
        "/api/admin/notifications/{notification_id}/redeliver",
        ("admin",),
        a_notifications_redelivery,
    ),
    Route(
        "PUT",
        "/api/users/{user_id}/contact",
        ("service", "admin"),
        lambda w: Request("PUT", "/api/users/matrix-contact/contact", {"email": f"m{w.unique()}@example.com"}),
    ),
    Route("DELETE", "/api/users/{user_id}/contact", ("service", "admin"), a_contacts_erasure),
]


def send(world: World, request: Request, authorization: str | None, *, streams: bool = False) -> httpx.Response:
    """Send a prepared request; an event stream is closed after its headers instead of being waited on."""
    headers = dict(request.headers)
    if authorization is not None:
        headers["Authorization"] = authorization
    with world.anonymous.stream(request.method, request.url, json=request.body, headers=headers) as response:
        if not (streams and response.is_success):
            response.read()
        return response


def assert_problem(response: httpx.Response, status: int, type_: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    problem = response.json()
    assert (problem["type"], problem["status"]) == (type_, status)
    assert problem["title"]
    assert problem["detail"]


# Tokens that must open no door. Each maker gets a role the route allows, so the token fails for its own flaw and
# never for the role it carries.


def seconds_from_now(seconds: int) -> int:
    return int(time.time()) + seconds


def claims(role: Any, **overrides: Any) -> dict[str, Any]:
    return {"sub": FUNDED_USER, "role": role, "iat": seconds_from_now(0), "exp": seconds_from_now(600)} | overrides


def expired(payload: dict[str, Any]) -> dict[str, Any]:
    # Issued eleven minutes ago for ten: a minute past its expiry, well outside any clock-skew leeway.
    return payload | {"iat": seconds_from_now(-660), "exp": seconds_from_now(-60)}


def without(name: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {claim: value for claim, value in payload.items() if claim != name}


def signed(payload: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():
        # HS512 wants a longer key than the gateway's; that is the point of the test, not a problem in it.
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        return jwt.encode(payload, secret, algorithm=algorithm)


def segment(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def edited_after_signing(role: str) -> str:
    # A genuine token for another role, its payload rewritten to claim this one, its signature left as it was.
    header, _, signature = signed(claims("service" if role == "user" else "user")).split(".")
    return f"{header}.{segment(claims(role))}.{signature}"


BAD_AUTHORIZATIONS: dict[str, Callable[[str], str | None]] = {
    "no Authorization header": lambda _: None,
    "an expired token": lambda role: "Bearer " + signed(expired(claims(role))),
    "a token signed with another secret": lambda role: "Bearer " + signed(claims(role), OTHER_SECRET),
    "an alg none token": lambda role: "Bearer " + jwt.encode(claims(role), None, algorithm="none"),
    "an unsigned token that claims HS256": lambda role: f"Bearer {segment({'alg': 'HS256'})}.{segment(claims(role))}.",
    "a token signed with HS512 and the right secret": lambda role: "Bearer " + signed(claims(role), algorithm="HS512"),
    "a payload edited after signing": lambda role: "Bearer " + edited_after_signing(role),
    "a token without a role": lambda role: "Bearer " + signed(without("role", claims(role))),
    "a token with an unknown role": lambda _: "Bearer " + signed(claims("superuser")),
    "a token with the role in capitals": lambda role: "Bearer " + signed(claims(role.upper())),
    "a token with the role in a list": lambda role: "Bearer " + signed(claims([role])),
    "a token without a sub": lambda role: "Bearer " + signed(without("sub", claims(role))),
    "a token with an empty sub": lambda role: "Bearer " + signed(claims(role, sub="")),
    "a token with a 129-character sub": lambda role: "Bearer " + signed(claims(role, sub="s" * 129)),
    "a token whose sub is a number": lambda role: "Bearer " + signed(claims(role, sub=42)),
    "a token whose sub holds NUL": lambda role: "Bearer " + signed(claims(role, sub="ops\u0000")),
    "a token without exp": lambda role: "Bearer " + signed(without("exp", claims(role))),
    "a token not valid for another hour": lambda role: "Bearer " + signed(claims(role, nbf=seconds_from_now(3_600))),
    "a malformed token": lambda _: "Bearer not-a-jwt",
    "three empty segments": lambda _: "Bearer ..",
    "garbage in every segment": lambda _: "Bearer a.b.c",
    "the Bearer scheme without a token": lambda _: "Bearer",
    "a valid token without the Bearer scheme": lambda role: signed(claims(role)),
    "a valid token under the Basic scheme": lambda role: "Basic " + signed(claims(role)),
}


def test_the_matrix_covers_every_route_the_app_serves(gateway: Gateway) -> None:
    # A route added to the app without a line here would go unchecked; this says so.
    with gateway.client() as client:
        document = client.get("/schema").json()
    served = {f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item}
    stripe = {route for route in served if route.split(" ")[1].startswith("/api/webhooks/")}
    assert served - OPEN_ROUTES - stripe == {route.label for route in ROUTES}


# Flaws that were bugs once (a role in a list crashed the check; any scheme passed for Bearer) are
# ordinary rows of the matrix now.


def refused(world: World, route: Route, authorization: str | None) -> tuple[httpx.Response, int]:
    """Send the route's request with this Authorization; the response, and how many events it wrote."""
    request = route.build(world)  # Before counting: building a request may open the reservation it names.
    before = world.gateway.events()
    response = send(world, request, authorization, streams=route.streams)
    if response.is_success and route.consumes_reservation:
        world.spent()  # It slipped through and used the reservation up: later tests need another.
    return response, world.gateway.events() - before


@pytest.mark.parametrize(
    ("route", "flaw"),
    [pytest.param(route, flaw, id=f"{route.label} with {flaw}") for route in ROUTES for flaw in BAD_AUTHORIZATIONS],
)
def test_a_missing_or_bad_token_is_401_and_writes_nothing(world: World, route: Route, flaw: str) -> None:
    response, written = refused(world, route, BAD_AUTHORIZATIONS[flaw](route.allowed[0]))
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert written == 0


@pytest.mark.parametrize(
    ("route", "role"),
    [
        pytest.param(route, role, id=f"{route.label} as {role}")
        for route in ROUTES
        for role in ROLES
        if role not in route.allowed
    ],
)
def test_a_valid_token_of_the_wrong_role_is_403_and_writes_nothing(world: World, route: Route, role: str) -> None:
    response, written = refused(world, route, "Bearer " + signed(claims(role)))
    assert_problem(response, 403, "forbidden")
    assert written == 0


@pytest.mark.parametrize(
    ("route", "role"),
    [pytest.param(route, role, id=f"{route.label} as {role}") for route in ROUTES for role in route.allowed],
)
def test_the_same_request_with_the_right_role_is_accepted(world: World, route: Route, role: str) -> None:
    # The positive control: without it, a 401 or 403 above could come from a request refused for another reason.
    response = send(world, route.build(world), "Bearer " + signed(claims(role)), streams=route.streams)
    assert response.is_success, response.text
    if route.streams:
        assert response.headers["content-type"].startswith("text/event-stream")
    if route.consumes_reservation:
        world.spent()


def test_a_token_with_exactly_the_claims_the_contract_requires_is_accepted(gateway: Gateway) -> None:
    token = signed(without("iat", claims("admin")))
    with gateway.client() as client:
        response = client.get("/api/admin/credits/stats", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("route", sorted(OPEN_ROUTES))
def test_the_open_routes_need_no_token(gateway: Gateway, route: str) -> None:
    method, path = route.split(" ")
    with gateway.client() as client:
        assert client.request(method, path).status_code == 200


# A user only ever sees their own account.


@dataclass(frozen=True)
class TwoUsers:
    alice: str
    bob: str
    position: dict[str, str]  # A Ledger-Min-Position that includes every write below.
    bob_adjustment: str


@pytest.fixture(scope="module")
def two_users(gateway: Gateway) -> TwoUsers:
    """Alice has a little; Bob has a lot and has used some of it."""
    alice, bob = "isolation-alice", "isolation-bob"
    with gateway.client("admin", "isolation-admin") as admin, gateway.client("service", "isolation-svc") as service:
        given = admin.post(
            "/api/admin/credits/adjust",
            json={"user_id": alice, "amount_millicredits": 1_234, "reason": "a little"},
            headers={"Idempotency-Key": "isolation-alice"},
        )
        assert given.status_code == 201, given.text
        bobs = admin.post(
            "/api/admin/credits/adjust",
            json={"user_id": bob, "amount_millicredits": 5_000_000, "reason": "a lot"},
            headers={"Idempotency-Key": "isolation-bob"},
        )
        assert bobs.status_code == 201, bobs.text
        used = service.post(
            "/api/usage/debits",
            json={"user_id": bob, "tokens": 4_321},
            headers={"Idempotency-Key": "isolation-bob-usage"},
        )
        assert used.status_code == 201, used.text
    return TwoUsers(alice, bob, service.last_position(used), bobs.json()["adjustment_id"])


def test_a_user_reads_their_own_balance_and_no_one_elses(gateway: Gateway, two_users: TwoUsers) -> None:
    with gateway.client("user", two_users.alice) as alice:
        own = alice.get("/api/credits/balance", headers=two_users.position)
        # Naming another account in the query changes nothing: the account is the token's sub.
        asked_for_bob = alice.get(f"/api/credits/balance?user_id={two_users.bob}", headers=two_users.position)
    for response in (own, asked_for_bob):
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["user_id"], body["balance_millicredits"]) == (two_users.alice, 1_234)


def test_a_users_history_holds_only_their_own_movements(gateway: Gateway, two_users: TwoUsers) -> None:
    with gateway.client("user", two_users.alice) as alice:
        response = alice.get("/api/credits/history", headers=two_users.position)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [item["amount_millicredits"] for item in items] == [1_234]
    assert two_users.bob_adjustment not in {item["id"] for item in items}


def test_a_users_usage_counts_only_their_own_tokens(gateway: Gateway, two_users: TwoUsers) -> None:
    with gateway.client("user", two_users.alice) as alice, gateway.client("user", two_users.bob) as bob:
        alices = alice.get("/api/credits/usage?granularity=day", headers=two_users.position)
        bobs = bob.get("/api/credits/usage?granularity=day", headers=two_users.position)
    assert (alices.status_code, bobs.status_code) == (200, 200)
    assert (alices.json()["total_tokens"], bobs.json()["total_tokens"]) == (0, 4_321)


def test_a_users_balance_stream_speaks_of_their_own_account(gateway: Gateway, two_users: TwoUsers) -> None:
    with gateway.client("user", two_users.alice) as alice, alice.stream("GET", "/api/credits/balance/stream") as stream:
        assert stream.status_code == 200
        first = next(line for line in stream.iter_lines() if line.startswith("data:"))
    body = json.loads(first.removeprefix("data:"))
    assert (body["user_id"], body["balance_millicredits"]) == (two_users.alice, 1_234)


def test_a_user_cannot_move_credits_not_even_their_own(gateway: Gateway, two_users: TwoUsers) -> None:
    # Bob's own token, aimed at Bob's own account, on every route that moves credits: all refused, none written.
    attempts = [
        ("/api/usage/debits", {"user_id": two_users.bob, "tokens": 1}),
        ("/api/usage/reservations", {"user_id": two_users.bob, "estimated_tokens": 1}),
        ("/api/admin/credits/adjust", {"user_id": two_users.bob, "amount_millicredits": 10**9, "reason": "mine"}),
        (f"/api/users/{two_users.bob}/initialize", None),
    ]
    before = gateway.events()
    with gateway.client("user", two_users.bob) as bob:
        for number, (path, body) in enumerate(attempts):
            response = bob.post(path, json=body, headers={"Idempotency-Key": f"bob-tries-{number}"})
            assert_problem(response, 403, "forbidden")
        balance = bob.get("/api/credits/balance", headers=two_users.position).json()
    assert gateway.events() == before
    assert balance["balance_millicredits"] == 5_000_000 - 4_321
