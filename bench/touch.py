"""Scenario 8, second part: a million accounts through one worker's account cache, in its own process.

Over HTTP a run can touch a few tens of thousands of new accounts in its time, not a million. This process
is built as a server worker is (``build_ledger`` with the server's settings: the same aggregate cache and
its bound, the same group-commit writer) and loads accounts exactly as the writer does before deciding a
batch (``Ledger.refresh_accounts``: the account's snapshot and later events, into the cache), 1,000
accounts at a time. Its resident memory is read every 100,000 accounts. What it leaves out is the HTTP
layer, which keeps nothing per account. Prints one JSON object.

    python -m bench.touch PREFIX COUNT   (with the server's LEDGER_* environment)
"""

from __future__ import annotations

import json
import os
import sys
import time

from bench.procs import rss_kib
from gateway.settings import load_settings
from gateway.wiring import build_ledger
from ledger.ids import account_id

CHUNK = 1_000
SAMPLE_EVERY = 100_000


def main(prefix: str, count: int) -> dict[str, object]:
    settings = load_settings()
    assert settings.database_url is not None
    ledger = build_ledger(settings, settings.database_url)
    pid = os.getpid()
    samples = [{"accounts_touched": 0, "rss_mib": round((rss_kib(pid) or 0) / 1024, 1), "seconds": 0.0}]
    started = time.perf_counter()
    cache = ledger.repository.cache
    try:
        for first in range(0, count, CHUNK):
            ids = [account_id(f"{prefix}{k}") for k in range(first, min(first + CHUNK, count))]
            ledger.refresh_accounts(ids)
            done = first + len(ids)
            if done % SAMPLE_EVERY == 0 or done == count:
                seconds = round(time.perf_counter() - started, 1)
                rss = round((rss_kib(pid) or 0) / 1024, 1)
                samples.append({"accounts_touched": done, "rss_mib": rss, "seconds": seconds})
        cached = len(cache.cache) if cache is not None else 0  # type: ignore[attr-defined]
    finally:
        ledger.close()
    seconds = time.perf_counter() - started
    return {
        "accounts_touched": count,
        "seconds": round(seconds, 1),
        "accounts_per_second": round(count / seconds) if seconds else None,
        "cache_maxsize": settings.cache_maxsize,
        "accounts_in_cache_at_end": cached,
        "rss_start_mib": samples[0]["rss_mib"],
        "rss_end_mib": samples[-1]["rss_mib"],
        "rss_peak_mib": max(float(s["rss_mib"]) for s in samples),
        "samples": samples,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
