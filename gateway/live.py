"""Live balance updates: after each committed change the gateway publishes the user's id and the log
position on the user's channel (Litestar channels: Redis pub/sub shared by every worker, or in memory);
each open stream reads the balance from the views once they have reached that position.

Redis going away must not stop the ledger, so the channels backend is wrapped: a failed publish is
logged and counted, and the subscription reconnects by itself. The wrapper also batches: messages that
arrive within 50 ms, or while a publish is in flight, go to Redis together in one script
call, in order, so a busy worker makes one Redis round trip for many changes instead of one each. A stream
also re-reads the balance every ``REFRESH_SECONDS``, which covers changes made outside any gateway (a
hold's expiry by the sweeper). When the process is asked to stop, every open stream ends, so the server
has no response to wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import threading
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from types import FrameType, TracebackType
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
MAX_MESSAGES_PER_CALL = 1_000
GATHER_SECONDS = 0.05
# ARGV holds channel and message in turn; each is published in order.
_PUBLISH_ALL = """
for i = 1, #ARGV, 2 do
  redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
end
return #ARGV / 2
"""
SHUTDOWN_FLUSH_SECONDS = 1.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
        self._publish_all = redis.register_script(_PUBLISH_ALL) if redis is not None else None

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
        publish_all: Any = self._publish_all
        while self._outbox:
            # Changes gather for a moment, so a worker sends one call for many of them: a person watching
            # a balance does not see 50 ms, and a Redis call per change or two was a tenth of the server's
            # CPU per debit under load and more than that for a lone debit (see gateway.ratelimit).
            await asyncio.sleep(GATHER_SECONDS)
            batch = [self._outbox.popleft() for _ in range(min(len(self._outbox), MAX_MESSAGES_PER_CALL))]
            arguments = [part for data, channels in batch for name in channels for part in (name, data)]
            try:
                # One command for the lot: a pipeline of one PUBLISH each cost a sixth of the event loop's
                # time under load, most of it packing the commands and reading their replies one by one.
                await publish_all(args=arguments)
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


class LiveChannelsPlugin(ChannelsPlugin):
    """Litestar's channels plugin that also hears when the process is asked to stop.

    uvicorn answers SIGINT and SIGTERM by waiting for every open response to end before it shuts the app
    down, and a balance stream never ends by itself. So while the app runs, the stop signals first set
    ``stopping``, which ends every stream cleanly, and then reach the handler that was there before
    (uvicorn's), which stops the server with nothing left to wait for.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stopping = asyncio.Event()
        self._chained: dict[int, tuple[Callable[[int, FrameType | None], None], Callable[..., Any]]] = {}

    async def __aenter__(self) -> ChannelsPlugin:
        self.stopping = asyncio.Event()
        self._chain_stop_signals(asyncio.get_running_loop())
        return await super().__aenter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: TracebackType | None
    ) -> None:
        self._unchain_stop_signals()
        await super().__aexit__(exc_type, exc_val, exc_tb)

    def _chain_stop_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        # Only the main thread may set handlers; an app served from another thread (as in tests) is stopped
        # by whoever runs it, and its streams end when their clients go.
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in STOP_SIGNALS:
            previous = signal.getsignal(signum)
            if callable(previous):  # A default action or an ignored signal is left as it is.
                heard = functools.partial(self._heard_stop, loop, previous)
                self._chained[signum] = (heard, previous)
                signal.signal(signum, heard)

    def _heard_stop(
        self, loop: asyncio.AbstractEventLoop, previous: Callable[..., Any], signum: int, frame: FrameType | None
    ) -> None:
        # A signal handler may run in the middle of the loop's own work: the event is set by the loop.
        loop.call_soon_threadsafe(self.stopping.set)
        previous(signum, frame)

    def _unchain_stop_signals(self) -> None:
        for signum, (heard, previous) in self._chained.items():
            if signal.getsignal(signum) is heard:
                signal.signal(signum, previous)
        self._chained.clear()


def channels_plugin(redis: Any | None, on_error: Callable[[BaseException], None]) -> LiveChannelsPlugin:
    if redis is None:
        backend: ChannelsBackend = MemoryChannelsBackend()
    else:
        from litestar.channels.backends.redis import RedisChannelsPubSubBackend  # noqa: PLC0415

        backend = ResilientBackend(RedisChannelsPubSubBackend(redis=redis), on_error, redis)
    return LiveChannelsPlugin(backend=backend, arbitrary_channels_allowed=True, subscriber_max_backlog=100)


def publish(plugin: ChannelsPlugin, user_id: str, position: int) -> None:
    try:
        plugin.publish(msgspec.json.encode(BalanceChanged(user_id, position)), channel(user_id))
    except Exception:  # A stopped plugin must not fail a command that has committed.
        log.exception("could not publish a balance change")


async def _next_event(events: AsyncIterator[bytes]) -> bytes | None:
    return await anext(events, None)


async def balance_events(
    plugin: LiveChannelsPlugin,
    user_id: str,
    read: Callable[[int], Any],
    *,
    first_position: int = 0,
) -> AsyncIterator[ServerSentEventMessage]:
    """Send the balance on connect (once the views include ``first_position``, the caller's own write), after
    every published change, and when a periodic re-read differs.

    The stream ends when the subscription ends or the server is stopping; the client sees a complete
    response, and the server need not wait for it.
    """
    last = await read(first_position)
    yield ServerSentEventMessage(data=last, event="balance")
    subscriber = await plugin.subscribe(channel(user_id))
    events = subscriber.iter_events()
    # One read of the subscription stays pending across refreshes: cancelling it at a refresh would close
    # the subscriber's generator, and with it the stream.
    next_event = asyncio.create_task(_next_event(events))
    stopping = asyncio.create_task(plugin.stopping.wait())
    try:
        while True:
            done, _ = await asyncio.wait(
                (next_event, stopping), timeout=REFRESH_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
            if stopping in done:
                return
            position = 0
            if next_event in done:
                payload = next_event.result()
                if payload is None:
                    return  # The subscription ended: the app is stopping.
                position = msgspec.json.decode(payload, type=BalanceChanged).position
                next_event = asyncio.create_task(_next_event(events))
            current = await read(position)
            if current != last:
                last = current
                yield ServerSentEventMessage(data=current, event="balance")
            elif position == 0:
                yield ServerSentEventMessage(comment="keep-alive")
    finally:
        next_event.cancel()
        stopping.cancel()
        await plugin.unsubscribe(subscriber)
