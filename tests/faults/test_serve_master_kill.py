"""The ``ledger serve`` master is killed outright (SIGKILL: no handler runs): its workers go with it, and a
new ``ledger serve`` on the same port starts. A supervisor restarting a killed server must not find the
port still held by workers nobody supervises any more.

Issue 12. Against a PostgreSQL private to this module.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.faults.checks import Expectations, print_report
from tests.faults.servers import PrivatePostgres, accepts_connections, free_port, wait_until
from tests.faults.service import LedgerProcess, service_env

WORKERS_GONE_WITHIN_SECONDS = 5.0
READY_WITHIN_SECONDS = 60.0


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc, as ps reads it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # The command name in field 2 may hold spaces and parentheses: split after its closing one.
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie: an orphan's exit may never be reaped in a container without an init."""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def serve(port: int, env: dict[str, str], root: Path, name: str) -> LedgerProcess:
    args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2", "--no-projections"]
    return LedgerProcess(name, args, env, root)


def answered_by(base_url: str, server: LedgerProcess) -> bool:
    """Whether the port is ready and the answer came from one of ``server``'s own workers: workers left
    behind by another master on the same port would answer too."""
    try:
        if httpx.get(f"{base_url}/health/ready", timeout=2).status_code != 200:
            return False
        pid = httpx.get(f"{base_url}/health/live", timeout=2).json()["pid"]
    except httpx.HTTPError:
        return False
    return pid in children(server.pid)


@pytest.mark.timeout(120)
def test_killing_the_serve_master_takes_its_workers_down_and_the_port_can_be_served_again(
    private_postgres: PrivatePostgres, scratch: Path
) -> None:
    # Given `ledger serve` with two workers, ready
    database_url = private_postgres.create_database("master_kill", migrated=True)
    env = service_env(database_url)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    first = serve(port, env, scratch, "serve-first")
    second: LedgerProcess | None = None
    try:
        assert wait_until(lambda: answered_by(base_url, first) or not first.running(), READY_WITHIN_SECONDS)
        assert first.running(), first.describe()
        # uvicorn's workers, and multiprocessing's resource tracker beside them; only workers listen.
        workers = children(first.pid)

        # When the master is killed outright, as the kernel's OOM killer or `kill -9` would
        os.kill(first.pid, signal.SIGKILL)
        first.process.wait(timeout=10)
        killed_at = time.monotonic()
        port_freed_after = wait_until(lambda: not accepts_connections(port), WORKERS_GONE_WITHIN_SECONDS)
        workers_gone = wait_until(lambda: not any(alive(pid) for pid in workers), WORKERS_GONE_WITHIN_SECONDS)
        workers_gone_after = None if workers_gone is None else time.monotonic() - killed_at
        left_behind = [pid for pid in workers if alive(pid)]

        # and a new `ledger serve` is started on the same port, as a supervisor would
        second = serve(port, env, scratch, "serve-second")
        second_ready_after = wait_until(
            lambda: answered_by(base_url, second) or not second.running(), READY_WITHIN_SECONDS
        )
        second_serves = second.running() and answered_by(base_url, second)
        second_description = second.describe()
        waited = round(time.monotonic() - killed_at, 2)
    finally:
        for process in (first, second):
            if process is not None:
                process.stop()  # Kills the whole group: any worker left behind by the killed master too.

    print_report(
        "ledger serve master killed with SIGKILL",
        {
            "children_of_master": workers,
            "children_gone_after_seconds": workers_gone_after,
            "children_still_alive": left_behind,
            "port_refused_after_seconds": port_freed_after,
            "second_serve_ready_after_seconds": second_ready_after if second_serves else None,
            "second_serve": second_description.splitlines()[0],
            "seconds_from_kill_to_end": waited,
        },
    )

    # Then within a few seconds nothing listens on the port any more: the workers went with their master
    expect = Expectations()
    expect(
        port_freed_after is not None,
        f"no process listens on port {port} within {WORKERS_GONE_WITHIN_SECONDS:.0f} s of killing the master;"
        f" of its children {workers} still alive: {left_behind}",
    )
    expect(
        workers_gone_after is not None,
        f"every child of the master exits within {WORKERS_GONE_WITHIN_SECONDS:.0f} s; still alive: {left_behind}",
    )
    # and a new serve on the same port starts and becomes ready
    expect(second_serves, f"a new `ledger serve` on port {port} starts and is ready: {second_description}")
    expect.verify()


@pytest.mark.timeout(120)
def test_workers_whose_master_dies_while_they_start_do_not_serve_on(
    private_postgres: PrivatePostgres, scratch: Path
) -> None:
    # Given `ledger serve` with two workers that have just been started (still importing, not serving)
    database_url = private_postgres.create_database("master_kill_early", migrated=True)
    port = free_port()
    first = serve(port, service_env(database_url), scratch, "serve-early")
    try:
        assert wait_until(lambda: len(children(first.pid)) >= 2 or not first.running(), READY_WITHIN_SECONDS)
        workers = children(first.pid)
        # when the master is killed before they could see it,
        os.kill(first.pid, signal.SIGKILL)
        first.process.wait(timeout=10)
        # then they stop once started instead of serving on alone (startup takes a few seconds here).
        gone = wait_until(lambda: not any(alive(pid) for pid in workers), READY_WITHIN_SECONDS)
        assert gone is not None, f"still alive: {[pid for pid in workers if alive(pid)]}"
        assert not accepts_connections(port)
    finally:
        first.stop()
