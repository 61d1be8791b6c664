"""Live balance updates: after each committed change the gateway publishes the user's id and the log
position on the user's channel (Litestar channels: Redis pub/sub shared by every worker, or in memory);
each open stream reads the balance from the views once they have reached that position.

Redis going away must not stop the ledger, so the channels backend is wrapped: a failed publish is
logged and counted, and the subscription reconnects by itself. The wrapper also batches: messages that
arrive while a publish is in flight go to Redis together in the next pipeline, in order, so a busy
worker makes one Redis round trip for many changes instead of one each. A stream also re-reads the balance every
``REFRESH_SECONDS``, which covers changes made outside any gateway (a hold's expiry by the sweeper).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from typing import Any

import msgspec
from litestar.channels import ChannelsBackend, ChannelsPlugin
from litestar.channels.backends.memory import MemoryChannelsBackend
from litestar.response.sse import ServerSentEventMessage

log = logging.getLogger(__name__)

REFRESH_SECONDS = 15.0
RECONNECT_SECONDS = 1.0
# Live updates are a convenience (a stream re-reads the balance anyway): while Redis is unreachable, at
# most this many messages wait, and older ones are dropped.
MAX_WAITING_MESSAGES = 10_000
MAX_MESSAGES_PER_PIPELINE = 1_000
SHUTDOWN_FLUSH_SECONDS = 1.0


class BalanceChanged(msgspec.Struct, frozen=True):
    user_id: str
    position: int


def channel(user_id: str) -> str:
    return f"balance:{user_id}"


class ResilientBackend(ChannelsBackend):
    """Delegates to another backend; its failures are reported to ``on_error`` instead of raised."""

    def __init__(
        self, inner: ChannelsBackend, on_error: Callable[[BaseException], None], redis: Any | None = None
    ) -> None:
        self.inner = inner
        self.on_error = on_error
        self.redis = redis
        self._channels: set[str] = set()
        self._outbox: deque[tuple[bytes, list[str]]] = deque(maxlen=MAX_WAITING_MESSAGES)
        self._flusher: asyncio.Task[None] | None = None

    async def on_startup(self) -> None:
        try:
            await self.inner.on_startup()
        except Exception as error:  # noqa: BLE001 - reported; the ledger serves without live updates.
            self.on_error(error)

    async def on_shutdown(self) -> None:
        # Messages still waiting get a moment to reach Redis, and the flush never outlives the app.
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(flusher), SHUTDOWN_FLUSH_SECONDS)
            flusher.cancel()
        try:
            await self.inner.on_shutdown()
        except Exception as error:  # noqa: BLE001
            self.on_error(error)

    async def publish(self, data: bytes, channels: Iterable[str]) -> None:
        if self.redis is None:
            try:
                await self.inner.publish(data, channels)
            except Exception as error:  # noqa: BLE001
                self.on_error(error)
            return
        self._outbox.append((data, list(set(channels))))  # Full: the oldest message goes.
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        redis: Any = self.redis
        while self._outbox:
            batch = [self._outbox.popleft() for _ in range(min(len(self._outbox), MAX_MESSAGES_PER_PIPELINE))]
            try:
                async with redis.pipeline(transaction=False) as pipe:
                    for data, channels in batch:
                        for name in channels:
                            pipe.publish(name, data)
                    await pipe.execute()
            except Exception as error:  # noqa: BLE001
                self.on_error(error)

    async def subscribe(self, channels: Iterable[str]) -> None:
        wanted = set(channels)
        self._channels |= wanted
        try:
            await self.inner.subscribe(wanted)
        except Exception as error:  # noqa: BLE001
            self.on_error(error)

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        gone = set(channels)
        self._channels -= gone
        try:
            await self.inner.unsubscribe(gone)
        except Exception as error:  # noqa: BLE001
            self.on_error(error)

    async def stream_events(self) -> AsyncGenerator[tuple[str, Any], None]:
        while True:
            try:
                async for event in self.inner.stream_events():
                    yield event
            except Exception as error:  # noqa: BLE001
                self.on_error(error)
            await asyncio.sleep(RECONNECT_SECONDS)
            if self._channels:
                await self.subscribe(set(self._channels))

    async def get_history(self, channel: str, limit: int | None = None) -> list[bytes]:
        del channel, limit
        return []


def channels_plugin(redis: Any | None, on_error: Callable[[BaseException], None]) -> ChannelsPlugin:
    if redis is None:
        backend: ChannelsBackend = MemoryChannelsBackend()
    else:
        from litestar.channels.backends.redis import RedisChannelsPubSubBackend  # noqa: PLC0415

        backend = ResilientBackend(RedisChannelsPubSubBackend(redis=redis), on_error, redis)
    return ChannelsPlugin(backend=backend, arbitrary_channels_allowed=True, subscriber_max_backlog=100)


def publish(plugin: ChannelsPlugin, user_id: str, position: int) -> None:
    try:
        plugin.publish(msgspec.json.encode(BalanceChanged(user_id, position)), channel(user_id))
    except Exception:  # A stopped plugin must not fail a command that has committed.
        log.exception("could not publish a balance change")


async def balance_events(
    plugin: ChannelsPlugin,
    user_id: str,
    read: Callable[[int], Any],
) -> AsyncIterator[ServerSentEventMessage]:
    """Send the balance on connect, after every published change, and when a periodic re-read differs."""
    last = await read(0)
    yield ServerSentEventMessage(data=last, event="balance")
    subscriber = await plugin.subscribe(channel(user_id))
    try:
        events = subscriber.iter_events()
        while True:
            try:
                payload = await asyncio.wait_for(anext(events), timeout=REFRESH_SECONDS)
                position = msgspec.json.decode(payload, type=BalanceChanged).position
            except TimeoutError:
                position = 0
            except StopAsyncIteration:
                return  # The subscription ended: the app is stopping.
            current = await read(position)
            if current != last:
                last = current
                yield ServerSentEventMessage(data=current, event="balance")
            elif position == 0:
                yield ServerSentEventMessage(comment="keep-alive")
    finally:
        await plugin.unsubscribe(subscriber)
