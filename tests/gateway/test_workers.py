"""Several worker processes against one database and one Redis: the request-rate limit is shared, and
concurrent debits on one account still never overdraw it. And with Redis gone, the ledger keeps serving."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from gateway.cli import mint_token
from tests.gateway.server import SECRET, Gateway, free_port, running

USER_LIMIT = 40


@pytest.fixture
def two_workers(clean_database: str, redis_url: str) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "STRIPE_"))}
    env.update(
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
        LEDGER_DATABASE_URL=clean_database,
        LEDGER_REDIS_URL=redis_url,
        LEDGER_JWT_SECRET=SECRET,
        LEDGER_RATE_LIMIT_USER_PER_MINUTE=str(USER_LIMIT),
        LEDGER_LOG_LEVEL="WARNING",
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        pids: set[int] = set()
        while len(pids) < 2:
            assert server.poll() is None, server.communicate()[0]
            assert time.monotonic() < deadline, f"two workers did not answer; saw {pids}"
            try:
                pids.add(httpx.get(f"{base_url}/health/live", timeout=2).json()["pid"])
            except httpx.HTTPError:
                time.sleep(0.1)
        yield base_url
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def bearer(role: str, sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, role=role, sub=sub, ttl_seconds=600)}"}


def test_the_rate_limit_is_shared_by_every_worker(two_workers: str) -> None:
    # Stay inside one fixed one-minute window.
    if 60 - time.time() % 60 < 15:
        time.sleep(60 - time.time() % 60 + 0.5)
    # A fresh user each run: Redis keeps counting a window across test runs.
    headers = bearer("user", f"rate-limited-{uuid.uuid4().hex}")

    def one(_: int) -> int:
        # A new connection each time, so the kernel spreads them over both workers.
        return httpx.get(f"{two_workers}/api/credits/balance", headers=headers, timeout=10).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, range(USER_LIMIT + 20)))
    assert (statuses.count(200), statuses.count(429)) == (USER_LIMIT, 20)


def test_concurrent_debits_on_one_account_never_overdraw(two_workers: str) -> None:
    admin, service = bearer("admin", "ops"), bearer("service", "svc")
    funded = httpx.post(
        f"{two_workers}/api/admin/credits/adjust",
        json={"user_id": "hot", "amount_millicredits": 100_000, "reason": "test"},
        headers={**admin, "Idempotency-Key": "fund"},
        timeout=10,
    )
    assert funded.status_code == 201, funded.text

    def debit(n: int) -> httpx.Response:
        return httpx.post(
            f"{two_workers}/api/usage/debits",
            json={"user_id": "hot", "tokens": 1_000},
            headers={**service, "Idempotency-Key": f"d-{n}"},
            timeout=30,
        )

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(debit, range(200)))
    statuses = [a.status_code for a in answers]
    assert (statuses.count(201), statuses.count(402)) == (100, 100), {s: statuses.count(s) for s in set(statuses)}
    assert min(a.json()["balance_after_millicredits"] for a in answers if a.status_code == 201) == 0


def test_a_balance_stream_hears_changes_made_through_every_worker(two_workers: str) -> None:
    admin, service = bearer("admin", "ops"), bearer("service", "svc")
    user_id = f"streamer-{uuid.uuid4().hex}"
    fund = {"user_id": user_id, "amount_millicredits": 100_000, "reason": "test"}
    funded = httpx.post(
        f"{two_workers}/api/admin/credits/adjust", json=fund, headers={**admin, "Idempotency-Key": "f"}, timeout=10
    )
    assert funded.status_code == 201, funded.text
    balances: list[int] = []
    connected = threading.Event()

    def listen() -> None:
        headers = bearer("user", user_id)
        with httpx.stream("GET", f"{two_workers}/api/credits/balance/stream", headers=headers, timeout=30) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    balances.append(json.loads(line.removeprefix("data:"))["balance_millicredits"])
                    connected.set()
                    if balances[-1] == 0:
                        return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert connected.wait(10)
    # A new connection per debit, so the kernel spreads them over both workers: the stream, on one of
    # them, hears the others' changes through Redis.
    for n in range(10):
        debit = {"user_id": user_id, "tokens": 10_000}
        answer = httpx.post(
            f"{two_workers}/api/usage/debits", json=debit, headers={**service, "Idempotency-Key": f"s-{n}"}, timeout=10
        )
        assert answer.status_code == 201, answer.text
    # Well before a stream's periodic re-read (15 s) would find the change by itself.
    listener.join(timeout=5)
    assert not listener.is_alive(), balances
    assert balances[0] == 100_000
    assert balances[-1] == 0
    assert balances == sorted(balances, reverse=True)


def test_with_redis_gone_the_ledger_keeps_serving_and_readiness_says_so(clean_database: str) -> None:
    # Nothing listens on port 1: every Redis call fails at once.
    for gateway in running(clean_database, redis_url="redis://127.0.0.1:1/0"):
        funded = fund_through(gateway)
        assert funded.status_code == 201, funded.text
        assert "RateLimit-Limit" not in funded.headers  # Failed open: no count to report.
        ready = gateway.client().get("/health/ready").json()
        assert ready["checks"]["redis"].startswith("unavailable")
        metrics = gateway.client().get("/metrics").text
        failures = next(line for line in metrics.splitlines() if line.startswith("ledger_rate_limit_failures_total "))
        assert float(failures.split()[-1]) >= 1


def fund_through(gateway: Gateway) -> httpx.Response:
    return gateway.client("admin", "ops").post(
        "/api/admin/credits/adjust",
        json={"user_id": "u1", "amount_millicredits": 1_000, "reason": "test"},
        headers={"Idempotency-Key": "fund"},
    )
