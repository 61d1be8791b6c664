"""The migrations own the DDL: they must give exactly the tables the pinned library would create."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from ledger.application import Ledger
from ledger.persistence import postgres_env
from migrations import MigrationError, apply_migrations, migration_files


def _columns_and_keys(conn: psycopg.Connection, schema: str) -> dict[str, list[tuple[object, ...]]]:
    columns = conn.execute(
        "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name LIKE 'ledger_%%' ORDER BY table_name, ordinal_position",
        (schema,),
    ).fetchall()
    indexes = conn.execute(
        "SELECT tablename, regexp_replace(indexdef, ' ON \\S+\\.', ' ON ') FROM pg_indexes"
        " WHERE schemaname = %s AND tablename LIKE 'ledger_%%' ORDER BY 1, 2",
        (schema,),
    ).fetchall()
    types = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_type t"
        " JOIN pg_namespace n ON n.oid = t.typnamespace JOIN pg_attribute a ON a.attrelid = t.typrelid"
        " WHERE n.nspname = %s AND t.typname = 'stored_event_uuid' ORDER BY a.attnum",
        (schema,),
    ).fetchall()
    return {"columns": columns, "indexes": indexes, "types": types}


@pytest.fixture
def scratch_database(database_url: str) -> Iterator[str]:
    name = f"scratch_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    url = database_url.replace(f"/{psycopg.conninfo.conninfo_to_dict(database_url)['dbname']}", f"/{name}", 1)
    try:
        yield url
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')  # type: ignore[arg-type]


# The one deliberate addition to the library's tables: each event's link in the hash chain (0007).
ADDED_COLUMNS = [("ledger_events", "hash", "bytea", "YES")]


def test_migrations_match_the_librarys_own_tables(scratch_database: str, database_url: str) -> None:
    env = postgres_env(scratch_database)
    env["CREATE_TABLE"] = "y"
    Ledger(env).close()  # The library creates its tables in the scratch database.
    with psycopg.connect(scratch_database) as library_conn, psycopg.connect(database_url) as ours_conn:
        library, ours = _columns_and_keys(library_conn, "public"), _columns_and_keys(ours_conn, "public")
    # Every column, index and type of the library's is there exactly, and nothing else but the addition.
    assert [column for column in ours["columns"] if column not in library["columns"]] == ADDED_COLUMNS
    assert {**ours, "columns": [column for column in ours["columns"] if column not in ADDED_COLUMNS]} == library


def test_migrating_twice_applies_nothing_the_second_time(scratch_database: str) -> None:
    first = apply_migrations(scratch_database)
    assert first == [path.name for path in migration_files()]
    assert apply_migrations(scratch_database) == []


def test_a_changed_migration_is_an_error(scratch_database: str) -> None:
    apply_migrations(scratch_database)
    with psycopg.connect(scratch_database, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'tampered' WHERE name = '0001_event_store.sql'")
    with pytest.raises(MigrationError):
        apply_migrations(scratch_database)


def test_sessions_of_a_migrated_database_plan_without_jit(scratch_database: str) -> None:
    # A batch's account refresh is estimated far above jit_above_cost; compiling it cost 140 ms.
    apply_migrations(scratch_database)
    with psycopg.connect(scratch_database) as conn:
        assert conn.execute("SHOW jit").fetchone() == ("off",)
