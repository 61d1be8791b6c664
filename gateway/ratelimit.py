"""Request-rate limits per principal, shared by every worker process through Redis.

A fixed one-minute window per principal, counted in Redis with one atomic Lua script: increment, set the
expiry on the first hit, return the count and the time left. Requests that arrive while a call is in
flight wait for the next one, which counts them all together (an ``INCRBY`` of their number per
principal, each request getting its own place in the count): under load one Redis call serves many
requests, and every hit is counted once and in its window. Without Redis the same window is counted in
process memory. If Redis fails, requests pass (fail open): the ledger's own rules still protect every
balance, and a rate limit is not worth an outage. Failures are logged and counted, and readiness reports
Redis as unavailable.

A principal far from its limit does not wait for Redis: when this process learnt the principal's count
less than a second ago, the window has more than a few seconds to run, and that count plus the hits sent
since leaves a quarter of the limit (and at least ``MIN_HEADROOM``) unused, the request is answered from
that count and its hit goes to Redis with the next call. Near the limit every request waits for Redis, so
the refusal comes at the exact count; only the other workers' requests of that last second can pass the
limit unseen. A round trip to Redis is an eighth of a single debit's time.

Litestar's built-in limiter counts per process (its issue 4700), so N workers would allow N times the
limit; hence this one. Responses carry ``RateLimit-Limit``, ``RateLimit-Remaining`` and
``RateLimit-Reset``; a refusal is a 429 ``rate-limited`` problem with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

from litestar.datastructures import MutableScopeHeaders, State
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.plugins.problem_details import ProblemDetailsException
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import Principal
from gateway.metrics import RATE_LIMIT_FAILURES, RATE_LIMITED
from gateway.problems import problem

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
FAILURE_LOG_INTERVAL_SECONDS = 10.0
SKIP_AFTER_FAILURE_SECONDS = 1.0
# When a principal's count from Redis may answer a request without asking again (see the docstring).
KNOWN_FOR_SECONDS = 1.0
WINDOW_EDGE_SECONDS = 3.0
MIN_HEADROOM = 50
MAX_KNOWN = 100_000
# How long hits nobody waits for gather before one call counts them. A redis-py call costs the event loop
# about a fifth of a millisecond of CPU; at 5 ms a lightly loaded worker made a call per request or two,
# which was a third of a single debit's server CPU (measured: 1.13 against 0.68 ms a debit at 50 ms). The
# other workers see this one's hits that much later; a request that needs the count still asks at once.
GATHER_SECONDS = 0.05

# KEYS are the principals' counters, ARGV[1] the window and ARGV[i + 1] the hits on KEYS[i]; the reply is
# each key's count after the hits and its seconds left, flattened.
_HIT = """
local reply = {}
for i, key in ipairs(KEYS) do
  local count = redis.call('INCRBY', key, ARGV[i + 1])
  local ttl = redis.call('TTL', key)
  if ttl < 0 then
    redis.call('EXPIRE', key, ARGV[1])
    ttl = tonumber(ARGV[1])
  end
  reply[2 * i - 1] = count
  reply[2 * i] = ttl
end
return reply
"""
MAX_KEYS_PER_CALL = 500


class Counter(Protocol):
    async def hit(self, key: str, limit: int) -> tuple[int, int] | None:
        """Count one request against ``limit``; the count in the current window and the seconds left, or
        None if unknown."""


class MemoryCounter:
    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, int]] = {}

    async def hit(self, key: str, limit: int) -> tuple[int, int] | None:  # noqa: ARG002 - the count is exact here.
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        started, count = self._windows.get(key, (window, 0))
        if started != window:
            if len(self._windows) > 100_000:  # Old windows are dropped in bulk, never one by one per hit.  # noqa: PLR2004
                self._windows = {k: v for k, v in self._windows.items() if v[0] == window}
            started, count = window, 0
        self._windows[key] = (started, count + 1)
        return count + 1, int((window + 1) * WINDOW_SECONDS - now) + 1


Answer = asyncio.Future[tuple[int, int] | None]


@dataclass(frozen=True)
class Known:
    """A principal's count as Redis last gave it to this process, with every hit this process had sent."""

    count: int
    ends: float  # When its window ends (monotonic seconds).
    learnt: float  # When Redis said so (monotonic seconds).


def headroom(limit: int) -> int:
    """How far below ``limit`` a count must stay for a request to pass without asking Redis."""
    return max(limit // 4, MIN_HEADROOM)


class RedisCounter:
    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.script = redis.register_script(_HIT)
        self.healthy = True
        self._last_logged = 0.0
        # Each hit not yet counted in Redis: its caller's answer, or None when it was answered already.
        self._waiting: dict[str, list[Answer | None]] = {}
        self._unconfirmed: dict[str, int] = {}  # Hits sent or waiting to be sent, per key.
        self._known: dict[str, Known] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._urgent = asyncio.Event()  # A caller waits for the count: send at once.
        # After a failure, requests pass without asking Redis for a moment: a Redis that times out
        # must not make every request wait for its timeout in turn.
        self._skip_until = 0.0

    async def hit(self, key: str, limit: int) -> tuple[int, int] | None:
        now = time.monotonic()
        if now < self._skip_until:
            return None
        redis_key = f"ledger:ratelimit:{key}"
        count = self._unconfirmed.get(redis_key, 0) + 1
        self._unconfirmed[redis_key] = count
        known = self._known.get(redis_key)
        answer: Answer | None = None
        passed: tuple[int, int] | None = None
        if (
            known is not None
            and now - known.learnt < KNOWN_FOR_SECONDS
            and known.ends - now > WINDOW_EDGE_SECONDS
            and known.count + count <= limit - headroom(limit)
        ):
            passed = (known.count + count, math.ceil(known.ends - now))
        else:
            answer = asyncio.get_running_loop().create_future()
            self._urgent.set()
        self._waiting.setdefault(redis_key, []).append(answer)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return passed if answer is None else await answer

    async def _flush(self) -> None:
        try:
            while self._waiting:
                if not self._urgent.is_set():
                    # Hits nobody waits for gather for a moment, so a busy worker counts many in one call
                    # and the call is not made in the middle of every request.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._urgent.wait(), GATHER_SECONDS)
                self._urgent.clear()
                waiting, self._waiting = self._waiting, {}
                keys = list(waiting)
                chunks = [keys[i : i + MAX_KEYS_PER_CALL] for i in range(0, len(keys), MAX_KEYS_PER_CALL)]
                await asyncio.gather(*(self._count(chunk, [waiting[key] for key in chunk]) for chunk in chunks))
        finally:
            # Whatever stopped this flush (cancelled with its loop, say), no caller is left waiting.
            for key, answers in self._waiting.items():
                self._settled(key, len(answers))
                _answer_all(answers, None)
            self._waiting = {}

    async def _count(self, keys: list[str], waiting: list[list[Answer | None]]) -> None:
        counted: list[tuple[int, int]] | None = None
        try:
            try:
                reply = await self.script(keys=keys, args=[WINDOW_SECONDS, *(len(answers) for answers in waiting)])
                counted = [(int(reply[2 * i]), max(int(reply[2 * i + 1]), 1)) for i in range(len(keys))]
            except Exception as error:  # noqa: BLE001 - fail open, whatever the failure (a bad reply too).
                self.failed(error)
            else:
                self.healthy = True
        finally:
            now = time.monotonic()
            if len(self._known) > MAX_KNOWN:  # Ended windows are dropped in bulk, never one by one per hit.
                self._known = {key: known for key, known in self._known.items() if known.ends > now}
            for index, (key, answers) in enumerate(zip(keys, waiting, strict=True)):
                self._settled(key, len(answers))
                if counted is None:
                    self._known.pop(key, None)
                    _answer_all(answers, None)
                    continue
                count, ttl = counted[index]
                self._known[key] = Known(count, now + ttl, now)
                for place, answer in enumerate(answers):
                    if answer is not None and not answer.done():  # A caller that went away is not waiting any more.
                        answer.set_result((count - len(answers) + place + 1, ttl))

    def _settled(self, key: str, hits: int) -> None:
        """``hits`` of ``key`` are counted in Redis now, or never will be."""
        left = self._unconfirmed.pop(key, 0) - hits
        if left > 0:
            self._unconfirmed[key] = left

    def failed(self, error: BaseException) -> None:
        self.healthy = False
        self._skip_until = time.monotonic() + SKIP_AFTER_FAILURE_SECONDS
        RATE_LIMIT_FAILURES.inc()
        if time.monotonic() - self._last_logged > FAILURE_LOG_INTERVAL_SECONDS:
            self._last_logged = time.monotonic()
            log.warning("redis unavailable, rate limits fail open: %s", type(error).__name__)


@dataclass(frozen=True)
class Counted:
    """A request's place in its principal's window: the headers its answer carries, and a refusal if over."""

    headers: dict[str, str]
    refusal: ProblemDetailsException | None


async def count_request(state: State, principal: Principal) -> Counted | None:
    """Count one request of ``principal``; None when the count is unknown (Redis failed: fail open)."""
    limit: int = state.rate_limits[principal.role]
    counted = await state.rate_counter.hit(principal.scope, limit)
    if counted is None:
        return None
    count, reset = counted
    headers = {
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(max(limit - count, 0)),
        "RateLimit-Reset": str(reset),
    }
    if count <= limit:
        return Counted(headers, None)
    RATE_LIMITED.inc()
    refusal = problem(
        "rate-limited",
        429,
        f"more than {limit} requests in {WINDOW_SECONDS} seconds",
        headers={**headers, "Retry-After": str(reset)},
    )
    return Counted(headers, refusal)


class RateLimitMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        principal = scope.get("user")
        if not isinstance(principal, Principal):
            await next_app(scope, receive, send)
            return
        counted = await count_request(scope["litestar_app"].state, principal)
        if counted is None:
            await next_app(scope, receive, send)
            return
        if counted.refusal is not None:
            raise counted.refusal
        headers = counted.headers

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                mutable = MutableScopeHeaders.from_message(message)
                for name, value in headers.items():
                    mutable[name] = value
            await send(message)

        await next_app(scope, receive, send_with_headers)


def _answer_all(answers: list[Answer | None], value: tuple[int, int] | None) -> None:
    for answer in answers:
        if answer is not None and not answer.done():
            answer.set_result(value)
