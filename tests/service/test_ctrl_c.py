"""Ctrl-C stops ``ledger serve`` quickly and cleanly, even with live balance streams open: whether the signal
reaches the serve process alone or its whole process group (as a terminal sends it), with one worker or two."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from litestar.response.sse import ServerSentEventMessage

from gateway import live
from gateway.cli import mint_token
from tests.gateway.server import free_port
from tests.service.test_cli import SECRET, base_env

STOP_WITHIN_SECONDS = 3.0
STREAMS = 3
QUICK = ["--no-projections"]  # Starts sooner; what is tested is the streams and the server.


@dataclass
class Serving:
    process: subprocess.Popen[str]
    port: int
    lines: list[str] = field(default_factory=list)
    port_accepted_at_banner: bool | None = None
    follower: threading.Thread | None = None

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        if self.follower is not None:
            self.follower.join(5)  # The last lines, written as it stopped.
        return code


def _follow(serving: Serving, banner: threading.Event) -> None:
    stdout = serving.process.stdout
    assert stdout is not None
    for line in stdout:
        if "serving on" in line and not banner.is_set():
            serving.port_accepted_at_banner = _accepts(serving.port)
            banner.set()
        serving.lines.append(line)


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def serve(database_url: str, tmp_path: Path) -> Iterator[Callable[..., Serving]]:
    started: list[Serving] = []

    def start(*, workers: int, new_session: bool) -> Serving:
        port = free_port()
        env = base_env(LEDGER_DATABASE_URL=database_url, LEDGER_JWT_SECRET=SECRET, LEDGER_LOG_LEVEL="WARNING")
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--workers", str(workers), *QUICK],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=new_session,
        )
        serving = Serving(process, port)
        started.append(serving)
        banner = threading.Event()
        serving.follower = threading.Thread(target=_follow, args=(serving, banner), daemon=True)
        serving.follower.start()
        assert banner.wait(60), serving.output
        _wait_live(serving, workers)
        return serving

    yield start
    for serving in started:
        if serving.process.poll() is None:
            serving.process.kill()
            serving.process.wait(10)


def _wait_live(serving: Serving, workers: int) -> None:
    deadline = time.monotonic() + 60
    pids: set[int] = set()
    while len(pids) < workers:
        assert serving.process.poll() is None, serving.output
        assert time.monotonic() < deadline, f"{workers} worker(s) did not answer; saw {pids}"
        try:
            pids.add(httpx.get(f"http://127.0.0.1:{serving.port}/health/live", timeout=2).json()["pid"])
        except httpx.HTTPError:
            time.sleep(0.1)


@dataclass
class Stream:
    connected: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


def _open_stream(port: int, stream: Stream) -> None:
    headers = {"Authorization": f"Bearer {mint_token(SECRET, role='user', sub='u1', ttl_seconds=600)}"}
    url = f"http://127.0.0.1:{port}/api/credits/balance/stream"
    try:
        with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(10, read=30)) as response:
            for line in response.iter_lines():
                if line.startswith("event: balance"):
                    stream.connected.set()
        stream.ended.set()
    except BaseException as error:  # Reported by the test: a stream cut off instead of ended.
        stream.error = error


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("sent_to", ["process", "group"])
def test_ctrl_c_ends_open_streams_and_stops_within_seconds(
    serve: Callable[..., Serving], workers: int, sent_to: str
) -> None:
    to_group = sent_to == "group"
    serving = serve(workers=workers, new_session=to_group)
    streams = [Stream() for _ in range(STREAMS)]
    threads = [threading.Thread(target=_open_stream, args=(serving.port, s), daemon=True) for s in streams]
    for thread in threads:
        thread.start()
    for stream in streams:
        assert stream.connected.wait(20), (stream.error, serving.output)

    started = time.monotonic()
    if to_group:
        os.killpg(serving.process.pid, signal.SIGINT)  # As a terminal's Ctrl-C: every process in the group.
    else:
        serving.process.send_signal(signal.SIGINT)
    code = serving.wait(10)
    stopped_after = time.monotonic() - started

    for thread in threads:
        thread.join(5)
    assert code == 0, serving.output
    assert stopped_after < STOP_WITHIN_SECONDS, (stopped_after, serving.output)
    assert [(s.ended.is_set(), s.error) for s in streams] == [(True, None)] * STREAMS
    assert "Traceback" not in serving.output
    assert "ledger: stopped" in serving.output
    assert not _accepts(serving.port)


def test_the_banner_comes_once_the_port_is_bound_and_says_where_to_go(serve: Callable[..., Serving]) -> None:
    serving = serve(workers=1, new_session=False)
    assert serving.port_accepted_at_banner is True
    url = f"http://127.0.0.1:{serving.port}"
    assert f"ledger: serving on {url} with 1 worker(s)" in serving.output
    assert f"{url}/schema/swagger" in serving.output
    assert "ledger token --role admin --sub you" in serving.output
    assert f"pages: {url}/login" in serving.output
    # What the banner points at is there.
    for path in ["/schema/swagger", "/login"]:
        assert httpx.get(f"{url}{path}", timeout=5).status_code == 200, path
    serving.process.send_signal(signal.SIGINT)
    assert serving.wait(10) == 0


async def test_a_quiet_stream_stays_open_across_refreshes_and_ends_when_stopping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each refresh once cut the subscription off, so a quiet stream ended after its first keep-alive.
    monkeypatch.setattr(live, "REFRESH_SECONDS", 0.02)
    plugin = live.channels_plugin(None, lambda _: None)
    positions: list[int] = []

    async def read(position: int) -> str:
        positions.append(position)
        return "same balance"

    async with plugin:
        events = live.balance_events(plugin, "u1", read)
        kinds = [(await anext(events)).event]
        kinds += [(await anext(events)).comment for _ in range(5)]
        assert kinds == ["balance"] + ["keep-alive"] * 5
        live.publish(plugin, "u1", 42)
        while 42 not in positions:  # A published change is still heard after the refreshes.
            await anext(events)
        plugin.stopping.set()
        assert [message async for message in events] in ([], [ServerSentEventMessage(comment="keep-alive")])
