"""The eventsourcing library's environment for PostgreSQL, every option spelled out.

The library's defaults suit a demo, not a service: it creates tables from every process (which races
when several start together), waits 30 s for a pooled connection and then retries ten times (a
five-minute stall), and waits for the table lock forever. Here each is set explicitly and small, so a
caller sees an error within seconds instead.
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

from ledger.mapper import MsgspecMapper
from ledger.recorder import LedgerRecorder

MAPPER_TOPIC = f"{MsgspecMapper.__module__}:{MsgspecMapper.__qualname__}"
RECORDER_TOPIC = f"{LedgerRecorder.__module__}:{LedgerRecorder.__qualname__}"


def postgres_env(
    database_url: str,
    *,
    pool_size: int = 4,
    max_overflow: int = 4,
    connect_timeout_seconds: int = 2,
    lock_timeout_seconds: int = 5,
    idle_in_transaction_timeout_seconds: int = 5,
    cache_maxsize: int = 10_000,
) -> dict[str, str]:
    """Translate a ``postgresql://`` URL (host may be a socket directory in ``?host=``) into the env."""
    url = urlsplit(database_url)
    if url.scheme not in {"postgresql", "postgres"}:
        raise ValueError("the database URL must start with postgresql://")
    query = parse_qs(url.query)
    host = query.get("host", [url.hostname or ""])[0]
    dbname = unquote(url.path.lstrip("/"))
    if not host or not dbname:
        raise ValueError("the database URL must name a host and a database")
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_HOST": host,
        "POSTGRES_PORT": str(url.port or query.get("port", ["5432"])[0]),
        "POSTGRES_DBNAME": dbname,
        "POSTGRES_USER": unquote(url.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(url.password or ""),
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": str(max_overflow),
        "POSTGRES_MAX_WAITING": "0",
        "POSTGRES_CONNECT_TIMEOUT": str(connect_timeout_seconds),
        "POSTGRES_LOCK_TIMEOUT": str(lock_timeout_seconds),
        "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": str(idle_in_transaction_timeout_seconds),
        # A ping before every checkout costs a round trip on each command (measured: a fifth of the write
        # path). A connection that died is found by its first query instead, which the recorder retries.
        "POSTGRES_PRE_PING": "n",
        # Never on: the database functions skip the table lock, so followers could miss events.
        "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        # The migrations own the DDL; creating tables from every process races at start-up.
        "CREATE_TABLE": "n",
        "MAPPER_TOPIC": MAPPER_TOPIC,
        "APPLICATION_RECORDER_TOPIC": RECORDER_TOPIC,
        "AGGREGATE_CACHE_MAXSIZE": str(cache_maxsize),
        "AGGREGATE_CACHE_FASTFORWARD": "y",
    }


def memory_env(cache_maxsize: int = 10_000) -> dict[str, str]:
    """In-memory persistence, for aggregate and application tests that need no database."""
    return {
        "PERSISTENCE_MODULE": "eventsourcing.popo",
        "MAPPER_TOPIC": MAPPER_TOPIC,
        "AGGREGATE_CACHE_MAXSIZE": str(cache_maxsize),
        "AGGREGATE_CACHE_FASTFORWARD": "y",
    }
