"""Optional sampling profiles of the service's processes during a scenario, with py-spy.

py-spy is not a dependency of the project: ``--profile`` looks for it on PATH (or takes ``--py-spy``),
for example after ``python3 -m pip install --target /tmp/pyspy py-spy`` and ``--py-spy /tmp/pyspy/bin/py-spy``.
Each process's profile is written as collapsed stacks and summarised per role (server, projector) as the
functions with the most samples on their own (self) and together with what they call (inclusive; the
frames every stack shares, such as thread and event-loop bootstrapping, are left out).
"""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Frames that sit under nearly every sample and so say nothing.
BORING = (
    "threading.py",
    "multiprocessing/",
    "uvicorn/_compat.py",
    "uvicorn/server.py",
    "uvicorn/_subprocess.py",
    "uvicorn/supervisors/",
    "uvicorn/main.py",
    "asyncio/runners.py",
    "run_forever (asyncio/base_events.py",
    "run_until_complete (asyncio/base_events.py",
    "_run_once (asyncio/base_events.py",
    "asyncio/events.py",
    "<string>",
    "concurrent/futures/thread.py",
    "anyio/_backends/_asyncio.py",
    "gateway/cli.py",
    "<module>",
)


# The pieces of a request and of the write behind it, each known by the files of its frames. A sample counts
# for the innermost frame that names a piece, so the libraries a piece calls (psycopg under the recorder,
# msgspec under the body decoder) count for that piece.
PIECES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("store: append events and markers", ("ledger/recorder.py", "LedgerStore.save", "LedgerStore._record",
                                          "eventsourcing/persistence.py", "eventsourcing/application.py")),
    ("store: refresh the batch's accounts", ("LedgerStore.refresh_accounts",)),
    ("decide: the account's rules", ("ledger/account.py", "ledger/holding.py", "ledger/lots.py",
                                     "ledger/quota.py", "ledger/checks.py", "ledger/account_events.py")),
    ("batch: decide, markers, answers", ("ledger/commit.py", "ledger/plan.py", "ledger/replies.py",
                                         "ledger/group_commit.py", "ledger/idempotency.py")),
    ("plan and hand over the command", ("ledger/pipeline.py", "ledger/application.py", "gateway/calls.py")),
    ("auth: bearer token", ("gateway/auth.py",)),
    ("rate limits (Redis)", ("gateway/ratelimit.py", "redis/")),
    ("request ids and logs", ("gateway/logs.py", "logging/")),
    ("metrics", ("prometheus",)),
    ("body: decode and validate", ("gateway/body.py", "gateway/schemas.py")),
    ("route handler", ("gateway/routes/",)),
    ("framework: Litestar", ("litestar/",)),
    ("HTTP server: uvicorn and asyncio", ("uvicorn/", "httptools", "asyncio/")),
)  # fmt: skip


def piece_of(frames: list[str]) -> str:
    """The piece a sampled stack belongs to: its innermost frame that names one."""
    for frame in reversed(frames):
        for piece, marks in PIECES:
            if any(mark in frame for mark in marks):
                return piece
    return "other"


def start(
    py_spy: str, roles: Mapping[str, list[int]], seconds: float, out_dir: Path, label: str
) -> list[subprocess.Popen[bytes]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for role, pids in roles.items():
        for pid in pids:
            path = out_dir / f"{label}-{role}-{pid}.txt"
            argv = [py_spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", "100"]
            # Only the thread holding the GIL is sampled: where Python spends CPU, not where it waits.
            argv += ["--format", "raw", "--nonblocking", "--gil", "--output", str(path)]
            runs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return runs


def finish(
    runs: list[subprocess.Popen[bytes]], out_dir: Path, label: str, roles: list[str], top: int = 12
) -> dict[str, Any]:
    for run in runs:
        try:
            run.wait(30)
        except subprocess.TimeoutExpired:
            run.kill()
    return {role: _summarise(sorted(out_dir.glob(f"{label}-{role}-*.txt")), top) for role in roles}


def _summarise(paths: list[Path], top: int) -> dict[str, Any]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    pieces: Counter[str] = Counter()
    total = 0
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            samples = int(count)
            frames = stack.split(";")
            total += samples
            own[frames[-1]] += samples
            pieces[piece_of(frames)] += samples
            for frame in set(frames):
                if not any(boring in frame for boring in BORING):
                    inclusive[frame] += samples
    if not total:
        return {"samples": 0}

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[frame, round(100 * n / total, 1)] for frame, n in counter.most_common(top)]

    return {"samples": total, "files": [p.name for p in paths], "self_percent": share(own),
            "inclusive_percent": share(inclusive),
            "pieces_percent": [[piece, round(100 * n / total, 1)] for piece, n in pieces.most_common()]}  # fmt: skip
