"""What the event log's hash chain costs on the debit path: scenario 3's debits, chain on and chain off.

The chain is computed in the insert by two triggers on ``ledger_events`` (migrations/0007). The same
debits as scenario 3 (random accounts of the funded ones, 64 connections) run in windows alternately with
those triggers enabled and disabled, in the order on, off, off, on (so a drift of the machine during the
run weighs on both sides alike), and the chained rate over the unchained one is reported. Target: at least
0.95.

On a machine that other work shares, two windows of the same kind differ by more than 5%, so two more
measures are reported: CPU per debit (the server's, and that of the database's own backends) in each
kind of window, and the time PostgreSQL itself counts in the chain's trigger functions
(``track_functions``, set for the benchmark's database before the services start), per event and per
debit, as a share of what a whole debit costs the server and the database.

The events of an unchained window get no hash, which would break the chain (and ``ledger verify`` at the
end of the run). So right after such a window, in one transaction that holds the table's lock, their
hashes are computed as the trigger would have (``projections.chain.event_hash``, the verifier's own
function) and written with the append-only guard briefly disabled, and the triggers are enabled again.
Only a superuser or the table's owner can do that; the benchmark connects as ``postgres``.

Run on its own (setup, funding, this scenario, ``ledger verify``; about 3 minutes; ``--rounds 2`` runs
the four windows twice)::

    python3 -m uv run python -m bench.chain_cost

or as part of ``python -m bench.run`` (scenario 10), after scenario 6, with windows half as long.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from bench import procs
from bench.loadgen import Repeat
from projections.chain import GENESIS, event_hash

if TYPE_CHECKING:
    from bench.run import Bench

CHAIN_TRIGGERS = ("ledger_events_lock", "ledger_events_chain")
GUARD_TRIGGER = "ledger_events_append_only"
ORDER = (True, False, False, True)  # Chain on, off, off, on.


def set_chain(database_url: str, *, on: bool) -> int:
    """Enable or disable the chain's triggers; returns the head position at that moment."""
    action = "ENABLE ALWAYS" if on else "DISABLE"
    with psycopg.connect(database_url) as conn, conn.transaction():
        conn.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")
        for trigger in CHAIN_TRIGGERS:
            conn.execute(f"ALTER TABLE ledger_events {action} TRIGGER {trigger}")
        row = conn.execute("SELECT coalesce(max(notification_id), 0) FROM ledger_events").fetchone()
    return int(row[0]) if row else 0


def rechain(database_url: str, after: int) -> int:
    """Hash the events after position ``after`` (written unchained), then enable the chain again, in one
    transaction under the table's lock. Returns the number of events hashed."""
    with psycopg.connect(database_url) as conn, conn.transaction():
        conn.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")
        row = conn.execute(
            "SELECT hash FROM ledger_events WHERE notification_id <= %s ORDER BY notification_id DESC LIMIT 1",
            (after,),
        ).fetchone()
        previous = bytes(row[0]) if row and row[0] is not None else GENESIS
        positions: list[int] = []
        hashes: list[bytes] = []
        with conn.cursor(binary=True) as cursor:
            cursor.execute(
                "SELECT notification_id, originator_id, originator_version, topic, state FROM ledger_events"
                " WHERE notification_id > %s ORDER BY notification_id",
                (after,),
            )
            for position, originator_id, version, topic, state in cursor:
                previous = event_hash(previous, position, originator_id, version, topic, state)
                positions.append(position)
                hashes.append(previous)
        conn.execute(f"ALTER TABLE ledger_events DISABLE TRIGGER {GUARD_TRIGGER}")
        conn.execute(
            "UPDATE ledger_events AS e SET hash = c.hash FROM unnest(%s::bigint[], %s::bytea[]) AS c (position, hash)"
            " WHERE e.notification_id = c.position",
            (positions, hashes),
        )
        for trigger in (GUARD_TRIGGER, *CHAIN_TRIGGERS):
            conn.execute(f"ALTER TABLE ledger_events ENABLE ALWAYS TRIGGER {trigger}")
    return len(positions)


def prepare(bench: Bench) -> None:
    """Before the services start: their sessions then time PL/pgSQL functions, the chain's triggers among them
    (``pg_stat_user_functions``), which measures the chain's own cost apart from the machine's noise."""
    with psycopg.connect(bench.admin_url, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE \"{bench.args.database}\" SET track_functions = 'pl'")


def function_times(database_url: str) -> dict[str, tuple[int, float]]:
    """Calls and milliseconds spent in each of the chain's trigger functions so far (as the backends reported)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT funcname, calls, self_time FROM pg_stat_user_functions WHERE funcname = ANY(%s)",
            (list(CHAIN_TRIGGERS),),
        ).fetchall()
    return {str(name): (int(calls), float(ms)) for name, calls, ms in rows}


def settled_function_times(database_url: str, limit_s: float = 15.0) -> dict[str, tuple[int, float]]:
    """Function times once idle backends have reported theirs (PostgreSQL 15 flushes an idle backend's
    statistics within 10 s): read until two readings a second apart agree."""
    deadline = time.monotonic() + limit_s
    last = function_times(database_url)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = function_times(database_url)
        if now == last:
            break
        last = now
    return last


def events_between(database_url: str, after: int, upto: int) -> tuple[int, int]:
    """Events, and debits among them, at positions in (after, upto]."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE topic = 'ledger.CreditAccount.CreditsDebited')"
            " FROM ledger_events WHERE notification_id > %s AND notification_id <= %s",
            (after, upto),
        ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def head(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT coalesce(max(notification_id), 0) FROM ledger_events").fetchone()
    return int(row[0]) if row else 0


def backend_ticks(database: str) -> dict[int, int]:
    """CPU ticks so far of each PostgreSQL backend connected to ``database`` (its title names the database).

    The benchmark's ``pg%`` counts the whole server, and other work on this machine may use the same one;
    the chain's cost is in this database's backends only.
    """
    ticks = {}
    marker = f" {database} ".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "cmdline").read_bytes() and (info := procs.read_proc(int(entry.name))):
                ticks[info.pid] = info.ticks
    return ticks


def run(bench: Bench, *, window_s: float, warmup_s: float, rounds: int = 1) -> dict[str, Any]:
    """The windows (scenario 10 in the table, one row each) and the comparison."""
    requests, users, database = bench.requests, bench.user_bytes, bench.args.database

    def debit() -> bytes:
        return requests.debit(random.choice(users), random.randint(1, 1_000))

    order = ORDER * rounds
    windows: list[dict[str, Any]] = []
    times_before = settled_function_times(bench.database_url)
    chained_events = chained_debits = 0
    for n, chained in enumerate(order, start=1):
        catch_up = bench.wait_for_projection(30)
        bench.checkpoint()
        unchained_after = None if chained else set_chain(bench.database_url, on=False)
        first = head(bench.database_url)
        title = f"debits, chain {'on' if chained else 'off'} ({n}/{len(order)})"
        _log(f"scenario 10: {title} ({warmup_s:g} s warm-up + {window_s:g} s)")
        backends: dict[str, dict[int, int]] = {}

        async def sample_backends(backends: dict[str, dict[int, int]] = backends) -> None:
            # The load generator opens the window after the warm-up; this samples the same instants.
            await asyncio.sleep(warmup_s)
            backends["start"] = backend_ticks(database)
            await asyncio.sleep(window_s)
            backends["end"] = backend_ticks(database)
            await asyncio.sleep(3600)

        result = bench.load(
            lambda s: Repeat(s, debit, 201), warmup_s=warmup_s, duration_s=window_s, extra=sample_backends
        )
        record = bench.record("10", title, result, catch_up_before=catch_up, chained=chained)
        start, stop = backends.get("start", {}), backends.get("end", {})
        used = sum(ticks - start.get(pid, 0) for pid, ticks in stop.items())
        record["database_backends_cpu_percent"] = round(100 * used / procs.CLOCK_TICKS / record["seconds"], 1)
        if unchained_after is not None:
            started = time.perf_counter()
            record["rechained_events"] = rechain(bench.database_url, unchained_after)
            record["rechain_seconds"] = round(time.perf_counter() - started, 2)
        else:
            events, debits = events_between(bench.database_url, first, head(bench.database_url))
            chained_events, chained_debits = chained_events + events, chained_debits + debits
        _log(
            f"  {record['rate_per_s']:,.0f}/s p50 {record['latency']['p50_ms']} ms; CPU per debit:"
            f" server {_per_debit(record, 'server')} ms, its database's backends {_per_debit(record, 'backends')} ms"
        )
        windows.append(record)
    summary = _compare([w for w in windows if w["chained"]], [w for w in windows if not w["chained"]])
    summary["windows"] = [(w["title"], w["rate_per_s"]) for w in windows]
    summary["triggers"] = _trigger_cost(
        times_before, settled_function_times(bench.database_url), chained_events, chained_debits, summary
    )
    bench.result["chain_cost"] = summary
    for line in summary_lines(bench.result):
        _log(line)
    return summary


def _per_debit(record: dict[str, Any], group: str) -> float | None:
    """Milliseconds of CPU per successful debit in one window: the server's, or its database backends'."""
    percent = record["database_backends_cpu_percent"] if group == "backends" else (record.get("cpu") or {}).get(group)
    if percent is None or not record["ok"]:
        return None
    return round(10 * percent * record["seconds"] / record["ok"], 3)


def _compare(on: list[dict[str, Any]], off: list[dict[str, Any]]) -> dict[str, Any]:
    def rate(windows: list[dict[str, Any]]) -> float:
        return sum(w["ok"] for w in windows) / sum(w["seconds"] for w in windows)

    def cpu_ms(windows: list[dict[str, Any]], group: str) -> float:
        values = [v for w in windows if (v := _per_debit(w, group)) is not None]
        return sum(values) / len(values) if values else 0.0

    rate_on, rate_off = rate(on), rate(off)
    server_on, server_off = cpu_ms(on, "server"), cpu_ms(off, "server")
    db_on, db_off = cpu_ms(on, "backends"), cpu_ms(off, "backends")
    # What a debit costs the machine, server and database together; the chain adds to the database's part.
    total_off = server_off + db_off
    return {
        "rate_chained_per_s": round(rate_on, 1),
        "rate_unchained_per_s": round(rate_off, 1),
        "ratio_chained_to_unchained": round(rate_on / rate_off, 3) if rate_off else None,
        "cpu_ms_per_debit": {
            "server": {"chained": round(server_on, 3), "unchained": round(server_off, 3)},
            "database_backends": {"chained": round(db_on, 3), "unchained": round(db_off, 3)},
        },
        # The rate a CPU-bound machine would keep, chained over unchained, if only the backends' CPU changed.
        "cpu_bound_ratio": round(total_off / (total_off + db_on - db_off), 3) if total_off else None,
    }


def _trigger_cost(
    before: dict[str, tuple[int, float]],
    after: dict[str, tuple[int, float]],
    events: int,
    debits: int,
    summary: dict[str, Any],
) -> dict[str, Any] | None:
    """The chain's triggers' own time, per event and per debit, against what a whole debit costs the machine."""

    def spent(name: str) -> tuple[int, float]:
        (calls, ms), (calls_before, ms_before) = after.get(name, (0, 0.0)), before.get(name, (0, 0.0))
        return calls - calls_before, ms - ms_before

    chain_calls, chain_ms = spent("ledger_events_chain")
    lock_calls, lock_ms = spent("ledger_events_lock")
    if not chain_calls or not debits:
        return None  # The services' sessions did not time functions (see prepare), or nothing was written.
    per_event_us = 1000 * (chain_ms + lock_ms) / chain_calls
    per_debit_us = per_event_us * events / debits
    cpu = summary["cpu_ms_per_debit"]
    # A debit's CPU without the chain: the server's and its database's, from the unchained windows.
    whole_us = 1000 * (cpu["server"]["unchained"] + cpu["database_backends"]["unchained"])
    return {
        "chain_calls": chain_calls,
        "lock_calls": lock_calls,
        "events_per_statement": round(chain_calls / lock_calls, 1) if lock_calls else None,
        "events_per_debit": round(events / debits, 2),
        "us_per_event": round(per_event_us, 2),
        "us_per_debit": round(per_debit_us, 1),
        "share_of_a_debits_cpu": round(per_debit_us / whole_us, 4) if whole_us else None,
    }


def summary_lines(result: dict[str, Any]) -> list[str]:
    summary = result.get("chain_cost")
    if not summary:
        return []
    cpu, backends = summary["cpu_ms_per_debit"], summary["cpu_ms_per_debit"]["database_backends"]
    rates = (
        f"10: hash chain on the debit path (windows on, off, off, on): {summary['rate_chained_per_s']:,.0f} debits/s"
        f" chained vs {summary['rate_unchained_per_s']:,.0f}/s unchained, ratio"
        f" {_show(summary['ratio_chained_to_unchained'])} (target >= 0.95)"
    )
    cpu_line = (
        f"10: CPU per debit, chained vs unchained: its database's backends {backends['chained']} vs"
        f" {backends['unchained']} ms, server {cpu['server']['chained']} vs {cpu['server']['unchained']} ms;"
        f" the rate a CPU-bound machine keeps: {_show(summary['cpu_bound_ratio'])}"
    )
    lines = [rates, cpu_line]
    triggers = summary.get("triggers")
    if triggers:
        lines.append(
            f"10: the chain's triggers (timed by PostgreSQL): {triggers['us_per_event']} µs per event,"
            f" {triggers['events_per_statement']} events per insert, {triggers['us_per_debit']} µs per debit ="
            f" {100 * (triggers['share_of_a_debits_cpu'] or 0):.1f}% of a debit's CPU (server and database)"
        )
    return lines


def _show(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.3f}"


def _log(message: str) -> None:
    from bench.run import log  # noqa: PLC0415 - bench.run imports this module.

    log(message)


def main(argv: list[str] | None = None) -> int:
    """Only this scenario: reset, migrate, seed, fund, the windows, ``ledger verify``, the table."""
    from bench.run import Bench, parse  # noqa: PLC0415

    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--rounds", type=int, default=1, help="times to run the windows on, off, off, on (1)")
    mine, rest = own.parse_known_args(argv)
    bench = Bench(parse(rest))
    bench.args.out = bench.args.out.with_name("chain_cost.json")
    return bench.run_alone(
        lambda: run(bench, window_s=bench.args.duration, warmup_s=bench.args.warmup, rounds=mine.rounds),
        before_services=lambda: prepare(bench),
    )


if __name__ == "__main__":
    sys.exit(main())
