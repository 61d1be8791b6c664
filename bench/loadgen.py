"""A closed-loop HTTP/1.1 keep-alive load generator on asyncio protocols, cheap enough to share 2 cores.

Each connection keeps exactly one request in flight. Everything happens in the protocol's callbacks:
when a response is complete, its latency is stored and the next request (pre-encoded bytes, or a
template filled with ``bytes %``) is written at once, with no task, future or coroutine per request.
Responses are parsed just enough to find their end (``Content-Length`` or chunked) and their status.

Latencies are integers of nanoseconds in a preallocated ``array('q')``; percentiles are read from the
sorted values (nearest rank). A request counts in the measured window if it was sent at or after the
window's start and answered at or before its end; during the warm-up and the drain nothing is recorded.
"""

from __future__ import annotations

import asyncio
import math
import random
import socket
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

NEVER = 1 << 62


class Latencies:
    """Per-request latencies in nanoseconds, in a preallocated array."""

    def __init__(self, capacity: int) -> None:
        self.values = array("q", bytes(8 * capacity))
        self.capacity = capacity
        self.count = 0
        self.dropped = 0

    def add(self, nanoseconds: int) -> None:
        if self.count < self.capacity:
            self.values[self.count] = nanoseconds
            self.count += 1
        else:
            self.dropped += 1

    def summary(self) -> dict[str, float | int | None]:
        """Count, mean and percentiles in milliseconds (nearest rank)."""
        if self.count == 0:
            return {"count": 0, "mean_ms": None, "p50_ms": None, "p90_ms": None, "p99_ms": None,
                    "p999_ms": None, "max_ms": None}  # fmt: skip
        ordered = sorted(self.values[: self.count])

        def rank(q: float) -> float:
            return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] / 1e6

        return {
            "count": self.count,
            "mean_ms": round(sum(ordered) / len(ordered) / 1e6, 3),
            "p50_ms": round(rank(0.50), 3),
            "p90_ms": round(rank(0.90), 3),
            "p99_ms": round(rank(0.99), 3),
            "p999_ms": round(rank(0.999), 3),
            "max_ms": round(ordered[-1] / 1e6, 3),
        }


@dataclass
class Window:
    """The measured window, in ``perf_counter_ns`` time. Until it is opened nothing is recorded."""

    start_ns: int = NEVER
    end_ns: int = NEVER

    def open(self, duration_s: float | None) -> None:
        self.start_ns = time.perf_counter_ns()
        self.end_ns = NEVER if duration_s is None else self.start_ns + int(duration_s * 1e9)

    def over(self, now_ns: int) -> bool:
        return now_ns >= self.end_ns


@dataclass
class Stats:
    """What one scenario's connections record together."""

    window: Window
    latencies: Latencies
    ok: int = 0
    errors: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    connection_errors: int = 0
    timed_out: int = 0
    closing: bool = False

    def record(self, *, ok: bool, status: int, sent_ns: int, done_ns: int, body: bytes = b"") -> None:
        if sent_ns < self.window.start_ns or done_ns > self.window.end_ns:
            return
        self.statuses[status] += 1
        if ok:
            self.ok += 1
            self.latencies.add(done_ns - sent_ns)
        else:
            self.errors += 1
            if len(self.error_samples) < 5:
                self.error_samples.append(f"{status} {body[:300].decode(errors='replace')}")


class Script:
    """What one connection sends: the first request, then the next one given each response.

    Returning None ends the connection. ``sent_ns`` is when the request just answered was written.
    """

    def first(self) -> bytes | None:
        raise NotImplementedError

    def next(self, status: int, body: bytes, sent_ns: int, done_ns: int) -> bytes | None:
        raise NotImplementedError

    def delay_s(self) -> float:
        """How long to wait before sending the next request (0: at once, a closed loop)."""
        return 0.0


class Repeat(Script):
    """Send ``make()`` again and again until the window closes; ``expect`` is the successful status."""

    def __init__(self, stats: Stats, make: Callable[[], bytes], expect: int | tuple[int, ...]) -> None:
        self.stats = stats
        self.make = make
        self.expect = (expect,) if isinstance(expect, int) else expect

    def first(self) -> bytes | None:
        return self.make()

    def next(self, status: int, body: bytes, sent_ns: int, done_ns: int) -> bytes | None:
        self.stats.record(ok=status in self.expect, status=status, sent_ns=sent_ns, done_ns=done_ns, body=body)
        if self.stats.window.over(done_ns):
            return None
        return self.make()


class Paced(Repeat):
    """``Repeat`` at a given rate per connection: each request is due at random (exponential) intervals, so
    that connections do not move in lockstep; one that is late (its previous answer came after its due
    time) is sent at once. Many connections together approach a Poisson arrival at the summed rate."""

    def __init__(
        self, stats: Stats, make: Callable[[], bytes], expect: int | tuple[int, ...], *, rate_per_s: float
    ) -> None:
        super().__init__(stats, make, expect)
        self.rate_per_s = rate_per_s
        self.due_s = time.perf_counter() + random.expovariate(rate_per_s)

    def first(self) -> bytes | None:
        return self.make()

    def delay_s(self) -> float:
        now = time.perf_counter()
        self.due_s = max(self.due_s, now - 1.0) + random.expovariate(self.rate_per_s)
        return max(0.0, self.due_s - now)


class Sequence(Script):
    """Send ``count`` requests one after the other, recording each; the first one's latency on its own."""

    def __init__(self, stats: Stats, make: Callable[[], bytes], expect: int, count: int) -> None:
        self.stats = stats
        self.make = make
        self.expect = expect
        self.left = count
        self.first_latency_ms: float | None = None
        self.first_status: int | None = None

    def first(self) -> bytes | None:
        self.left -= 1
        return self.make()

    def next(self, status: int, body: bytes, sent_ns: int, done_ns: int) -> bytes | None:
        if self.first_latency_ms is None:
            self.first_latency_ms = (done_ns - sent_ns) / 1e6
            self.first_status = status
        self.stats.record(ok=status == self.expect, status=status, sent_ns=sent_ns, done_ns=done_ns, body=body)
        if self.left <= 0:
            return None
        self.left -= 1
        return self.make()


class Connection(asyncio.Protocol):
    """One keep-alive connection driving one script, one request in flight."""

    def __init__(self, script: Script, stats: Stats, done: asyncio.Future[None]) -> None:
        self.script = script
        self.stats = stats
        self.done = done
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.sent_ns = 0
        self.in_flight = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # a TCP connection's transport
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._send(self.script.first())

    def _send(self, request: bytes | None) -> None:
        assert self.transport is not None
        if request is None:
            self.in_flight = False
            self.transport.close()
            return
        self.in_flight = True
        self.sent_ns = time.perf_counter_ns()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while True:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = bytes(buffer[:head_end]).lower()
            status = int(head[9:12])
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                line_end = head.find(b"\r\n", at + 17)
                length = int(head[at + 17 : line_end if line_end >= 0 else len(head)])
                total = head_end + 4 + length
                if len(buffer) < total:
                    return
                body = bytes(buffer[head_end + 4 : total])
                del buffer[:total]
            elif b"\r\ntransfer-encoding: chunked" in head:
                parsed = _chunked(buffer, head_end + 4)
                if parsed is None:
                    return
                body, total = parsed
                del buffer[:total]
            else:
                body = b""
                del buffer[: head_end + 4]
            done_ns = time.perf_counter_ns()
            self.in_flight = False
            request = self.script.next(status, body, self.sent_ns, done_ns)
            if b"\r\nconnection: close" in head:
                # The server will not take another request here; this benchmark wants keep-alive.
                self.stats.connection_errors += 1
                self._send(None)
                return
            delay = self.script.delay_s() if request is not None else 0.0
            if delay > 0:
                asyncio.get_running_loop().call_later(delay, self._send_if_open, request)
                return
            self._send(request)
            if request is None:
                return

    def _send_if_open(self, request: bytes | None) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._send(request)

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 - any loss counts alike
        if self.in_flight and not self.stats.closing:
            self.stats.connection_errors += 1
            self.in_flight = False
        if not self.done.done():
            self.done.set_result(None)


def _chunked(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    body = bytearray()
    at = start
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return None
        size = int(bytes(buffer[at:line_end]).split(b";")[0], 16)
        chunk_start = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", line_end)
            if trailer_end < 0:
                return None
            return bytes(body), trailer_end + 4
        if len(buffer) < chunk_start + size + 2:
            return None
        body += buffer[chunk_start : chunk_start + size]
        at = chunk_start + size + 2


@dataclass
class LoadResult:
    stats: Stats
    seconds: float  # the measured window's length
    loadgen_cpu_seconds: float  # this process's CPU time during the window
    hooks: dict[str, Any]  # whatever the window hooks returned

    @property
    def rate(self) -> float:
        return self.stats.ok / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        latency = self.stats.latencies.summary()
        return {
            "seconds": round(self.seconds, 3),
            "ok": self.stats.ok,
            "errors": self.stats.errors + self.stats.connection_errors + self.stats.timed_out,
            "http_errors": self.stats.errors,
            "connection_errors": self.stats.connection_errors,
            "timed_out": self.stats.timed_out,
            "statuses": {str(k): v for k, v in sorted(self.stats.statuses.items())},
            "error_samples": self.stats.error_samples,
            "rate_per_s": round(self.rate, 1),
            "latency": latency,
            "latencies_dropped": self.stats.latencies.dropped,
            "loadgen_cpu_seconds": round(self.loadgen_cpu_seconds, 3),
            "loadgen_cpu_percent": round(100 * self.loadgen_cpu_seconds / self.seconds, 1) if self.seconds else None,
        }


async def run_load(
    host: str,
    port: int,
    *,
    connections: int,
    scripts: Callable[[Stats], Script],
    warmup_s: float,
    duration_s: float | None,
    capacity: int = 2_000_000,
    drain_timeout_s: float = 15.0,
    limit_s: float = 300.0,
    on_open: Callable[[], Any] | None = None,
    on_close: Callable[[], Any] | None = None,
) -> LoadResult:
    """Run ``connections`` closed loops; measure ``duration_s`` after ``warmup_s`` (None: until scripts end).

    With no duration, scripts that have not ended after ``limit_s`` are cut off and counted as timed out.
    ``on_open`` and ``on_close`` run at the measured window's edges (to read CPU counters, for example);
    what they return is kept in the result's ``hooks``.
    """
    loop = asyncio.get_running_loop()
    window = Window()
    stats = Stats(window=window, latencies=Latencies(capacity))
    dones: list[asyncio.Future[None]] = []
    transports: list[asyncio.BaseTransport] = []
    hooks: dict[str, Any] = {}
    cpu_start = 0.0
    if warmup_s <= 0:
        # No warm-up: the very first requests count, so the window opens before they are sent.
        if on_open is not None:
            hooks["open"] = on_open()
        cpu_start = time.process_time()
        window.open(duration_s)
    for _ in range(connections):
        done: asyncio.Future[None] = loop.create_future()
        script = scripts(stats)
        transport, _protocol = await loop.create_connection(
            lambda script=script, done=done: Connection(script, stats, done), host, port
        )
        dones.append(done)
        transports.append(transport)
    if warmup_s > 0:
        await asyncio.sleep(warmup_s)
        if on_open is not None:
            hooks["open"] = on_open()
        cpu_start = time.process_time()
        window.open(duration_s)
    if duration_s is not None:
        await asyncio.sleep(duration_s)
        cpu_end = time.process_time()
        window_seconds = (window.end_ns - window.start_ns) / 1e9
        if on_close is not None:
            hooks["close"] = on_close()
        _, pending = await asyncio.wait(dones, timeout=drain_timeout_s)
    else:
        _, pending = await asyncio.wait(dones, timeout=limit_s)
        cpu_end = time.process_time()
        window_seconds = (time.perf_counter_ns() - window.start_ns) / 1e9
        window.end_ns = time.perf_counter_ns()
        if on_close is not None:
            hooks["close"] = on_close()
    stats.timed_out += len(pending)
    stats.closing = True
    for transport in transports:
        transport.close()
    await asyncio.sleep(0)
    return LoadResult(stats=stats, seconds=window_seconds, loadgen_cpu_seconds=cpu_end - cpu_start, hooks=hooks)
