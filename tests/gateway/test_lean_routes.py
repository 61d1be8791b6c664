"""The metered-work routes' lean path (``gateway.hot``) answers exactly as Litestar's routes do.

The same requests go once through the lean path and once through Litestar's routes (the lean path
switched off on the same running gateway), for two users whose ids have the same length; every answer
must have the same status, the same body once ids and times are set aside, and the same headers.
Requests the lean path does not take (an unknown token, another role, bad input) must reach Litestar
with their body intact, and the lean path must really answer the plain ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from gateway.hot import HotPath
from tests.gateway.server import Api, Gateway, running

# Values that differ between two runs of the same requests: new ids, times, positions, counters.
VARYING_FIELDS = {"debit_id", "reservation_id", "expires_at", "user_id", "detail"}
VARYING_HEADERS = {"date", "x-request-id", "ledger-position", "ratelimit-remaining", "ratelimit-reset", "retry-after"}


@pytest.fixture
def gateway(clean_database: str) -> Iterator[Gateway]:
    yield from running(clean_database, LEDGER_RATE_LIMIT_SERVICE_PER_MINUTE="1000")


def shape(response: httpx.Response) -> dict[str, Any]:
    """What must be equal: the status, the body but for what varies, and the headers."""
    body = response.json()
    headers = dict(response.headers)
    return {
        "status": response.status_code,
        "body": {k: v for k, v in body.items() if k not in VARYING_FIELDS} if isinstance(body, dict) else body,
        "body_fields": sorted(body) if isinstance(body, dict) else None,
        "headers": {k: v for k, v in headers.items() if k not in VARYING_HEADERS},
        "header_names": sorted(headers),
        "ends_with_newline": response.content.endswith(b"\n"),
    }


def conversation(gateway: Gateway, user: str, run: str) -> list[httpx.Response]:
    """Every kind of answer the three routes give, for ``user``, with keys of the run's own."""
    admin: Api = gateway.client("admin", "ops-1")
    service: Api = gateway.client("service", "analysis-worker")
    user_token: Api = gateway.client("user", user)
    stranger = gateway.client()
    stranger.headers["Authorization"] = "Bearer not-a-token"
    funded = admin.post(
        "/api/admin/credits/adjust",
        json={"user_id": user, "amount_millicredits": 200_000, "reason": "test funding"},
        headers={"Idempotency-Key": f"{run}-fund"},
    )
    assert funded.status_code == 201, funded.text

    def debit(key: str, body: Any, client: httpx.Client = service, **headers: str) -> httpx.Response:
        return client.post("/api/usage/debits", json=body, headers={"Idempotency-Key": f"{run}-{key}", **headers})

    answers = [
        # First, so that Litestar has verified the service's token before the lean path may take its requests.
        service.post("/api/usage/debits", json={"user_id": user, "tokens": 1}),  # no key
        debit("d1", {"user_id": user, "tokens": 2_000, "model": "m", "analysis_id": "a-1"}),
        debit("d1", {"user_id": user, "tokens": 2_000, "model": "m", "analysis_id": "a-1"}),  # replayed
        debit("d1", {"user_id": user, "tokens": 3_000}),  # the same key, another body
        debit("d2", {"user_id": user, "input_tokens": 700, "output_tokens": 300}),
        debit("d3", {"user_id": user, "tokens": 400_000}),  # more than the balance
        debit("d4", {"user_id": user, "tokens": 1.5}),  # not an integer
        debit("d5", {"user_id": user, "tokens": 1, "input_tokens": 1, "output_tokens": 1}),  # both forms
        service.post("/api/usage/debits", content=b'{"user_id": "', headers={"Idempotency-Key": f"{run}-d6"}),
        debit("d7", {"user_id": user, "tokens": 1}, client=user_token),  # a user may not debit
        debit("d8", {"user_id": user, "tokens": 1}, client=stranger),  # not a token
    ]
    held = service.post(
        "/api/usage/reservations",
        json={"user_id": user, "estimated_tokens": 1_000, "ttl_seconds": 60},
        headers={"Idempotency-Key": f"{run}-r1"},
    )
    answers.append(held)
    assert held.status_code == 201, held.text
    reservation = held.json()["reservation_id"]
    for key, body in (("s1", {"tokens": 800}), ("s1", {"tokens": 800}), ("s2", {"tokens": 800})):
        answers.append(
            service.post(
                f"/api/usage/reservations/{reservation}/settle", json=body, headers={"Idempotency-Key": f"{run}-{key}"}
            )
        )
    answers.append(
        service.post(
            f"/api/usage/reservations/{'x' * len(reservation)}/settle",
            json={"tokens": 1},
            headers={"Idempotency-Key": f"{run}-s3"},
        )
    )
    answers.append(
        service.post(
            "/api/usage/reservations",
            json={"user_id": user, "estimated_tokens": 0},
            headers={"Idempotency-Key": f"{run}-r2"},
        )
    )
    # A path that only ends like a settlement's (a newline after it), and a Host header Litestar refuses.
    answers.append(
        service.post(
            f"/api/usage/reservations/{reservation}/settle%0A",
            json={"tokens": 1},
            headers={"Idempotency-Key": f"{run}-s4"},
        )
    )
    answers.append(debit("d9", {"user_id": user, "tokens": 1}, Host="a/b"))
    return answers


def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many requests the lean path answers itself."""
    answered: list[int] = []
    run: Callable[..., Any] = HotPath._run

    async def counted(self: HotPath, *args: Any) -> None:
        answered.append(1)
        await run(self, *args)

    monkeypatch.setattr(HotPath, "_run", counted)
    return answered


def test_the_lean_path_answers_every_request_as_litestars_routes_do(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the same conversation through the lean path and through Litestar's routes
    answered = counting(monkeypatch)
    lean = conversation(gateway, "user-lean", "lean")
    taken_by_lean_path = len(answered)
    hot = gateway.app.hot  # type: ignore[attr-defined]
    gateway.app.hot = None  # type: ignore[attr-defined]
    try:
        full = conversation(gateway, "user-full", "full")
    finally:
        gateway.app.hot = hot  # type: ignore[attr-defined]

    # Then each answer is the same, status, body and headers
    assert [shape(answer) for answer in lean] == [shape(answer) for answer in full]
    assert [answer.status_code for answer in lean] == [
        422, 201, 201, 409, 201, 402, 422, 422, 400, 403, 401, 201, 200, 200, 409, 404, 422, 404, 400,
    ]  # fmt: skip
    # And the lean path answered the plain requests itself (the debits with a well-formed body and key,
    # the reservations, the settlements), leaving the rest to Litestar
    assert taken_by_lean_path == 10
    assert len(answered) == taken_by_lean_path


def test_a_rate_limited_request_is_refused_alike_on_both_paths(clean_database: str) -> None:
    for gateway in running(clean_database, LEDGER_RATE_LIMIT_SERVICE_PER_MINUTE="2"):
        service: Api = gateway.client("service", "analysis-worker")

        def debit(key: str, service: Api = service) -> httpx.Response:
            body = {"user_id": "u1", "tokens": 1}
            return service.post("/api/usage/debits", json=body, headers={"Idempotency-Key": key})

        # Given a service that has used its two requests of the minute
        debit("k1")
        debit("k2")
        # When it sends a third on the lean path, and a fourth through Litestar's routes
        lean = debit("k3")
        gateway.app.hot = None  # type: ignore[attr-defined]
        full = debit("k4")
        # Then both are the same 429 problem, and nothing was debited
        assert lean.status_code == full.status_code == 429
        assert shape(lean) == shape(full)
        assert (
            lean.headers["Retry-After"] == full.headers["Retry-After"]
            or abs(int(lean.headers["Retry-After"]) - int(full.headers["Retry-After"])) <= 1
        )
        assert lean.json()["type"] == "rate-limited"
