"""Rebuild a projection from the first event while the old tables keep serving, then switch in one step.

The new tables are built in a schema of their own (``ledger_rebuild``), created ``LIKE`` the live ones, by
the same projection code: a connection whose ``search_path`` starts with that schema writes there without
any change to the SQL. When the rebuild has caught up, one transaction locks the live projection's
position row (pausing its runner), applies the last few events, drops the old tables, moves the new ones
into place under the old index names, and takes over the position. Readers see the old tables until that
commit and the new ones after it; nothing in between.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from projections.chain import require_intact_chain
from projections.runner import Projection, ProjectionRunner

REBUILD_SCHEMA = "ledger_rebuild"
REBUILD_BATCH_SIZE = 5_000

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RebuildResult:
    name: str
    events: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float(self.events)


def rebuild(
    database_url: str,
    projection: Projection,
    *,
    progress: Progress | None = None,
    batch_size: int = REBUILD_BATCH_SIZE,
    check_chain: bool = True,
) -> RebuildResult:
    """Rebuild one projection. First the log's hash chain is checked (``TamperedLogError`` if broken), unless
    the caller has just checked it (``check_chain=False``): views rebuilt from tampered events would hide it."""
    started = time.perf_counter()
    if check_chain:
        require_intact_chain(database_url)
    runner = ProjectionRunner(database_url, projection, batch_size=batch_size)
    tables = (*projection.tables, "projection_positions")
    with psycopg.connect(database_url, autocommit=True) as conn:
        total = conn.execute("SELECT coalesce(max(notification_id), 0) FROM ledger_events").fetchone()
        _create_schema(conn, tables)
    read = 0
    options = f"-c search_path={REBUILD_SCHEMA},public"
    with psycopg.connect(database_url, options=options) as conn:
        while count := runner.run_batch(conn):
            read += count
            if progress is not None:
                progress(read, max(read, total[0] if total else 0))
    with psycopg.connect(database_url) as conn, conn.transaction():
        read += _switch(conn, runner, tables)
    if progress is not None:
        progress(read, read)
    return RebuildResult(name=projection.name, events=read, seconds=time.perf_counter() - started)


def _create_schema(conn: psycopg.Connection[Any], tables: tuple[str, ...]) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(REBUILD_SCHEMA)))
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(REBUILD_SCHEMA)))
    for table in tables:
        conn.execute(
            sql.SQL("CREATE TABLE {}.{} (LIKE public.{} INCLUDING ALL)").format(
                sql.Identifier(REBUILD_SCHEMA), sql.Identifier(table), sql.Identifier(table)
            )
        )


def _switch(conn: psycopg.Connection[Any], runner: ProjectionRunner, tables: tuple[str, ...]) -> int:
    name = runner.projection.name
    conn.execute("INSERT INTO public.projection_positions (name) VALUES (%s) ON CONFLICT DO NOTHING", (name,))
    # The live runner takes this row lock for each batch: holding it keeps the live tables still.
    conn.execute("SELECT position FROM public.projection_positions WHERE name = %s FOR UPDATE", (name,))
    conn.execute(sql.SQL("SET LOCAL search_path = {}, public").format(sql.Identifier(REBUILD_SCHEMA)))
    read = 0
    while count := runner.run_batch(conn):
        read += count
    conn.execute("SET LOCAL search_path = public")
    for table in tables[:-1]:  # The position table stays; the projection's row is taken over below.
        old_names = _index_names(conn, "public", table)
        conn.execute(sql.SQL("DROP TABLE public.{}").format(sql.Identifier(table)))
        for shape, new_name in _index_names(conn, REBUILD_SCHEMA, table).items():
            if shape in old_names and old_names[shape] != new_name:
                conn.execute(
                    sql.SQL("ALTER INDEX {}.{} RENAME TO {}").format(
                        sql.Identifier(REBUILD_SCHEMA), sql.Identifier(new_name), sql.Identifier(old_names[shape])
                    )
                )
        conn.execute(
            sql.SQL("ALTER TABLE {}.{} SET SCHEMA public").format(sql.Identifier(REBUILD_SCHEMA), sql.Identifier(table))
        )
    conn.execute(
        "UPDATE public.projection_positions AS live SET position = built.position, updated_at = now(),"
        " last_event_at = built.last_event_at FROM ledger_rebuild.projection_positions AS built"
        " WHERE live.name = %s AND built.name = live.name",
        (name,),
    )
    conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(REBUILD_SCHEMA)))
    return read


def _index_names(conn: psycopg.Connection[Any], schema: str, table: str) -> dict[str, str]:
    """Each index of a table by its shape (its definition without its name and schema)."""
    rows = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s", (schema, table)
    ).fetchall()
    return {re.sub(r"INDEX \S+ ON \S+ ", "INDEX ON ", definition): index for index, definition in rows}
