"""The request counter behind the rate limits, against a real Redis: concurrent hits share Redis calls
but every hit still gets its own exact place in its principal's window."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from gateway.ratelimit import WINDOW_SECONDS, RedisCounter

LIMIT = 1_000


async def test_concurrent_hits_each_get_their_own_place_in_the_count(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    counter = RedisCounter(client)
    principals = [f"test:{uuid.uuid4().hex}" for _ in range(3)]
    try:
        hits = [counter.hit(principal, LIMIT) for principal in principals for _ in range(200)]
        answers = await asyncio.gather(*hits)
        for index, principal in enumerate(principals):
            mine = answers[index * 200 : (index + 1) * 200]
            assert all(answer is not None for answer in mine)
            assert sorted(answer[0] for answer in mine if answer is not None) == list(range(1, 201))
            assert all(0 < answer[1] <= WINDOW_SECONDS for answer in mine if answer is not None)
            assert int(await client.get(f"ledger:ratelimit:{principal}")) == 200
            assert 0 < await client.ttl(f"ledger:ratelimit:{principal}") <= WINDOW_SECONDS
        # A later hit continues the same window.
        assert (await counter.hit(principals[0], LIMIT) or (0, 0))[0] == 201
    finally:
        await client.delete(*(f"ledger:ratelimit:{principal}" for principal in principals))
        await client.aclose()


async def test_hits_fail_open_when_redis_is_unreachable() -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    counter = RedisCounter(client)
    try:
        answers = await asyncio.gather(*(counter.hit("test:gone", LIMIT) for _ in range(10)))
        assert answers == [None] * 10
        assert not counter.healthy
    finally:
        await client.aclose()


async def test_a_reply_it_cannot_read_lets_the_requests_through(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    counter = RedisCounter(client)
    counter.script = client.register_script("return {5}")  # A real Redis call with a reply of the wrong shape.
    try:
        answers = await asyncio.wait_for(asyncio.gather(*(counter.hit(f"test:{n % 3}", LIMIT) for n in range(9))), 5)
        assert answers == [None] * 9
        assert not counter.healthy
        # For a moment after a failure, requests pass without waiting for Redis at all.
        assert await asyncio.wait_for(counter.hit("test:0", LIMIT), 0.1) is None
    finally:
        await client.aclose()


async def test_a_principal_far_from_its_limit_is_answered_without_waiting_and_still_counted(redis_url: str) -> None:
    """Given a principal whose count this process learnt from Redis a moment ago, far below the limit, when
    it makes another request, then the count is answered at once (the hit never waits for Redis), and Redis
    counts the hit with the next call."""
    client = aioredis.Redis.from_url(redis_url)
    counter = RedisCounter(client)
    principal = f"test:{uuid.uuid4().hex}"
    try:
        assert (await counter.hit(principal, LIMIT) or (0, 0))[0] == 1
        hit = counter.hit(principal, LIMIT)
        with pytest.raises(StopIteration) as answered:
            hit.send(None)  # The coroutine finishes without suspending: nothing was awaited.
        count, seconds_left = answered.value.value
        assert count == 2
        assert WINDOW_SECONDS - 5 < seconds_left <= WINDOW_SECONDS
        for _ in range(100):
            if await client.get(f"ledger:ratelimit:{principal}") == b"2":
                break
            await asyncio.sleep(0.05)
        assert int(await client.get(f"ledger:ratelimit:{principal}")) == 2
    finally:
        await client.delete(f"ledger:ratelimit:{principal}")
        await client.aclose()


async def test_near_the_limit_two_workers_refuse_at_the_exact_count(redis_url: str) -> None:
    """Given two workers (two counters) sharing one principal with a limit of 60, when they take turns to
    make 70 requests, then Redis counts all 70 and exactly the 10 past the limit are over it: a hit that
    could be past the limit always waits for Redis's count."""
    limit, requests = 60, 70
    client = aioredis.Redis.from_url(redis_url)
    workers = [RedisCounter(client), RedisCounter(client)]
    principal = f"test:{uuid.uuid4().hex}"
    try:
        counts = []
        for turn in range(requests):
            answer = await workers[turn % 2].hit(principal, limit)
            assert answer is not None
            counts.append(answer[0])
        await asyncio.sleep(0.1)
        assert int(await client.get(f"ledger:ratelimit:{principal}")) == requests
        assert sum(count > limit for count in counts) == requests - limit
    finally:
        await client.delete(f"ledger:ratelimit:{principal}")
        await client.aclose()
