"""Live updates over a real Redis: published in order, batched, and not left behind at shutdown."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis
from litestar.channels.backends.redis import RedisChannelsPubSubBackend

from gateway.live import ResilientBackend


async def test_every_message_published_before_shutdown_reaches_redis_in_order(redis_url: str) -> None:
    client, listening = aioredis.Redis.from_url(redis_url), aioredis.Redis.from_url(redis_url)
    listener = listening.pubsub()
    name = f"test-live-{uuid.uuid4().hex}"
    await listener.subscribe(name)
    errors: list[BaseException] = []
    backend = ResilientBackend(RedisChannelsPubSubBackend(redis=client), errors.append, client)
    try:
        await backend.on_startup()
        for n in range(300):
            await backend.publish(str(n).encode(), [name, name])  # A channel named twice is published once.
        await backend.on_shutdown()
        await client.aclose()  # As the app closes its Redis right after the plugin stops.
        received: list[bytes] = []
        deadline = asyncio.get_running_loop().time() + 5
        while asyncio.get_running_loop().time() < deadline:
            message = await listener.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None:
                received.append(message["data"])
        assert errors == []
        assert received == [str(n).encode() for n in range(300)]
    finally:
        await listener.aclose()
        await listening.aclose()


async def test_publishing_without_redis_reports_and_never_raises() -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    errors: list[BaseException] = []
    backend = ResilientBackend(RedisChannelsPubSubBackend(redis=client), errors.append, client)
    try:
        await backend.publish(b"x", ["gone"])
        await asyncio.sleep(0)
        await backend.on_shutdown()
        assert errors
    finally:
        await client.aclose()
