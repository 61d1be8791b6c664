"""The write-ahead log a scenario makes PostgreSQL write, per successful request.

Every debit commits durably: its transaction waits for the log to be flushed to disk up to its commit
record, and that flush carries whatever the projection worker wrote before it (its own commits do not
wait, but their records are in the same log). So the log's bytes per debit are what a disk's flush
latency multiplies, and the number to move when the views write fewer rows. ``pg_stat_wal`` counts the
whole cluster: on a machine doing nothing else, that is the scenario's processes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psycopg

_READ = "SELECT wal_records, wal_fpi, wal_bytes, wal_sync FROM pg_stat_wal"


@dataclass(frozen=True)
class WalCounters:
    records: int
    full_page_images: int
    bytes: int
    syncs: int


def read(admin_url: str) -> WalCounters | None:
    """The cluster's counters now, or None where the server does not keep them (before PostgreSQL 14)."""
    try:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            row = conn.execute(_READ).fetchone()
    except psycopg.Error:
        return None
    return WalCounters(int(row[0]), int(row[1]), int(row[2]), int(row[3])) if row else None


def per_request(start: WalCounters | None, end: WalCounters | None, requests: int) -> dict[str, float] | None:
    """What the window wrote per successful request."""
    if start is None or end is None or requests <= 0:
        return None
    before, after = asdict(start), asdict(end)
    return {name: round((after[name] - before[name]) / requests, 2) for name in before}


def summary_lines(by_id: dict[str, dict[str, Any]], scenario_ids: tuple[str, ...]) -> list[str]:
    lines = []
    for scenario_id in scenario_ids:
        per = (by_id.get(scenario_id) or {}).get("wal_per_request")
        if per:
            lines.append(
                f"{scenario_id}: write-ahead log per debit: {per['bytes']:,.0f} bytes in {per['records']:.1f} records"
                f" ({per['full_page_images']:.2f} full-page images), {per['syncs']:.3f} flushes to disk"
            )
    return lines
