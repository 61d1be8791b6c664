"""The garbage collector's settings for the `ledger` processes: above all the server and the projector.

A server worker keeps up to ``LEDGER_CACHE_MAXSIZE`` accounts in memory, and with the app's modules and
routes that is hundreds of thousands of objects that live as long as the process. With Python's default
thresholds a full collection walked all of them about once a second under load, for about 50 ms each
time: in the benchmark that pause was the whole p99 of a debit (71 ms against a p50 of 18 ms), and the
collections of the younger generations took a fifth of the server's CPU. So the young generation is
collected after 10,000 allocations instead of 700 and a full collection waits for 100 collections of the
middle one instead of 10; what exists once the process has started is frozen out of every collection.
Cycles are still collected, less often, and memory stays bounded by the caches' own bounds.
"""

from __future__ import annotations

import gc

THRESHOLDS = (10_000, 50, 100)


def tune() -> None:
    """Collect less often (at start, before the process builds its long-lived objects)."""
    gc.set_threshold(*THRESHOLDS)


def freeze_startup() -> None:
    """Leave what exists now (modules, the app, its routes) out of every later collection."""
    gc.collect()
    gc.freeze()
