"""Waiting for the log's notification (``LISTEN ledger_events``) with a bound the kernel keeps.

The wait is ``select`` on the connection's socket, and the notifications are read through the libpq
connection (``Connection.pgconn``, psycopg's documented low-level access). A notification that arrives while
a query runs is seen by the connection's notify handler, so no wake-up is lost between a batch's read and
the next wait.
"""

from __future__ import annotations

import select
import threading
from typing import Any

import psycopg


class Listener:
    """One connection's notifications: whether one came, and a bounded wait for the next."""

    def __init__(self, conn: psycopg.Connection[Any], channel: str = "ledger_events") -> None:
        self.conn = conn
        self._heard = threading.Event()
        # With a handler, psycopg hands it the notifications a query receives instead of keeping them.
        conn.add_notify_handler(lambda _: self._heard.set())
        conn.execute(f"LISTEN {channel}")

    def forget(self) -> None:
        """Drop what has arrived so far: the next batch reads every commit it announced."""
        self._heard.clear()
        self._drain()

    def wait(self, timeout_seconds: float) -> None:
        """Return when a notification has arrived since the last ``forget``, or after ``timeout_seconds``."""
        if self._heard.is_set() or self._drain():
            return
        select.select([self.conn.pgconn.socket], [], [], timeout_seconds)
        self._drain()

    def _drain(self) -> bool:
        pgconn = self.conn.pgconn
        pgconn.consume_input()
        heard = False
        while pgconn.notifies() is not None:
            heard = True
        return heard
