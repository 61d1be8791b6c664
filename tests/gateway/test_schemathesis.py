"""The OpenAPI document against the live gateway: Schemathesis generates requests for every operation from
the document the app serves at GET /schema and checks that no answer is a 5xx and that every answer is one the
document describes (its status code, its content type, its body's schema).

Each operation is called with the token its tag asks for. Generation is bounded (25 examples an operation and a
mode, no shrinking, a fixed seed) so the whole file runs in well under two minutes and fails the same way twice.
Each finding it made once (a crash on a huge read position or an end-of-calendar date, a document that
disagreed with the app) is pinned by an explicit test below, so it stays fixed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import APIOperation, Case, CheckContext, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.cli import mint_token
from tests.gateway.server import SECRET, Gateway, private_database, running
from tests.stripe_fake import FakeStripe

# The token each tag asks for; Public, Operations and Stripe take none.
ROLE_BY_TAG = {"User": "user", "Internal services": "service", "Admin": "admin"}
# Every operation of the document, by id, so that each can carry its own mark. StreamBalance is left out: an event
# stream never ends, so there is never a whole response to check.
OPERATIONS = [
    "Liveness",
    "Readiness",
    "Metrics",
    "ListPackages",
    "GetBalance",
    "GetHistory",
    "GetUsage",
    "PurchaseCredits",
    "DebitUsage",
    "ReserveCredits",
    "SettleReservation",
    "ReleaseReservation",
    "InitializeAccount",
    "GetCreditStats",
    "ListUserBalances",
    "AdjustCredits",
    "GetBillingConfig",
    "ChangeBillingConfig",
    "ListAllPackages",
    "AddPackage",
    "ChangePackage",
    "StripeWebhook",
]
NOT_FUZZED = {"StreamBalance"}
FUNDED_USER = "schemathesis-funded"

BOUNDED = settings(
    max_examples=25,
    deadline=None,  # A request takes what it takes; the database is real and the machine is shared.
    derandomize=True,  # The same examples on every run: a failure here is never a fluke of the seed.
    database=None,
    phases=[Phase.explicit, Phase.generate],  # No shrinking: the failure report shows the request as sent.
    suppress_health_check=list(HealthCheck),
)


@contextmanager
def stripe_gateway(database_url: str, stripe: FakeStripe, name: str) -> Iterator[Gateway]:
    # Stripe is the fake, so purchases reach a Checkout and the webhook checks signatures. The request-rate limits
    # are lifted: hundreds of requests a minute from one principal is the point here, not an abuse.
    with private_database(database_url, f"ledger_schemathesis_{name}_{os.getpid()}") as url:
        yield from running(
            url,
            STRIPE_SECRET_KEY="sk_test_ledger",
            STRIPE_WEBHOOK_SECRET=stripe.webhook_secret,
            STRIPE_API_BASE=stripe.api_base,
            LEDGER_RATE_LIMIT_USER_PER_MINUTE="1000000000",
            LEDGER_RATE_LIMIT_ADMIN_PER_MINUTE="1000000000",
        )


@pytest.fixture(scope="module")
def gateway(database_url: str, fake_stripe_server: FakeStripe) -> Iterator[Gateway]:
    """The gateway the generated requests go to: by the end its settings and balances are anything at all."""
    with stripe_gateway(database_url, fake_stripe_server, "fuzzed") as gateway:
        yield gateway


@pytest.fixture(scope="module")
def untouched(database_url: str, fake_stripe_server: FakeStripe) -> Iterator[Gateway]:
    """A gateway of its own for the happy paths, with the seeded settings and one funded user.

    Fuzzing the billing settings leaves quotas of a token and sales paused; nothing here may depend on the order
    in which the tests run.
    """
    with stripe_gateway(database_url, fake_stripe_server, "untouched") as gateway:
        with gateway.client("admin", "schemathesis-admin") as admin:
            funded = admin.post(
                "/api/admin/credits/adjust",
                json={"user_id": FUNDED_USER, "amount_millicredits": 10**7, "reason": "fund the happy paths"},
                headers={"Idempotency-Key": "schemathesis-fund"},
            )
        assert funded.status_code == 201, funded.text
        yield gateway


@pytest.fixture(scope="module")
def api(gateway: Gateway) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{gateway.base_url}/schema")


def operation_id(operation: APIOperation) -> str:
    return str(operation.definition.raw["operationId"])


def authorization(operation: APIOperation) -> dict[str, str]:
    role = next((ROLE_BY_TAG[tag] for tag in operation.tags or () if tag in ROLE_BY_TAG), None)
    if role is None:
        return {}
    return {"Authorization": "Bearer " + mint_token(SECRET, role=role, sub=f"schemathesis-{role}", ttl_seconds=3_600)}


# The checks every generated case must pass.


CHECKS: list[Callable[[CheckContext, Response, Case], Any]] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def fixed_headers(operation: APIOperation) -> dict[str, str] | None:
    # A read waits up to 2 s for a Ledger-Min-Position past the end of the log, by design. Generated positions are
    # nearly all past it, which would spend the whole time budget waiting; so reads ask for position 0 here, and
    # the header's own bounds are tested below (test_a_read_position_past_int64_is_refused_not_a_crash).
    if any(parameter.name == "Ledger-Min-Position" for parameter in operation.headers):
        return {"Ledger-Min-Position": "0"}
    return None


def test_the_list_covers_every_operation_of_the_document(api: schemathesis.BaseSchema) -> None:
    # An operation added to the app without a line here would go unchecked; this says so.
    served = {operation_id(result.ok()) for result in api.get_all_operations()}
    assert served == set(OPERATIONS) | NOT_FUZZED


# Operations with no parameter, body or token have nothing a negative request could spoil. The webhook takes a
# raw body and an optional string header; its refusals are the signature tests of test_stripe.py.
NOTHING_TO_SPOIL = {"Liveness", "Readiness", "Metrics", "ListPackages", "StripeWebhook"}


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        (name, mode)
        for name in OPERATIONS
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if not (mode is GenerationMode.NEGATIVE and name in NOTHING_TO_SPOIL)
    ],
)
def test_every_answer_is_one_the_document_describes(
    api: schemathesis.BaseSchema, name: str, mode: GenerationMode
) -> None:
    # Positive: requests the document allows; negative: requests it forbids. Either way the answer is never a 5xx
    # and always one the document describes. Schemathesis's negative_data_rejection check is left out: it counts
    # the bearer token among the parameters to spoil, and the valid token sent with every request undoes that;
    # test_bad_input.py states what each refusal must be, field by field.
    operation = api.find_operation_by_id(name)
    token = authorization(operation)

    @BOUNDED
    @given(case=operation.as_strategy(mode, headers=fixed_headers(operation)))
    def answers_as_documented(case: Case) -> None:
        case.call_and_validate(headers=token, checks=CHECKS)

    answers_as_documented()


# The happy paths. Generated user ids have no credits and generated reservation ids do not exist, so the 2xx
# answers of the writing operations are rarely reached at random; these requests reach them on purpose.


def reservation(gateway: Gateway) -> str:
    with gateway.client("service", "schemathesis-service") as service:
        response = service.post(
            "/api/usage/reservations",
            json={"user_id": FUNDED_USER, "estimated_tokens": 100},
            headers={"Idempotency-Key": f"schemathesis-hold-{os.urandom(8).hex()}"},
        )
    assert response.status_code == 201, response.text
    return str(response.json()["reservation_id"])


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"schemathesis-{os.urandom(8).hex()}"}


HAPPY_PATHS: dict[str, Callable[[Gateway], dict[str, Any]]] = {
    "DebitUsage": lambda _: {"body": {"user_id": FUNDED_USER, "tokens": 1_000, "model": "m"}, "headers": key()},
    "ReserveCredits": lambda _: {"body": {"user_id": FUNDED_USER, "estimated_tokens": 1_000}, "headers": key()},
    "SettleReservation": lambda g: {
        "path_parameters": {"reservation_id": reservation(g)},
        "body": {"input_tokens": 60, "output_tokens": 40},
        "headers": key(),
    },
    "ReleaseReservation": lambda g: {"path_parameters": {"reservation_id": reservation(g)}, "headers": key()},
    "InitializeAccount": lambda _: {"path_parameters": {"user_id": f"schemathesis-new-{os.urandom(4).hex()}"}},
    "AdjustCredits": lambda _: {
        "body": {"user_id": FUNDED_USER, "amount_millicredits": -1, "reason": "a removal"},
        "headers": key(),
    },
    "ChangeBillingConfig": lambda _: {"body": {"alert_threshold_percent": 75}},
    "AddPackage": lambda _: {
        "body": {"id": f"pkg-{os.urandom(4).hex()}", "name": "Happy", "credits": 5, "price": {"amount_minor": 500}},
        "headers": key(),
    },
    "ChangePackage": lambda _: {"path_parameters": {"package_id": "professional"}, "body": {"active": True}},
    "PurchaseCredits": lambda _: {"body": {"package_id": "starter"}, "headers": key()},
}


@pytest.mark.parametrize("name", HAPPY_PATHS)
def test_a_successful_write_answers_as_documented(api: schemathesis.BaseSchema, untouched: Gateway, name: str) -> None:
    operation = api.find_operation_by_id(name)
    case = operation.Case(**HAPPY_PATHS[name](untouched))
    response = case.call_and_validate(base_url=untouched.base_url, headers=authorization(operation), checks=CHECKS)
    assert response.status_code in {200, 201}, response.text


# Findings: each reproduces one case exactly. Strict, so each mark must go once its bug is fixed (and, for the
# first two, the matching exception in the checks above with it).


def test_initializing_an_account_again_answers_a_documented_status(api: schemathesis.BaseSchema) -> None:
    operation = api.find_operation_by_id("InitializeAccount")
    case = operation.Case(path_parameters={"user_id": "schemathesis-twice"})
    case.call(headers=authorization(operation))
    again = case.call(headers=authorization(operation))
    assert again.status_code == 200
    case.validate_response(again, checks=[status_code_conformance])


def test_a_malformed_body_answers_the_400_the_document_describes(
    api: schemathesis.BaseSchema, gateway: Gateway
) -> None:
    operation = api.find_operation_by_id("DebitUsage")
    with gateway.client("service", "schemathesis-service") as service:
        response = service.post(
            "/api/usage/debits",
            content=b'{"user_id": ',
            headers={"Content-Type": "application/json", **key()},
        )
    assert response.status_code == 400
    operation.Case(body={}).validate_response(response, checks=[content_type_conformance, response_schema_conformance])


READS_WITH_A_POSITION = [
    "GetBalance",
    "GetHistory",
    "GetUsage",
    "GetCreditStats",
    "ListUserBalances",
    "GetBillingConfig",
    "ListAllPackages",
]


@pytest.mark.parametrize(
    "name",
    READS_WITH_A_POSITION,
)
def test_a_read_position_past_int64_is_refused_not_a_crash(api: schemathesis.BaseSchema, name: str) -> None:
    # Found by Schemathesis when the header is generated freely (GetBalance, Ledger-Min-Position: 1204413201...).
    operation = api.find_operation_by_id(name)
    case = operation.Case(headers={"Ledger-Min-Position": str(2**63)})
    case.call_and_validate(headers=authorization(operation), checks=CHECKS)


def test_usage_up_to_the_last_representable_time_is_refused_not_a_crash(api: schemathesis.BaseSchema) -> None:
    # The document allows any date-time for `to`; random generation seldom reaches the end of the calendar.
    operation = api.find_operation_by_id("GetUsage")
    case = operation.Case(query={"to": "9999-12-31T23:59:59Z"}, headers={"Ledger-Min-Position": "0"})
    case.call_and_validate(headers=authorization(operation), checks=CHECKS)


def test_the_document_says_the_open_operations_need_no_token(api: schemathesis.BaseSchema) -> None:
    document = api.raw_schema
    for name in ("Liveness", "Readiness", "Metrics", "ListPackages", "StripeWebhook"):
        operation = api.find_operation_by_id(name)
        security = operation.definition.raw.get("security", document.get("security", []))
        assert security in ([], [{}]), f"{name} is documented as needing {security}"


def test_a_missing_token_is_the_documented_401(api: schemathesis.BaseSchema, gateway: Gateway) -> None:
    # The generated tests always send a valid token; this is the one answer they never see.
    for name in OPERATIONS:
        operation = api.find_operation_by_id(name)
        if authorization(operation):
            path = operation.path.format(reservation_id="r", user_id="u", package_id="p")
            response = httpx.request(operation.method.upper(), gateway.base_url + path)
            assert response.status_code == 401, name
            operation.Case().validate_response(response, checks=[status_code_conformance, response_schema_conformance])
