"""The service's own commands for fault tests, started as a user starts them, and clients using it: a
write load that records every answer it gets (and every request that got none), a read load, and a live
balance stream.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from gateway.cli import mint_token
from tests.faults.servers import free_port, readable, tail

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "f" * 40
FUNDING_MILLICREDITS = 10**9
READY_TIMEOUT_SECONDS = 60.0


# The service's processes


def service_env(database_url: str, redis_url: str | None = None) -> dict[str, str]:
    """The environment a user would give the service: none of ours leaks in (LEDGER_*, STRIPE_*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "STRIPE_"))}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        LEDGER_DATABASE_URL=database_url,
        LEDGER_JWT_SECRET=SECRET,
        # Warnings and errors only: an access line per request would be most of the log, and of the CPU.
        LEDGER_LOG_LEVEL="WARNING",
    )
    if redis_url is not None:
        env["LEDGER_REDIS_URL"] = redis_url
    return env


class LedgerProcess:
    """One ``ledger`` command (``python -m gateway.cli ...``) in a session of its own, its output in a file.

    Its own session makes it a process group: stopping it kills every process it started (uvicorn's
    workers, multiprocessing's helpers) even when it died first and left them behind.
    """

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str], root: Path) -> None:
        self.name = name
        self.log = root / f"{name}.log"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", *args],
                env=env,
                cwd=root,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def describe(self) -> str:
        code = self.process.poll()
        state = "running" if code is None else f"exited with {code}"
        last = [readable(line) for line in tail(self.log, 6).splitlines()]
        return f"`ledger {self.name}` (pid {self.pid}) {state}; its log ends:\n  " + "\n  ".join(last)

    def stop(self, timeout: float = 15.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
        # Whatever is left of the group (the process itself, or workers it left behind) is killed.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


def stacks_of(process: LedgerProcess) -> str:
    """Every thread's stack in a running ``ledger`` process (it dumps them on SIGUSR1), for a failure message."""
    if process.running():
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGUSR1)
        time.sleep(0.5)
    return f"`ledger {process.name}` (pid {process.pid}):\n" + tail(process.log, 160)


def run_ledger(
    args: Sequence[str], env: dict[str, str], root: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wait_ready(base_url: str, server: LedgerProcess, timeout: float = READY_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert server.running(), f"the server stopped while starting: {server.describe()}"
        assert time.monotonic() < deadline, f"GET /health/ready was not 200 within {timeout:.0f} s: {server.describe()}"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/health/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.2)


@dataclass
class Deployment:
    """The service as deployed: ``ledger serve`` (two workers, no projections) and ``ledger project`` twice,
    the second standing by."""

    root: Path
    env: dict[str, str]
    port: int
    serve: LedgerProcess
    projectors: list[LedgerProcess]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def processes(self) -> list[LedgerProcess]:
        return [self.serve, *self.projectors]


@contextmanager
def deployment(database_url: str, redis_url: str | None, root: Path, *, projectors: int = 2) -> Iterator[Deployment]:
    env = service_env(database_url, redis_url)
    port = free_port()
    serve_args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2", "--no-projections"]
    started: list[LedgerProcess] = []
    try:
        started.append(LedgerProcess("serve", serve_args, env, root))
        started.extend(LedgerProcess(f"project-{n}", ["project"], env, root) for n in range(1, projectors + 1))
        running = Deployment(root=root, env=env, port=port, serve=started[0], projectors=started[1:])
        wait_ready(running.base_url, running.serve)
        yield running
    finally:
        for process in started:
            process.stop()


def bearer(role: str, sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, role=role, sub=sub, ttl_seconds=3600)}"}


def fund(base_url: str, users: Sequence[str]) -> None:
    admin = bearer("admin", "fault-tests")
    with httpx.Client(base_url=base_url, headers=admin, timeout=30) as client:
        for user_id in users:
            answer = client.post(
                "/api/admin/credits/adjust",
                json={"user_id": user_id, "amount_millicredits": FUNDING_MILLICREDITS, "reason": "fault test"},
                headers={"Idempotency-Key": f"fund-{user_id}"},
            )
            assert answer.status_code == 201, answer.text


# The write load

NO_ANSWER = "no answer"
KEPT_HEADERS = ("retry-after", "x-request-id", "idempotent-replayed")


@dataclass(frozen=True, slots=True)
class Answer:
    """One attempt of one debit: what came back, or that nothing did (``status`` None)."""

    key: str
    user_id: str
    sent_at: float
    at: float
    status: int | None
    headers: dict[str, str]
    body: str
    error: str | None = None

    @property
    def label(self) -> str:
        return NO_ANSWER if self.status is None else str(self.status)

    @property
    def debit_id(self) -> str | None:
        if self.status != 201:
            return None
        value: str = json.loads(self.body)["debit_id"]
        return value


class WriteLoad:
    """Threads debiting 1 token at a time, each on its own account and with a new Idempotency-Key per debit.

    A request that gets no answer (connection refused or reset, a timeout) or a 5xx is sent again with the
    same key after a short pause, as a real client does; a 5xx's Retry-After is honoured (capped), so a 503
    is exactly what a client can act on. Every attempt is recorded.
    """

    def __init__(self, base_url: str, users: Sequence[str], *, request_timeout: float = 10.0) -> None:
        self.base_url = base_url
        self.users = list(users)
        self.request_timeout = request_timeout
        self.answers: list[Answer] = []
        self.unresolved: list[str] = []  # Keys still being retried when the load stopped.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._debit_forever, args=(user_id,), name=f"load-{user_id}", daemon=True)
            for user_id in self.users
        ]

    def start(self) -> WriteLoad:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[Answer]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.request_timeout + 5)
        with self._lock:
            return list(self.answers)

    def first(self, status: int, *, sent_after: float, timeout: float) -> Answer | None:
        """The first answer with ``status`` to a request sent after ``sent_after``, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [a for a in self.answers if a.status == status and a.sent_at >= sent_after]
                if found:
                    return min(found, key=lambda answer: answer.at)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)

    def _record(self, answer: Answer) -> None:
        with self._changed:
            self.answers.append(answer)
            self._changed.notify_all()

    def _debit_forever(self, user_id: str) -> None:
        headers = bearer("service", "fault-load")
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=self.request_timeout) as client:
            while not self._stop.is_set():
                key = f"{user_id}-{uuid.uuid4().hex}"
                while not self._stop.is_set():
                    pause = self._attempt(client, user_id, key)
                    if pause is None:
                        break
                    self._stop.wait(pause)
                else:
                    with self._lock:
                        self.unresolved.append(key)

    def _attempt(self, client: httpx.Client, user_id: str, key: str) -> float | None:
        """Send one debit; the pause before sending it again, or None when it has its final answer."""
        sent_at = time.monotonic()
        try:
            response = client.post(
                "/api/usage/debits", json={"user_id": user_id, "tokens": 1}, headers={"Idempotency-Key": key}
            )
        except httpx.TransportError as error:
            self._record(
                Answer(key, user_id, sent_at, time.monotonic(), None, {}, "", error=f"{type(error).__name__}: {error}")
            )
            return 0.2
        kept = {name: response.headers[name] for name in KEPT_HEADERS if name in response.headers}
        self._record(Answer(key, user_id, sent_at, time.monotonic(), response.status_code, kept, response.text))
        if response.status_code >= 500:
            with contextlib.suppress(ValueError):
                return min(float(kept.get("retry-after", "0.2")), 1.0)
            return 0.2
        return None


class ReadLoad:
    """Users reading their balance (``GET /api/credits/balance``, asyncpg's path, not the ledger's), paced
    under the per-user rate limit. Every answer is recorded; nothing is retried, a read changes nothing."""

    def __init__(self, base_url: str, users: Sequence[str], *, every_seconds: float = 0.2) -> None:
        self.base_url = base_url
        self.every_seconds = every_seconds
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._read_forever, args=(user_id,), name=f"read-{user_id}", daemon=True)
            for user_id in users
        ]

    def start(self) -> ReadLoad:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[Answer]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
        with self._lock:
            return list(self.answers)

    def _read_forever(self, user_id: str) -> None:
        with httpx.Client(base_url=self.base_url, headers=bearer("user", user_id), timeout=10) as client:
            while not self._stop.wait(self.every_seconds):
                sent_at = time.monotonic()
                try:
                    response = client.get("/api/credits/balance")
                except httpx.TransportError as error:
                    answer = Answer("", user_id, sent_at, time.monotonic(), None, {}, "", f"{type(error).__name__}")
                else:
                    kept = {name: response.headers[name] for name in KEPT_HEADERS if name in response.headers}
                    answer = Answer("", user_id, sent_at, time.monotonic(), response.status_code, kept, response.text)
                with self._lock:
                    self.answers.append(answer)


# A live balance stream


@dataclass
class BalanceStream:
    """``GET /api/credits/balance/stream`` read on a thread: every balance it sends, with when it arrived."""

    base_url: str
    user_id: str
    balances: list[tuple[float, int]] = field(default_factory=list)
    ended: str | None = None
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> BalanceStream:
        threading.Thread(target=self._listen, name=f"stream-{self.user_id}", daemon=True).start()
        return self

    def wait_for(self, balance: int, *, since: float, timeout: float) -> float | None:
        """Seconds from ``since`` until the stream sent ``balance``, or None if it has not after waiting up to
        ``timeout`` from now."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                heard = [at for at, value in self.balances if value == balance and at >= since]
                if heard:
                    return heard[0] - since
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)

    def _listen(self) -> None:
        headers = bearer("user", self.user_id)
        # The server sends a keep-alive at least every 15 s; a read that waits longer means a dead stream.
        timeout = httpx.Timeout(10, read=30)
        try:
            with httpx.stream(
                "GET", f"{self.base_url}/api/credits/balance/stream", headers=headers, timeout=timeout
            ) as stream:
                for line in stream.iter_lines():
                    value = _balance_in(line)
                    if value is not None:
                        with self._changed:
                            self.balances.append((time.monotonic(), value))
                            self._changed.notify_all()
            self.ended = "the server ended the stream"
        except Exception as error:
            self.ended = f"{type(error).__name__}: {error}"


def _balance_in(line: str) -> int | None:
    """The balance a stream's ``data:`` line carries; None for anything else (comments, keep-alives)."""
    if not line.startswith("data:"):
        return None
    try:
        value = json.loads(line.removeprefix("data:")).get("balance_millicredits")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None
