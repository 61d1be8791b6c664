"""The request counter behind the rate limits, against a real Redis: concurrent hits share Redis calls
but every hit still gets its own exact place in its principal's window."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis

from gateway.ratelimit import WINDOW_SECONDS, RedisCounter


async def test_concurrent_hits_each_get_their_own_place_in_the_count(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    counter = RedisCounter(client)
    principals = [f"test:{uuid.uuid4().hex}" for _ in range(3)]
    try:
        hits = [counter.hit(principal) for principal in principals for _ in range(200)]
        answers = await asyncio.gather(*hits)
        for index, principal in enumerate(principals):
            mine = answers[index * 200 : (index + 1) * 200]
            assert all(answer is not None for answer in mine)
            assert sorted(answer[0] for answer in mine if answer is not None) == list(range(1, 201))
            assert all(0 < answer[1] <= WINDOW_SECONDS for answer in mine if answer is not None)
            assert int(await client.get(f"ledger:ratelimit:{principal}")) == 200
            assert 0 < await client.ttl(f"ledger:ratelimit:{principal}") <= WINDOW_SECONDS
        # A later hit continues the same window.
        assert (await counter.hit(principals[0]) or (0, 0))[0] == 201
    finally:
        await client.delete(*(f"ledger:ratelimit:{principal}" for principal in principals))
        await client.aclose()


async def test_hits_fail_open_when_redis_is_unreachable() -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    counter = RedisCounter(client)
    try:
        answers = await asyncio.gather(*(counter.hit("test:gone") for _ in range(10)))
        assert answers == [None] * 10
        assert not counter.healthy
    finally:
        await client.aclose()


async def test_a_reply_it_cannot_read_lets_the_requests_through(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    counter = RedisCounter(client)
    counter.script = client.register_script("return {5}")  # A real Redis call with a reply of the wrong shape.
    try:
        answers = await asyncio.wait_for(asyncio.gather(*(counter.hit(f"test:{n % 3}") for n in range(9))), 5)
        assert answers == [None] * 9
        assert not counter.healthy
        # For a moment after a failure, requests pass without waiting for Redis at all.
        assert await asyncio.wait_for(counter.hit("test:0"), 0.1) is None
    finally:
        await client.aclose()
