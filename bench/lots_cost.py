"""What lots cost on the debit path: scenario 3's debits on accounts with one lot, and with ten open lots.

Issue 17's target: the debit rate with 10 open lots per account stays within 10% of one lot. A second set
of accounts (``lots-0`` ... ``lots-9999``) is funded like the first but in ten lots of mixed kinds, half
of them expiring (a year and some hours later), so every debit orders ten lots and names the one it takes
from. The same debits (random accounts of one set, 64 connections) run in windows alternately on the
one-lot and the ten-lot accounts, in the order one, ten, ten, one (so a drift of the machine during the
run weighs on both sides alike), and the ten-lot rate over the one-lot rate is reported with each
window's CPU per debit. Before each window, every account of its set is debited once, unmeasured: the
two sets together are twice what the server's cache holds (``LEDGER_CACHE_MAXSIZE``, 10,000), so without
that pass the second and the fourth windows measured mostly each account's first read from its snapshot
(the ten-lot accounts are funded through the Python API, and the one-lot ones were pushed out by them),
and the ratio compared a cold window and a warm one on each side.

Run on its own (setup, funding, this scenario, ``ledger verify``; about 2 minutes)::

    python3 -m uv run python -m bench.lots_cost

or as part of ``python -m bench.run`` (scenario 11), after scenario 10, with windows half as long.
"""

from __future__ import annotations

import random
import sys
from typing import TYPE_CHECKING, Any

from bench.history import bulk_open
from bench.loadgen import Repeat

if TYPE_CHECKING:
    from bench.run import Bench

LOTS = 10
ORDER = (1, LOTS, LOTS, 1)
TARGET = 0.90


def fund(bench: Bench) -> list[bytes]:
    """The ten-lot accounts, as many as the one-lot ones, funded with the same total each."""
    from bench.run import FUND_MILLICREDITS  # noqa: PLC0415 - bench.run imports this module.

    users = [f"lots-{n}" for n in range(len(bench.user_bytes))]
    _log(f"scenario 11: funding {len(users):,} accounts with {LOTS} lots each")
    info = bulk_open(bench.database_url, users, grant_millicredits=FUND_MILLICREDITS, lots=LOTS)
    info["catch_up"] = bench.wait_for_projection(120)
    bench.result["lots_funding"] = info
    return [user.encode() for user in users]


def run(bench: Bench, *, window_s: float, warmup_s: float) -> dict[str, Any]:
    """The windows (scenario 11 in the table, one row each) and the comparison."""
    requests = bench.requests
    accounts = {1: bench.user_bytes, LOTS: fund(bench)}
    windows: list[dict[str, Any]] = []
    for n, lots in enumerate(ORDER, start=1):
        users = accounts[lots]

        def debit(users: list[bytes] = users) -> bytes:
            return requests.debit(random.choice(users), random.randint(1, 1_000))

        _log(f"scenario 11: one debit of each of the {len(users):,} accounts with {lots} lot(s), unmeasured")
        bench.debit_each(users, label=f"s11-hold-{n}")
        catch_up = bench.wait_for_projection(30)
        bench.checkpoint()
        title = f"debits, {lots} open lot{'s' if lots > 1 else ''} per account ({n}/{len(ORDER)})"
        _log(f"scenario 11: {title} ({warmup_s:g} s warm-up + {window_s:g} s)")
        result = bench.load(lambda s, debit=debit: Repeat(s, debit, 201), warmup_s=warmup_s, duration_s=window_s)
        record = bench.record("11", title, result, catch_up_before=catch_up, lots=lots)
        _log(
            f"  {record['rate_per_s']:,.0f}/s p50 {record['latency']['p50_ms']} ms p99 {record['latency']['p99_ms']} ms"
        )
        windows.append(record)
    summary = _compare([w for w in windows if w["lots"] == 1], [w for w in windows if w["lots"] == LOTS])
    summary["windows"] = [(w["title"], w["rate_per_s"]) for w in windows]
    bench.result["lots_cost"] = summary
    for line in summary_lines(bench.result):
        _log(line)
    return summary


def _compare(one: list[dict[str, Any]], ten: list[dict[str, Any]]) -> dict[str, Any]:
    def rate(windows: list[dict[str, Any]]) -> float:
        return sum(w["ok"] for w in windows) / sum(w["seconds"] for w in windows)

    def server_cpu_ms(windows: list[dict[str, Any]]) -> float | None:
        values = [
            10 * w["cpu"]["server"] * w["seconds"] / w["ok"] for w in windows if (w.get("cpu") or {}).get("server")
        ]
        return round(sum(values) / len(values), 3) if values else None

    rate_one, rate_ten = rate(one), rate(ten)
    return {
        "rate_one_lot_per_s": round(rate_one, 1),
        "rate_ten_lots_per_s": round(rate_ten, 1),
        "ratio_ten_to_one": round(rate_ten / rate_one, 3) if rate_one else None,
        "server_cpu_ms_per_debit": {"one_lot": server_cpu_ms(one), "ten_lots": server_cpu_ms(ten)},
        "errors": sum(w["errors"] for w in one + ten),
    }


def summary_lines(result: dict[str, Any]) -> list[str]:
    summary = result.get("lots_cost")
    if not summary:
        return []
    ratio = summary["ratio_ten_to_one"]
    cpu = summary["server_cpu_ms_per_debit"]
    line = (
        f"11: debits with {LOTS} open lots per account vs one (windows 1, 10, 10, 1):"
        f" {summary['rate_ten_lots_per_s']:,.0f}/s vs {summary['rate_one_lot_per_s']:,.0f}/s, ratio"
        f" {'-' if ratio is None else f'{ratio:.3f}'} (target >= {TARGET}); server CPU per debit"
        f" {cpu['ten_lots']} vs {cpu['one_lot']} ms; {summary['errors']} errors"
    )
    return [line]


def _log(message: str) -> None:
    from bench.run import log  # noqa: PLC0415 - bench.run imports this module.

    log(message)


def main(argv: list[str] | None = None) -> int:
    """Only this scenario: reset, migrate, seed, fund, the windows, ``ledger verify``, the table."""
    from bench.run import Bench, parse  # noqa: PLC0415

    bench = Bench(parse(argv))
    bench.args.out = bench.args.out.with_name("lots_cost.json")
    return bench.run_alone(lambda: run(bench, window_s=bench.args.duration, warmup_s=bench.args.warmup))


if __name__ == "__main__":
    sys.exit(main())
