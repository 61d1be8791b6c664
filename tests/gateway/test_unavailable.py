"""A database that does not answer: the caller hears 503 with Retry-After within two seconds, and the same
request sent again later is applied once. The whole-outage campaign is in tests/faults."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.gateway.server import Gateway, running


@pytest.fixture
def gateway(clean_database: str) -> Iterator[Gateway]:
    yield from running(clean_database)


def test_a_write_the_database_does_not_answer_in_time_is_503_and_its_retry_applies_once(gateway: Gateway) -> None:
    admin = gateway.client("admin", "ops-1")
    service = gateway.client("service", "worker")
    funded = admin.post(
        "/api/admin/credits/adjust",
        json={"user_id": "u1", "amount_millicredits": 100_000, "reason": "test funding"},
        headers={"Idempotency-Key": "fund"},
    )
    assert funded.status_code == 201, funded.text
    debit = {"user_id": "u1", "tokens": 1_000}
    # Given the event table's write lock held elsewhere (a stuck migration, a long transaction),
    locked = threading.Event()
    release = threading.Event()

    def hold_the_lock() -> None:
        with psycopg.connect(gateway.database_url) as conn:
            conn.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")
            locked.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_lock, daemon=True)
    holder.start()
    assert locked.wait(5)
    try:
        # when a debit arrives, then it is answered 503 with Retry-After within two seconds,
        started = time.monotonic()
        answer = service.post("/api/usage/debits", json=debit, headers={"Idempotency-Key": "d-1"})
        took = time.monotonic() - started
    finally:
        release.set()
        holder.join(timeout=10)
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["type"] == "unavailable"
    assert int(answer.headers["Retry-After"]) >= 1
    assert "X-Request-Id" in answer.headers
    # The contract's bound is 2 s (the ledger's deadline is 1.5 s); speed is the benchmark's to measure, so
    # this only tells an answer that came at its deadline from one that waited for a timeout of seconds.
    assert took < 4.0, took
    # and the same request sent again is applied once: its first answer, or the debit now.
    retried = service.post("/api/usage/debits", json=debit, headers={"Idempotency-Key": "d-1"})
    assert retried.status_code == 201, retried.text
    deadline = time.monotonic() + 5
    while gateway.rows("SELECT count(*) FROM ledger_events WHERE topic LIKE '%CreditsDebited'") != [(1,)]:
        assert time.monotonic() < deadline, "the debit was not applied exactly once"
        time.sleep(0.05)
    balance = gateway.client("user", "u1").get(
        "/api/credits/balance", headers={"Ledger-Min-Position": retried.headers["Ledger-Position"]}
    )
    assert balance.json()["balance_millicredits"] == 100_000 - 1_000
