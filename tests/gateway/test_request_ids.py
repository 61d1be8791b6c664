"""Every answer carries X-Request-Id, whoever answers it: a route, the auth or rate-limit middleware, the
router's 404, or the gateway while Redis is down. A caller's own valid id comes back unchanged."""

from __future__ import annotations

import re

import httpx

from tests.gateway.server import Gateway, free_port, running

MADE_UP = re.compile(r"^[0-9a-f]{12}-[0-9a-f]+$")


def answers_of_every_kind(gateway: Gateway) -> dict[str, httpx.Response]:
    user = gateway.client("user", "u1")
    return {
        "200": user.get("/api/credits/balance"),
        "401": gateway.client().get("/api/credits/balance"),
        "403": user.get("/api/admin/credits/stats"),
        "404 of an unknown route": gateway.client().get("/api/nothing-here"),
        "405": gateway.client().delete("/api/credits/packages"),
        "422": user.get("/api/credits/history?limit=0"),
    }


def test_every_kind_of_answer_carries_a_request_id(clean_database: str) -> None:
    for gateway in running(clean_database, LEDGER_RATE_LIMIT_USER_PER_MINUTE="3"):
        answers = answers_of_every_kind(gateway)
        user = gateway.client("user", "u1")
        limited = [user.get("/api/credits/balance") for _ in range(3)][-1]
        assert limited.status_code == 429, limited.text
        answers["429"] = limited
        for kind, answer in answers.items():
            assert MADE_UP.match(answer.headers.get("X-Request-Id", "")), (kind, dict(answer.headers))
        assert len({answer.headers["X-Request-Id"] for answer in answers.values()}) == len(answers)
        # A refused request still says where it stands against the limit.
        assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "retry-after"} <= limited.headers.keys()
        assert limited.headers["RateLimit-Remaining"] == "0"
        # The caller's own id is kept, on a 404 of the router as on a route's answer.
        for path in ("/api/nothing-here", "/api/credits/packages"):
            echoed = gateway.client().get(path, headers={"X-Request-Id": "trace-abc.1"})
            assert echoed.headers["X-Request-Id"] == "trace-abc.1"


def test_answers_while_redis_is_down_carry_a_request_id(clean_database: str) -> None:
    # A Redis address where nothing listens: the rate limit fails open and live updates stay local.
    for gateway in running(clean_database, LEDGER_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
        for kind, answer in answers_of_every_kind(gateway).items():
            assert answer.status_code < 500, (kind, answer.text)
            assert MADE_UP.match(answer.headers.get("X-Request-Id", "")), (kind, dict(answer.headers))
