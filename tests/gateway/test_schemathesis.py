"""The OpenAPI document against the live gateway: Schemathesis generates requests for every operation from the
document the app serves at GET /schema, and every check it has must find nothing.

The checks, all of them on every operation: no 5xx; every answer's status, content type, headers and body as
documented; requests the document allows accepted (positive_data_acceptance) and those it forbids refused
(negative_data_rejection); a missing required header refused; an undocumented method answered 405 with Allow,
and OPTIONS's Allow listing exactly the documented methods; a token required where the document says so
(ignored_auth); one user never served another's objects (object_level_authorization, between two users); a
created resource found, a deleted one gone (ensure_resource_availability, use_after_free, in the stateful run);
every answer within MAX_RESPONSE_SECONDS. All the phases run: the document's examples, coverage (boundary
values, missing parameters, unexpected methods), fuzzing in positive and negative mode, and a stateful run
along the links Schemathesis infers between operations.

Generation is bounded (MAX_EXAMPLES an operation and a mode, MAX_STEPS a stateful scenario, no shrinking, a fixed
seed) so the file runs in about a minute on two cores and fails the same way twice. What the document says in
words, where no schema can, is followed by the generated requests (as_documented). Each finding it made once is
pinned by an explicit test below or at the end of test_e2e.py, so it stays fixed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import schemathesis
from schemathesis import Case
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events
from schemathesis.engine.recorder import CheckNode, ScenarioRecorder
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.wfc.escalation import restore_identity_assignments

from gateway.cli import mint_token
from gateway.openapi import ecma
from gateway.routes.notifications import URL_PATTERN
from ledger.amounts import MAX_AMOUNT
from ledger.application import MAX_STATEMENT_PERIOD
from projections import queries
from projections.queries import MAX_USAGE_RANGE
from tests.gateway.server import SECRET, Gateway, private_database, running
from tests.stripe_fake import FakeStripe

# Who calls each operation: the identity its tag asks for. Public, Operations and Stripe take no token.
ROLE_BY_TAG = {"User": "user", "Internal services": "service", "Admin": "admin"}
ANONYMOUS = "<anonymous>"  # Schemathesis's name for sending no credentials.
# Two users, so that object_level_authorization can replay one's reads as the other.
IDENTITIES = {"user": "user", "peer": "user", "service": "service", "admin": "admin"}
# Every operation of the document. StreamBalance is left out: an event stream never ends, so there is never a
# whole answer to check; tests/gateway/test_live.py checks it.
NOT_FUZZED = {"StreamBalance"}
FUNDED_USER = "schemathesis-funded"
MAX_EXAMPLES = 50
# The answers to a request the document allows: Schemathesis's defaults, and 402, the document's own answer to a
# valid request from an account short of credits. Never 400 or 422.
ACCEPTED = ["2xx", "3xx", "401", "402", "403", "404", "409", "429"]
MAX_STEPS = 20
SEED = 20261130
MAX_RESPONSE_SECONDS = 5  # The contract's 2 s for a failing dependency, with room for a loaded two-core machine.


def config(wfc_path: Path, *, stateful: bool) -> SchemathesisConfig:
    # The stateful run has a test of its own: the other phases run once per operation.
    phases = {"examples": not stateful, "coverage": not stateful, "fuzzing": not stateful, "stateful": stateful}
    return SchemathesisConfig.from_dict(
        {
            "suppress-health-check": ["all"],
            "seed": SEED,
            "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True, "no-shrink": True},
            "phases": {name: {"enabled": enabled} for name, enabled in phases.items()}
            | {"stateful": {"enabled": stateful, "max-steps": MAX_STEPS}},
            "checks": {
                "positive_data_acceptance": {"expected-statuses": ACCEPTED},
                "max_response_time": MAX_RESPONSE_SECONDS,
                # The stateful phase feeds ids from answers into paths; one the server made from a path that
                # Schemathesis had percent-encoded (a user id "%C3%99…", visible ASCII and valid) comes back
                # encoded again, and Schemathesis then reports its own earlier value as accepted invalid data
                # (its open issue 2983). Negative data is checked per operation by the other phases.
                "negative_data_rejection": {"enabled": not stateful},
            },
            "output": {"sanitization": {"enabled": False}},
            # Nothing learnt by one run steers the next (and nothing is written into the working tree).
            "cache": {"enabled": False},
            "auth": {"wfc": {"path": str(wfc_path), "peers": ["user", "peer"]}},
            "operations": [
                {"include-operation-id": sorted(NOT_FUZZED), "enabled": False},
                # Stripe's events are valid only when signed with the webhook secret, over the exact body: no
                # schema can describe a valid signature, so an unsigned or wrongly signed request the document
                # allows is the documented 400 here. Every other check runs on it; test_stripe.py sends it
                # signed events.
                {
                    "include-operation-id": "StripeWebhook",
                    "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "400"]}},
                },
            ],
        }
    )


def token(role: str, sub: str) -> str:
    return mint_token(SECRET, role=role, sub=sub, ttl_seconds=3_600)


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
def wfc_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The identities, as a Web Fuzzing Commons document: Schemathesis sends each operation its role's token
    # (and none to the open ones), and knows which identities must not see each other's objects.
    wfc = {
        "auth": [
            {"name": name, "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {token(role, f'st-{name}')}"}]}
            for name, role in IDENTITIES.items()
        ]
    }
    path = tmp_path_factory.mktemp("schemathesis") / "auth.json"
    path.write_text(json.dumps(wfc))
    return path


def load(gateway: Gateway, wfc_path: Path, *, stateful: bool = False) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{gateway.base_url}/schema", config=config(wfc_path, stateful=stateful))
    restore_identity_assignments(
        schema, {operation.label: identity(operation) for operation in map(ok, schema.get_all_operations())}
    )
    schema.hook("map_case")(as_documented)
    return schema


@pytest.fixture(scope="module")
def api(gateway: Gateway, wfc_path: Path) -> schemathesis.BaseSchema:
    return load(gateway, wfc_path)


def ok(result: Any) -> Any:
    return result.ok()


def identity(operation: Any) -> str:
    return next((ROLE_BY_TAG[tag] for tag in operation.tags or () if tag in ROLE_BY_TAG), ANONYMOUS)


# What the document states in words, where no schema can: generated requests follow it, so that a check's finding
# is a finding about the server. Only values that are each valid are changed, and only to other valid values, so
# a negative request stays exactly as negative as it was generated.


def as_documented(_: Any, case: Case) -> Case:
    if isinstance(case.path_parameters, MutableMapping):
        _percent_signs_as_written(case.path_parameters)
    if isinstance(case.headers, MutableMapping):
        _position_already_reached(case.headers)
    if isinstance(case.query, MutableMapping) and case.operation.definition.raw.get("operationId") == "GetUsage":
        _usage_range_within_bounds(case.query)
    if isinstance(case.query, MutableMapping) and name(case.operation) in {"GetBalance", "GetUserBalanceAsOf"}:
        _instant_not_in_the_future(case.query)
    if isinstance(case.query, MutableMapping) and name(case.operation) in {"GetStatement", "GetUserStatement"}:
        _period_in_the_past(case.query)
    if isinstance(case.body, dict) and name(case.operation) == "CreateWebhookEndpoint":
        _url_on_a_public_host(case.body)
    if isinstance(case.body, dict) and name(case.operation) == "AdjustCredits":
        _expiry_in_the_future(case.body)
    if isinstance(case.body, dict):
        case.body = _integers_written_as_integers(case.body)
        _token_total_within_bounds(case.body)
        _hourly_limit_within_daily(case.body)
    return case


def _percent_signs_as_written(parameters: MutableMapping[str, Any]) -> None:
    # A value the stateful run takes from an answer (a user id a debit created, say) may hold "%": put into the
    # path as it is, the server decodes "%c0" as a byte, not as the three characters the id has (two runs read
    # an id ending "~%.." back as "~\ufffd" and got 422). Written as %25, the server reads the value itself.
    for key, value in list(parameters.items()):
        if isinstance(value, str) and "%" in value:
            parameters[key] = value.replace("%", "%25")


def _url_on_a_public_host(body: dict[str, Any]) -> None:
    # CreateWebhookEndpoint: a URL whose host is a private, loopback or link-local address is 422 (the contract);
    # generated hosts such as "0" resolve to one. A URL the pattern allows gets a public host instead.
    url = body.get("url")
    if isinstance(url, str) and re.fullmatch(URL_PATTERN.removeprefix("^").removesuffix("$"), url):
        body["url"] = "https://hooks.example.com/" + str(abs(hash(url)) % 10_000)


def _expiry_in_the_future(body: dict[str, Any]) -> None:
    # AdjustCredits: a granted lot's expires_at must be in the future (422 otherwise); a generated one that is not
    # is moved to a time surely ahead.
    try:
        moment = msgspec.convert(body["expires_at"], datetime)
    except (KeyError, TypeError, msgspec.ValidationError):
        return
    if moment.tzinfo is not None and moment <= datetime.now(UTC) + timedelta(minutes=1):
        body["expires_at"] = FUTURE


def _position_already_reached(headers: MutableMapping[str, Any]) -> None:
    # A read waits up to 2 s for a Ledger-Min-Position past the end of the log, by design; generated positions
    # are nearly all past it, which would spend the time budget waiting. Valid positions become 0 here, invalid
    # ones are sent as generated; test_a_read_waits_for_a_position_past_the_log_and_says_it_is_stale waits.
    position = headers.get("Ledger-Min-Position")
    if isinstance(position, str) and position.isascii() and position.isdigit():
        position = int(position)
    if type(position) is int and 0 <= position <= MAX_AMOUNT:
        headers["Ledger-Min-Position"] = "0"


def _usage_range_within_bounds(query: MutableMapping[str, Any]) -> None:
    # GetUsage: from is not after to, and they are at most 31 days (by hour) or 366 days (by day) apart.
    try:
        start, end = msgspec.convert(query["from"], datetime), msgspec.convert(query["to"], datetime)
        longest = MAX_USAGE_RANGE[query.get("granularity", "hour")]
    except (KeyError, TypeError, msgspec.ValidationError):
        return
    if start.tzinfo is not None and end.tzinfo is not None and not timedelta(0) <= end - start <= longest:
        query["to"] = query["from"]


ANY_UUID = "00000000-0000-4000-8000-000000000000"
# A time the document allows that is surely in the past.
PAST = "2026-01-01T00:00:00Z"
FUTURE = "2999-01-01T00:00:00Z"


def _instant_not_in_the_future(query: MutableMapping[str, Any]) -> None:
    # GetBalance, GetUserBalanceAsOf: the balance as of an instant that has not come yet is 422.
    try:
        moment = msgspec.convert(query["at"], datetime)
    except (KeyError, TypeError, msgspec.ValidationError):
        return
    if moment.tzinfo is not None and moment > datetime.now(UTC):
        query["at"] = PAST


def _period_in_the_past(query: MutableMapping[str, Any]) -> None:
    # GetStatement, GetUserStatement: from is not after to, to is not in the future, and they are at most 366
    # days apart.
    try:
        start, end = msgspec.convert(query["from"], datetime), msgspec.convert(query["to"], datetime)
    except (KeyError, TypeError, msgspec.ValidationError):
        return
    if start.tzinfo is None or end.tzinfo is None:
        return
    if not start <= end <= datetime.now(UTC) or end - start > MAX_STATEMENT_PERIOD:
        query["from"] = query["to"] = PAST


def _integers_written_as_integers(value: Any) -> Any:
    # JSON Schema counts 5.0 as an integer; the contract does not (integers are written as integers, as the
    # document's description says), so a positive request writes its integers as integers.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integers_written_as_integers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integers_written_as_integers(item) for item in value]
    return value


def _token_total_within_bounds(body: dict[str, Any]) -> None:
    # DebitUsage, SettleReservation: input_tokens + output_tokens is an amount, at most 2^53 - 1.
    split = body.get("input_tokens"), body.get("output_tokens")
    if all(type(value) is int and 0 <= value <= MAX_AMOUNT for value in split) and sum(split) > MAX_AMOUNT:
        body["output_tokens"] = MAX_AMOUNT - split[0]


def _hourly_limit_within_daily(body: dict[str, Any]) -> None:
    # ChangeBillingConfig: the hourly token limit does not exceed the daily one.
    hourly, daily = body.get("hourly_token_limit"), body.get("daily_token_limit")
    if type(hourly) is int and type(daily) is int and hourly > daily:
        body["hourly_token_limit"], body["daily_token_limit"] = daily, hourly


def findings(schema: schemathesis.BaseSchema) -> tuple[list[str], set[str]]:
    """Run Schemathesis as its command line does; what every check found, and the operations it tested."""
    found: list[str] = []
    tested: set[str] = set()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            tested.add(event.recorder.label)
            found.extend(
                describe(event.recorder, case_id, check)
                for case_id, checks in event.recorder.checks.items()
                for check in checks
                if check.status is Status.FAILURE
            )
        elif isinstance(event, events.NonFatalError):
            found.append(f"{event.label}: {event.info.title}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            raise event.exception
        elif isinstance(event, events.EngineFinished):
            found.extend(f"{failure.title}: {failure.message}" for failure in event.failures)
    return found, tested


def describe(recorder: ScenarioRecorder, case_id: str, check: CheckNode) -> str:
    info = check.failure_info
    assert info is not None
    steps = "\n".join(step.curl for step in info.steps) or info.code_sample
    interaction = recorder.interactions.get(case_id)
    answer = interaction.response if interaction is not None else None
    answered = f"\n-> {answer.status_code} {(answer.content or b'')[:300]!r}" if answer is not None else ""
    return f"{recorder.label} {check.name}: {info.failure.title}\n{info.failure.message}\n{steps}{answered}"


def test_every_check_passes_on_every_operation(api: schemathesis.BaseSchema) -> None:
    # The document's examples, the coverage phase and fuzzing, positive and negative, with every check.
    found, tested = findings(api)
    assert not found, "\n\n".join(found)
    every = {operation.label for operation in map(ok, api.get_all_operations()) if name(operation) not in NOT_FUZZED}
    assert tested == every  # An operation added to the app is checked as soon as the document lists it.


@pytest.fixture
def stateful(database_url: str, fake_stripe_server: FakeStripe) -> Iterator[Gateway]:
    """A gateway of its own for the stateful run: its links carry what the run itself created, not what the
    other fuzzing tests left (which of those ran first depends on how the suite is spread over workers)."""
    with stripe_gateway(database_url, fake_stripe_server, "stateful") as gateway:
        yield gateway


def test_the_stateful_run_finds_nothing(stateful: Gateway, wfc_path: Path) -> None:
    # Along the links Schemathesis infers between operations (a reservation's id into its settle and release, a
    # package's id into its change), with every check: created resources are there, deleted ones gone.
    found, tested = findings(load(stateful, wfc_path, stateful=True))
    assert tested
    assert not found, "\n\n".join(found)


# The happy paths. Generated user ids have no credits and generated reservation ids do not exist, so the 2xx
# answers of the writing operations are seldom reached at random; these requests reach them on purpose, and
# every check runs on their answers.


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
    "GetUsage": lambda _: {"query": {"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}},
    "GetStatement": lambda _: {"query": {"from": PAST, "to": _now()}},
    "GetUserStatement": lambda _: {"path_parameters": {"user_id": FUNDED_USER}, "query": {"from": PAST, "to": _now()}},
    "GetUserBalanceAsOf": lambda _: {"path_parameters": {"user_id": FUNDED_USER}, "query": {"at": _now()}},
    "ListAuditEntries": lambda _: {"query": {"action": "credits.adjusted", "limit": 1}},
}


def _now() -> str:
    return datetime.now(UTC).isoformat()


@pytest.mark.parametrize("operation_id", HAPPY_PATHS)
def test_a_successful_request_answers_as_documented(
    api: schemathesis.BaseSchema, untouched: Gateway, operation_id: str
) -> None:
    operation = api.find_operation_by_id(operation_id)
    case = operation.Case(**HAPPY_PATHS[operation_id](untouched))
    response = case.call_and_validate(base_url=untouched.base_url, headers=authorization(operation))
    assert response.status_code in {200, 201}, response.text


def name(operation: Any) -> str:
    return str(operation.definition.raw["operationId"])


def authorization(operation: Any) -> dict[str, str]:
    role = identity(operation)
    return {} if role == ANONYMOUS else {"Authorization": f"Bearer {token(role, f'schemathesis-{role}')}"}


# Findings: each reproduces one case exactly, so that it stays fixed.


def test_the_document_states_every_bound_the_server_checks(gateway: Gateway) -> None:
    document = httpx.get(f"{gateway.base_url}/schema").json()
    operations = [operation for item in document["paths"].values() for operation in item.values()]
    parameters = {(o["operationId"], p["name"]): p["schema"] for o in operations for p in o.get("parameters", [])}
    # Litestar left out a bound of 0: a negative read position was allowed, and refused.
    positions = [schema for (_, parameter), schema in parameters.items() if parameter == "Ledger-Min-Position"]
    assert len(positions) == 9
    assert all((schema["type"], schema["minimum"]) == ("integer", 0) for schema in positions)
    # A cursor was any string of 1 to 200 characters, and all but the server's own base64 JSON were refused.
    assert parameters["GetHistory", "cursor"]["pattern"] == ecma(queries.HISTORY_CURSOR_PATTERN)
    assert parameters["ListUserBalances", "cursor"]["pattern"] == ecma(queries.USERS_CURSOR_PATTERN)
    assert parameters["GetUsage", "from"]["pattern"] == ecma(queries.USAGE_TIME_PATTERN)
    # The server's patterns end where the string ends, Python's $ before a final newline too; the document's $
    # is the end of the string.
    assert not re.findall(r"\\Z", json.dumps(document))
    # No optional parameter is "a value or null": a header or a query string has no null.
    assert not [key for key, schema in parameters.items() if "oneOf" in schema or "anyOf" in schema]
    bodies = document["components"]["schemas"]
    # An adjustment of 0 was allowed, and refused.
    assert bodies["AdjustRequest"]["properties"]["amount_millicredits"]["not"] == {"const": 0}
    # Unknown fields were allowed, and refused; so were negative token counts.
    requests = re.findall(r"#/components/schemas/(\w+)", json.dumps([o.get("requestBody") for o in operations]))
    assert len(set(requests)) == 10
    for body in {*requests, "PriceBody"}:
        assert bodies[body]["additionalProperties"] is False, body
    assert bodies["SettleRequest"]["properties"]["input_tokens"]["anyOf"][0]["minimum"] == 0


def test_initializing_an_account_again_answers_a_documented_status(api: schemathesis.BaseSchema) -> None:
    operation = api.find_operation_by_id("InitializeAccount")
    case = operation.Case(path_parameters={"user_id": "schemathesis-twice"})
    case.call(headers=authorization(operation))
    again = case.call(headers=authorization(operation))
    assert again.status_code == 200
    # The same key for another account is a conflict, which the document did not list.
    other = operation.Case(path_parameters={"user_id": "schemathesis-other"}, headers={"Idempotency-Key": "once"})
    operation.Case(path_parameters={"user_id": "schemathesis-one"}, headers={"Idempotency-Key": "once"}).call(
        headers=authorization(operation)
    )
    conflict = other.call(headers=authorization(operation))
    assert conflict.status_code == 409
    for response in (again, conflict):
        case.validate_response(response, checks=[status_code_conformance, response_schema_conformance])


def test_a_malformed_body_answers_the_400_the_document_describes(
    api: schemathesis.BaseSchema, gateway: Gateway
) -> None:
    operation = api.find_operation_by_id("DebitUsage")
    with gateway.client("service", "schemathesis-service") as service:
        response = service.post(
            "/api/usage/debits", content=b'{"user_id": ', headers={"Content-Type": "application/json", **key()}
        )
    assert response.status_code == 400
    operation.Case(body={}).validate_response(response, checks=[content_type_conformance, response_schema_conformance])


@pytest.mark.parametrize("position", [str(2**63), "-1", "null"])
def test_a_read_position_out_of_range_is_refused_not_a_crash(api: schemathesis.BaseSchema, position: str) -> None:
    # Found by Schemathesis when the header is generated freely (GetBalance, Ledger-Min-Position: 1204413201...).
    for operation_id in ("GetBalance", "GetHistory", "GetUsage", "GetCreditStats", "ListUserBalances"):
        operation = api.find_operation_by_id(operation_id)
        response = operation.Case(headers={"Ledger-Min-Position": position}).call(headers=authorization(operation))
        assert response.status_code == 422, (operation_id, response.text)
        operation.Case().validate_response(response, checks=[status_code_conformance, response_schema_conformance])


def test_a_read_waits_for_a_position_past_the_log_and_says_it_is_stale(api: schemathesis.BaseSchema) -> None:
    # The fuzzed reads ask for position 0 (see _position_already_reached); this is the largest they could ask.
    operation = api.find_operation_by_id("GetBalance")
    case = operation.Case(headers={"Ledger-Min-Position": str(MAX_AMOUNT)})
    response = case.call_and_validate(headers=authorization(operation))
    assert (response.status_code, response.headers.get("ledger-stale")) == (200, ["true"])


def test_the_document_says_the_open_operations_need_no_token(api: schemathesis.BaseSchema) -> None:
    document = api.raw_schema
    for operation_id in ("Liveness", "Readiness", "Metrics", "ListPackages", "StripeWebhook"):
        operation = api.find_operation_by_id(operation_id)
        security = operation.definition.raw.get("security", document.get("security", []))
        assert security in ([], [{}]), f"{operation_id} is documented as needing {security}"


def test_usage_up_to_the_last_representable_time_is_refused_not_a_crash(api: schemathesis.BaseSchema) -> None:
    # Once the document allowed any date-time for `to`; the end of the calendar crashed the bucket arithmetic.
    operation = api.find_operation_by_id("GetUsage")
    response = operation.Case(query={"to": "9999-12-31T23:59:59Z"}).call(headers=authorization(operation))
    assert response.status_code == 422, response.text


def test_a_missing_token_is_the_documented_401(api: schemathesis.BaseSchema, gateway: Gateway) -> None:
    # ignored_auth sends each operation without its token too; this also holds the 401's body to the document.
    for operation in map(ok, api.get_all_operations()):
        if identity(operation) != ANONYMOUS:
            path = operation.path.format(
                reservation_id="r", user_id="u", package_id="p", endpoint_id=ANY_UUID, notification_id=ANY_UUID
            )
            response = httpx.request(operation.method.upper(), gateway.base_url + path)
            assert response.status_code == 401, name(operation)
            operation.Case().validate_response(response, checks=[status_code_conformance, response_schema_conformance])
