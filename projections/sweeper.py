"""The sweeper: writes the expiry of holds and lots past their time, so views and history show it.

A hold stops counting against the available balance the moment it expires, and a lot stops counting in
the balance, whether or not this runs; the sweeper only records the fact. It finds candidates in the holds
and lots views and asks the ledger, which decides from the account's own events, so a view that lags can
only cause a wasted look, never a wrong expiry. Like a projection, one sweeper is active at a time (an
advisory lock); others stand by.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg

from ledger.application import Ledger
from projections.recovery import CONNECTION_FAULTS, Backoff, describe_fault
from projections.standby import connect, stand_by

log = logging.getLogger(__name__)

SWEEP_INTERVAL_SECONDS = 1.0
# Accounts handled per sweep; the next sweep takes the rest.
SWEEP_BATCH = 500


class HoldSweeper:
    name = "hold-sweeper"

    def __init__(self, database_url: str, ledger: Ledger, clock: Callable[[], datetime]) -> None:
        self.database_url = database_url
        self.ledger = ledger
        self.clock = clock
        self.error: BaseException | None = None
        self.active = False
        self.reconnects = 0
        self.expired_total = 0

    def sweep(self, conn: psycopg.Connection[Any]) -> int:
        """Expire the due holds and lots of up to ``SWEEP_BATCH`` accounts. Returns how many expired."""
        now = self.clock()
        users = conn.execute(
            "SELECT user_id FROM credit_holds WHERE expires_at <= %(now)s"
            " UNION SELECT user_id FROM credit_lots WHERE expires_at <= %(now)s LIMIT %(limit)s",
            {"now": now, "limit": SWEEP_BATCH},
        ).fetchall()
        expired = sum(self.ledger.expire_due(user_id, now=now) for (user_id,) in users)
        self.expired_total += expired
        return expired

    def run_forever(self, stop: threading.Event) -> None:
        """Stand by until this process holds the sweeper's lock, then sweep until stopped.

        A lost connection, here or in the ledger's writes, is survived as the projections survive it.
        """
        backoff = Backoff()
        while not stop.is_set():
            try:
                self._hold_and_sweep(stop, backoff)
            except CONNECTION_FAULTS as fault:
                self.reconnects += 1
                log.warning("hold sweeper %s; trying again", describe_fault(fault))
                stop.wait(backoff.next_seconds())
            except BaseException as error:
                self.error = error
                log.exception("hold sweeper stopped")
                raise
            finally:
                self.active = False

    def _hold_and_sweep(self, stop: threading.Event, backoff: Backoff) -> None:
        with connect(self.database_url, "hold sweeper") as conn:
            if not stand_by(conn, [self.name], stop, backoff):
                return
            self.active = True
            try:
                while not stop.is_set():
                    self.sweep(conn)
                    backoff.reset()
                    stop.wait(SWEEP_INTERVAL_SECONDS)
            finally:
                # Cleared as the lock is given up, before any pause to reconnect (a standby may take it).
                self.active = False
