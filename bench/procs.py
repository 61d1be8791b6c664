"""Processes: start and stop the service's processes, and read CPU time and memory from /proc.

Every process this benchmark starts gets its own session (process group), so stopping it reaches its
children (uvicorn's workers) and nothing else. CPU is read from ``/proc/<pid>/stat`` and ``/proc/stat``
at the start and the end of each measured window and attributed to groups of processes: the load
generator (this process), the HTTP server, the projection worker, PostgreSQL, Redis, pgbench and
everything else on the machine. Whatever the kernel counted as busy but no living process accounts for
(processes that exited during the window, interrupts) is reported as ``unattributed``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    comm: str
    ticks: int  # user + system CPU time, in clock ticks


@dataclass(frozen=True)
class Snapshot:
    at: float  # time.monotonic()
    busy_ticks: int  # all CPUs, from /proc/stat
    total_ticks: int
    procs: dict[int, ProcInfo] = field(default_factory=dict)


def read_proc(pid: int) -> ProcInfo | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split at the last ')'.
    close = raw.rindex(b")")
    comm = raw[raw.index(b"(") + 1 : close].decode(errors="replace")
    fields = raw[close + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15; ppid is field 4.
    return ProcInfo(pid=pid, ppid=int(fields[1]), comm=comm, ticks=int(fields[11]) + int(fields[12]))


def snapshot() -> Snapshot:
    with Path("/proc/stat").open("rb") as stat:
        cpu = [int(value) for value in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    busy = cpu[0] + cpu[1] + cpu[2] + cpu[5] + cpu[6] + (cpu[7] if len(cpu) > 7 else 0)
    total = busy + cpu[3] + cpu[4]
    procs = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = read_proc(int(entry.name))
            if info is not None:
                procs[info.pid] = info
    return Snapshot(at=time.monotonic(), busy_ticks=busy, total_ticks=total, procs=procs)


def descendants(root: int, snap: Snapshot) -> set[int]:
    """The root and every process below it, in one snapshot."""
    children: dict[int, list[int]] = {}
    for info in snap.procs.values():
        children.setdefault(info.ppid, []).append(info.pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo.extend(children.get(pid, ()))
    return found


def cpu_breakdown(start: Snapshot, end: Snapshot, roots: Mapping[str, int | None]) -> dict[str, float]:
    """CPU used in the window by each group, in percent of one core (the machine has ``os.cpu_count()``).

    ``roots`` names the process trees to single out, in order: a process counts in the first tree that
    holds it. ``loadgen`` is special: only that process, not its children (the services it started).
    The rest is grouped by command name: ``postgres`` (unless a ``postgres`` tree is given: then other
    PostgreSQL servers on the machine count as ``other``), ``redis``, ``pgbench``, ``other``.
    """
    seconds = max(end.at - start.at, 1e-9)
    trees = {
        name: {pid} if name == "loadgen" else descendants(pid, end) | descendants(pid, start)
        for name, pid in roots.items()
        if pid is not None
    }
    groups: dict[str, int] = dict.fromkeys([*trees, "postgres", "redis", "pgbench", "other"], 0)
    counted = 0
    for pid, info in end.procs.items():
        before = start.procs.get(pid)
        # A process started during the window used all its CPU time in it. (A process that exec'd keeps
        # its pid and its CPU time but changes its name; a reused pid shows as time going backwards.)
        used = info.ticks - (before.ticks if before is not None else 0)
        if used < 0:
            used = info.ticks
        counted += used
        groups[_group(pid, info.comm, trees)] += used
    result = {name: 100.0 * ticks / CLOCK_TICKS / seconds for name, ticks in groups.items()}
    busy = end.busy_ticks - start.busy_ticks
    result["unattributed"] = max(0.0, 100.0 * (busy - counted) / CLOCK_TICKS / seconds)
    result["machine_busy"] = 100.0 * busy / CLOCK_TICKS / seconds
    result["machine_capacity"] = 100.0 * (os.cpu_count() or 1)
    return {name: round(value, 1) for name, value in result.items()}


def _group(pid: int, comm: str, trees: Mapping[str, set[int]]) -> str:
    for name, tree in trees.items():
        if pid in tree:
            return name
    if comm == "postgres" and "postgres" not in trees:
        return "postgres"
    if comm.startswith("redis-server"):
        return "redis"
    if comm == "pgbench":
        return "pgbench"
    return "other"


def rss_kib(pid: int) -> int | None:
    """Resident set size of one process in KiB (``VmRSS``), or None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return 0


def tree_rss_kib(root: int) -> dict[int, int]:
    """RSS of every process in a tree, by pid."""
    result = {}
    for pid in sorted(descendants(root, snapshot())):
        rss = rss_kib(pid)
        if rss is not None:
            result[pid] = rss
    return result


class Service:
    """One process started by the benchmark, in its own process group, with its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait, then SIGKILL whatever is left of its process group. Returns the exit code."""
        if self.process is None:
            return None
        pgid = self.process.pid  # start_new_session: the process leads its own group
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                self.process.wait(5)
        # Workers left behind by a supervisor that died are still in the group.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        return self.process.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def postmaster_pid(data_directory: str) -> int | None:
    """The pid of the PostgreSQL server whose data directory this is (first line of postmaster.pid)."""
    try:
        return int(Path(data_directory, "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
