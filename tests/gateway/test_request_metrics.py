"""Request metrics: the series Litestar's Prometheus middleware defines, counted by the ledger's leaner
subclass of it (``gateway.metrics.RequestMetricsMiddleware``). The names, labels and values must stay the
library's, because dashboards and the alert rules (``deploy/prometheus/alerts.yml``) read them; this fails
if a library upgrade changes what the subclass relies on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.server import Api, Gateway, running

DEBITS = {"app_name": "ledger", "method": "POST", "path": "/api/usage/debits"}


@pytest.fixture
def gateway(clean_database: str) -> Iterator[Gateway]:
    yield from running(clean_database)


def samples(gateway: Gateway) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = gateway.client().get("/metrics").text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(seen: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return seen.get((name, frozenset({**DEBITS, **labels}.items())), 0.0)


def test_each_request_is_counted_timed_and_out_of_progress_under_the_librarys_series(gateway: Gateway) -> None:
    # Given a funded account
    admin: Api = gateway.client("admin", "ops-1")
    service: Api = gateway.client("service", "analysis-worker")
    funded = admin.post(
        "/api/admin/credits/adjust",
        json={"user_id": "u1", "amount_millicredits": 5_000, "reason": "test funding"},
        headers={"Idempotency-Key": "fund-u1"},
    )
    assert funded.status_code == 201, funded.text
    before = samples(gateway)

    # When two debits are taken and one is refused as invalid
    for n in range(2):
        taken = service.post(
            "/api/usage/debits", json={"user_id": "u1", "tokens": 1}, headers={"Idempotency-Key": f"d{n}"}
        )
        assert taken.status_code == 201, taken.text
    refused = service.post("/api/usage/debits", json={"user_id": "u1", "tokens": 1.5}, headers={"Idempotency-Key": "x"})
    assert refused.status_code == 422
    after = samples(gateway)

    # Then each is counted and timed by route template and status, and none is left in progress
    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("ledger_requests_total", status_code="201") == 2
    assert grew("ledger_requests_total", status_code="422") == 1
    assert grew("ledger_request_duration_seconds_count", status_code="201") == 2
    assert grew("ledger_request_duration_seconds_count", status_code="422") == 1
    assert grew("ledger_request_duration_seconds_sum", status_code="201") > 0
    assert value(after, "ledger_requests_in_progress", status_code="200") == 0
    assert not any(
        name == "ledger_requests_error_total" and dict(labels).get("path") == DEBITS["path"] for name, labels in after
    )


def test_a_rate_limited_request_is_counted_as_429_on_either_path(clean_database: str) -> None:
    for gateway in running(clean_database, LEDGER_RATE_LIMIT_SERVICE_PER_MINUTE="1"):
        before = samples(gateway)
        # Given two services that have each used their one request of the minute
        for sub, lean in (("lean-worker", True), ("full-worker", False)):
            if not lean:
                gateway.app.hot = None  # type: ignore[attr-defined]
            service: Api = gateway.client("service", sub)
            for n in range(2):
                answer = service.post(
                    "/api/usage/debits", json={"user_id": "u1", "tokens": 1}, headers={"Idempotency-Key": f"{sub}-{n}"}
                )
            # When the second request is refused
            assert answer.status_code == 429, answer.text
        after = samples(gateway)
        # Then each refusal is counted under 429, on the lean path and through Litestar's routes alike
        assert (
            value(after, "ledger_requests_total", status_code="429")
            - value(before, "ledger_requests_total", status_code="429")
            == 2
        )
