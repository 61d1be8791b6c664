"""Ordered SQL migrations and the small runner that applies them.

Files named ``NNNN_description.sql`` are applied in order, each in its own transaction together with
its row in ``schema_migrations``. A session-level advisory lock lets several processes run ``ledger
migrate`` at once: one applies, the others wait and then find nothing left to do. An applied file
whose content changed is an error, never silently skipped.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg

MIGRATIONS_DIR = Path(__file__).parent
# An arbitrary constant that names this service's migration lock among PostgreSQL's advisory locks.
ADVISORY_LOCK_ID = 7_311_993_001


class MigrationError(Exception):
    pass


def migration_files() -> list[Path]:
    return sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql"))


def apply_migrations(conninfo: str) -> list[str]:
    """Apply every migration not yet applied. Returns the names applied now."""
    applied_now: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_ID,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = dict(conn.execute("SELECT name, checksum FROM schema_migrations").fetchall())
            for path in migration_files():
                sql = path.read_text()
                checksum = hashlib.sha256(sql.encode()).hexdigest()
                if path.name in done:
                    if done[path.name] != checksum:
                        raise MigrationError(f"{path.name} changed after it was applied")
                    continue
                with conn.transaction():
                    conn.execute(sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (name, checksum) VALUES (%s, %s)",
                        (path.name, checksum),
                    )
                applied_now.append(path.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_ID,))
    return applied_now
