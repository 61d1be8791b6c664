"""One active worker per job, the others standing by: PostgreSQL advisory locks held by a connection.

A job (a projection, the hold sweeper, the system watch) is active in the process whose connection holds
its lock; when that connection goes away, so does the lock, and a standby takes it. A job with several
locks (a runner of several projections) takes them all or none, so two processes never split one.
"""

from __future__ import annotations

import threading
import zlib
from typing import Any

import psycopg

from projections.recovery import Backoff

STANDBY_POLL_SECONDS = 1.0
CONNECT_TIMEOUT_SECONDS = 5


def lock_key(name: str) -> int:
    """A stable advisory-lock key per job name."""
    return 7_311_000_000 + zlib.crc32(name.encode())


def connect(database_url: str, job: str) -> psycopg.Connection[Any]:
    """The connection a job holds its locks with and works on."""
    return psycopg.connect(
        database_url,
        autocommit=True,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        # Named, so an operator sees in pg_stat_activity which connection holds which lock.
        application_name=f"ledger {job}",
    )


def take_locks(conn: psycopg.Connection[Any], names: list[str]) -> bool:
    """Take every named job's lock on this connection, or none."""
    keys = [lock_key(name) for name in names]
    taken = [key for key in keys if conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone() == (True,)]
    if len(taken) == len(keys):
        return True
    for key in taken:
        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
    return False


def stand_by(conn: psycopg.Connection[Any], names: list[str], stop: threading.Event, backoff: Backoff) -> bool:
    """Wait until this connection holds every named lock: True then, False if stopped first."""
    while not stop.is_set():
        if take_locks(conn, names):
            return True
        backoff.reset()
        stop.wait(STANDBY_POLL_SECONDS)
    return False
