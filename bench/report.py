"""The printed table and the JSON file of one benchmark run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COLUMNS = (
    ("#", 2, "id"),
    ("scenario", 34, "title"),
    ("ok/s", 8, "rate"),
    ("p50 ms", 7, "p50"),
    ("p99 ms", 7, "p99"),
    ("p99.9", 7, "p999"),
    ("max ms", 7, "max"),
    ("ok", 8, "ok"),
    ("errors", 6, "errors"),
    ("gen%", 5, "gen"),
    ("srv%", 5, "server"),
    ("pg%", 5, "postgres"),
    ("proj%", 5, "projector"),
    ("redis%", 6, "redis"),
    ("else%", 5, "else"),
    ("busy%", 5, "busy"),
)


def _fmt(value: Any, width: int) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return text[:width].rjust(width) if not isinstance(value, str) else text[:width].ljust(width)


def row(scenario: dict[str, Any]) -> dict[str, Any]:
    """Flatten one scenario's record into the table's cells."""
    latency = scenario.get("latency") or {}
    cpu = scenario.get("cpu") or {}
    gen = scenario.get("loadgen_cpu_percent")
    if gen is None:
        gen = cpu.get("loadgen")
    other = None
    if cpu:
        other = cpu.get("other", 0.0) + cpu.get("unattributed", 0.0) + cpu.get("pgbench", 0.0)
        if scenario.get("id") == "2":
            other -= cpu.get("pgbench", 0.0)
            gen = cpu.get("pgbench")
    return {
        "id": scenario.get("id", ""),
        "title": scenario.get("title", ""),
        "rate": scenario.get("rate_per_s"),
        "p50": latency.get("p50_ms"),
        "p99": latency.get("p99_ms"),
        "p999": latency.get("p999_ms"),
        "max": latency.get("max_ms"),
        "ok": scenario.get("ok"),
        "errors": scenario.get("errors"),
        "gen": gen,
        "server": cpu.get("server"),
        "postgres": cpu.get("postgres"),
        "projector": cpu.get("projector"),
        "redis": cpu.get("redis"),
        "else": round(other, 1) if other is not None else None,
        "busy": cpu.get("machine_busy"),
    }


def table(scenarios: list[dict[str, Any]]) -> str:
    header = " ".join(name.ljust(width) if key == "title" else name.rjust(width) for name, width, key in COLUMNS)
    lines = [header, "-" * len(header)]
    for scenario in scenarios:
        cells = row(scenario)
        lines.append(" ".join(_fmt(cells[key], width) for _, width, key in COLUMNS))
    return "\n".join(lines)


def legend() -> str:
    return (
        "ok/s: successful requests per second in the measured window (pairs/s for 5; transactions/s for 2).\n"
        "Latencies from send to last byte received, successful requests only (a whole pair for 5).\n"
        "CPU columns are percent of ONE core during the window (the machine has 2 cores = 200%):\n"
        "gen = the load generator (for 2: pgbench itself), srv = the HTTP server process(es),\n"
        "pg = all PostgreSQL processes, proj = the projection worker, else = every other process\n"
        "plus CPU no living process accounts for (exited processes, interrupts), busy = whole machine."
    )


def write_json(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=False, default=str) + "\n")
