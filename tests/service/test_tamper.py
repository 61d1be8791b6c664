"""The event log shows tampering: append-only for every role, and hash-chained so that `ledger verify` names
the first event changed, removed or moved by someone who disabled the guard, and `ledger rebuild` refuses.

The test server's role is a superuser (asserted below), the strongest attacker the database can have.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

import migrations
from ledger.application import Ledger
from ledger.commands import AdjustCredits, DebitUsage, GrantCredits, IdempotencyKey
from ledger.persistence import postgres_env
from migrations import apply_migrations, migration_files
from projections.chain import GENESIS, check_chain, event_hash
from projections.worker import all_runners
from tests.conftest import T0

SECRET = "s" * 40
GUARD = "ledger_events_append_only"
USERS = ("ana", "bo", "cy")


def ledger_command(*args: str, database_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "STRIPE_"))}
    env.update(
        PYTHONPATH=str(Path(__file__).resolve().parents[2]), LEDGER_DATABASE_URL=database_url, LEDGER_JWT_SECRET=SECRET
    )
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def write_activity(database_url: str) -> None:
    """Grants with a description, debits, and an admin's removal with a reason, for a few users; views built."""
    ledger = Ledger(postgres_env(database_url))
    try:
        ledger.seed(now=T0)
        for user in USERS:
            ledger.grant_credits(
                GrantCredits(user_id=user, amount_millicredits=50_000, source="admin", description="launch offer"),
                idempotency=None,
                now=T0,
            )
            for n in range(3):
                ledger.debit_usage(
                    DebitUsage(user_id=user, tokens=100 + n), idempotency=IdempotencyKey("svc", f"{user}-{n}"), now=T0
                )
            ledger.adjust_credits(
                AdjustCredits(user_id=user, amount_millicredits=-500, reason="duplicate grant", admin_id="ops-1"),
                idempotency=None,
                now=T0,
            )
    finally:
        ledger.close()
    with psycopg.connect(database_url) as conn:
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
    for runner in all_runners(database_url):
        # On a database migrated only partly, a view whose migration has not run yet is built once it has.
        if set(runner.projection.tables) <= tables:
            runner.catch_up()


@pytest.fixture
def tamperer(clean_database: str) -> Iterator[psycopg.Connection[Any]]:
    """A superuser's session with the append-only guard disabled, as an attacker would; enabled again after."""
    write_activity(clean_database)
    with psycopg.connect(clean_database, autocommit=True) as conn:
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        assert row == (True,), "the tampering tests need a superuser"
        conn.execute(f"ALTER TABLE ledger_events DISABLE TRIGGER {GUARD}")  # type: ignore[arg-type]
        try:
            yield conn
        finally:
            conn.execute(f"ALTER TABLE ledger_events ENABLE ALWAYS TRIGGER {GUARD}")  # type: ignore[arg-type]


def _nth(conn: psycopg.Connection[Any], topic: str, n: int) -> tuple[int, bytes]:
    row = conn.execute(
        "SELECT notification_id, state FROM ledger_events WHERE topic = %s ORDER BY notification_id OFFSET %s LIMIT 1",
        (f"ledger.CreditAccount.{topic}", n),
    ).fetchone()
    assert row is not None, f"no {topic} number {n}"
    return int(row[0]), bytes(row[1])


def _edit(conn: psycopg.Connection[Any], topic: str, n: int, field: str, value: object) -> int:
    position, state = _nth(conn, topic, n)
    payload = json.loads(state)
    assert payload[field] != value
    payload[field] = value
    edited = json.dumps(payload, separators=(",", ":")).encode()
    conn.execute("UPDATE ledger_events SET state = %s WHERE notification_id = %s", (edited, position))
    return position


def change_an_amount(conn: psycopg.Connection[Any]) -> int:
    return _edit(conn, "CreditsDebited", 4, "amount_millicredits", 1)


def change_a_user_id(conn: psycopg.Connection[Any]) -> int:
    return _edit(conn, "Opened", 1, "user_id", "mallory")


def change_a_reason(conn: psycopg.Connection[Any]) -> int:
    return _edit(conn, "CreditsRemoved", 2, "reason", "nothing to see here")


def change_a_description(conn: psycopg.Connection[Any]) -> int:
    return _edit(conn, "CreditsGranted", 0, "description", "a gift")


def remove_an_event(conn: psycopg.Connection[Any]) -> int:
    position, _ = _nth(conn, "CreditsDebited", 3)
    conn.execute("DELETE FROM ledger_events WHERE notification_id = %s", (position,))
    row = conn.execute("SELECT min(notification_id) FROM ledger_events WHERE notification_id > %s", (position,))
    after = row.fetchone()
    assert after is not None
    return int(after[0])  # The first event whose link to the one before it no longer holds.


def swap_two_positions(conn: psycopg.Connection[Any]) -> int:
    first, _ = _nth(conn, "CreditsDebited", 1)
    second, _ = _nth(conn, "CreditsDebited", 5)
    conn.execute("UPDATE ledger_events SET notification_id = -1 WHERE notification_id = %s", (first,))
    conn.execute("UPDATE ledger_events SET notification_id = %s WHERE notification_id = %s", (first, second))
    conn.execute("UPDATE ledger_events SET notification_id = %s WHERE notification_id = -1", (second,))
    return first


def swap_two_contents(conn: psycopg.Connection[Any]) -> int:
    first, first_state = _nth(conn, "CreditsDebited", 0)
    second, second_state = _nth(conn, "CreditsDebited", 2)
    conn.execute("UPDATE ledger_events SET state = %s WHERE notification_id = %s", (second_state, first))
    conn.execute("UPDATE ledger_events SET state = %s WHERE notification_id = %s", (first_state, second))
    return first


def change_an_amount_and_its_hash(conn: psycopg.Connection[Any]) -> int:
    """A careful attacker recomputes the changed event's own hash: the next event's link breaks instead."""
    position = change_an_amount(conn)
    before = conn.execute(
        "SELECT hash FROM ledger_events WHERE notification_id < %s ORDER BY notification_id DESC LIMIT 1", (position,)
    ).fetchone()
    assert before is not None
    previous = bytes(before[0])
    row = conn.execute(
        "SELECT originator_id, originator_version, topic, state FROM ledger_events WHERE notification_id = %s",
        (position,),
    ).fetchone()
    assert row is not None
    forged = event_hash(previous, position, row[0], row[1], row[2], bytes(row[3]))
    conn.execute("UPDATE ledger_events SET hash = %s WHERE notification_id = %s", (forged, position))
    after = conn.execute("SELECT min(notification_id) FROM ledger_events WHERE notification_id > %s", (position,))
    following = after.fetchone()
    assert following is not None
    return int(following[0])


@pytest.mark.parametrize(
    "tamper",
    [
        change_an_amount,
        change_a_user_id,
        change_a_reason,
        change_a_description,
        remove_an_event,
        swap_two_positions,
        swap_two_contents,
        change_an_amount_and_its_hash,
    ],
)
def test_verify_names_the_tampered_event_and_rebuild_refuses(
    tamperer: psycopg.Connection[Any], clean_database: str, tmp_path: Path, tamper: Callable[..., int]
) -> None:
    position = tamper(tamperer)
    verified = ledger_command("verify", database_url=clean_database, cwd=tmp_path)
    assert verified.returncode == 1, verified.stdout + verified.stderr
    assert verified.stdout.splitlines()[0] == f"tampered: position {position}"
    assert "an event before it is missing or was changed" in verified.stdout
    rebuilt = ledger_command("rebuild", database_url=clean_database, cwd=tmp_path)
    assert rebuilt.returncode == 1, rebuilt.stdout + rebuilt.stderr
    assert rebuilt.stderr.splitlines()[0] == f"ledger: refusing to rebuild: tampered: position {position}"
    assert "rebuilt" not in rebuilt.stdout


def test_verify_sees_events_removed_from_the_end_of_the_log(
    tamperer: psycopg.Connection[Any], clean_database: str, tmp_path: Path
) -> None:
    # The chain of what is left is intact; the views, which applied the removed events, show the loss.
    head = tamperer.execute("SELECT max(notification_id) FROM ledger_events").fetchone()
    assert head is not None
    tamperer.execute("DELETE FROM ledger_events WHERE notification_id > %s", (head[0] - 2,))
    verified = ledger_command("verify", database_url=clean_database, cwd=tmp_path)
    assert verified.returncode == 1, verified.stdout + verified.stderr
    assert verified.stdout.splitlines()[0] == f"tampered: events after position {head[0] - 2} are missing"
    assert f"applied events up to position {head[0]}" in verified.stdout
    rebuilt = ledger_command("rebuild", "accounts", database_url=clean_database, cwd=tmp_path)
    assert rebuilt.returncode == 1
    assert rebuilt.stderr.startswith("ledger: refusing to rebuild: tampered: events after position")


def test_verify_prints_the_head_of_an_intact_chain(clean_database: str, tmp_path: Path) -> None:
    write_activity(clean_database)
    with psycopg.connect(clean_database) as conn:
        row = conn.execute("SELECT notification_id, hash FROM ledger_events ORDER BY notification_id DESC LIMIT 1")
        head = row.fetchone()
        events = conn.execute("SELECT count(*) FROM ledger_events").fetchone()
    assert head is not None
    assert events is not None
    verified = ledger_command("verify", database_url=clean_database, cwd=tmp_path)
    assert (verified.returncode, verified.stdout.strip()) == (0, "0 difference(s)"), verified.stderr
    expected = f"chain intact: {events[0]:,} event(s); head at position {head[0]}, hash {bytes(head[1]).hex()}"
    assert expected in verified.stderr.splitlines()


def test_update_and_delete_fail_for_a_superuser_even_in_replica_mode(clean_database: str) -> None:
    write_activity(clean_database)
    with psycopg.connect(clean_database, autocommit=True) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)
        for statement in (
            "UPDATE ledger_events SET state = state WHERE notification_id = 1",
            "DELETE FROM ledger_events WHERE notification_id = 1",
            "UPDATE ledger_events SET hash = NULL WHERE false",
        ):
            with pytest.raises(psycopg.errors.RaiseException, match="ledger_events is append-only"):
                conn.execute(statement)  # type: ignore[arg-type]
        # A superuser's replica mode skips ordinary triggers, not these (ENABLE ALWAYS).
        conn.execute("SET session_replication_role = replica")
        with pytest.raises(psycopg.errors.RaiseException, match="append-only: DELETE"):
            conn.execute("DELETE FROM ledger_events")
    assert check_chain(clean_database).intact


def test_the_database_and_python_hash_the_same_bytes(clean_database: str) -> None:
    # Null fields, an empty state, non-ASCII text and binary bytes, written by the trigger, verified in Python.
    rows = [
        (uuid.uuid4(), 1, None, None),
        (uuid.uuid4(), 7, "tëst.Tøpic", b"\x00\xff\x00"),
        (uuid.uuid4(), 2**40, "", b""),
        (uuid.uuid4(), 1, "ledger.Other", b'{"a":1}'),
    ]
    with psycopg.connect(clean_database, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")
            for row in rows:
                conn.execute(
                    "INSERT INTO ledger_events (originator_id, originator_version, topic, state)"
                    " VALUES (%s, %s, %s, %s)",
                    row,
                )
        stored = conn.execute("SELECT notification_id, hash FROM ledger_events ORDER BY notification_id").fetchall()
    previous = GENESIS
    for (position, digest), (originator_id, version, topic, state) in zip(stored, rows, strict=True):
        previous = event_hash(previous, position, originator_id, version, topic, state)
        assert bytes(digest) == previous
    check = check_chain(clean_database)
    assert check.intact
    assert (check.events, check.head_position, check.head_hash) == (len(rows), stored[-1][0], previous)


def test_a_writer_that_forgets_the_table_lock_waits_for_it(clean_database: str) -> None:
    # Two inserts without LOCK TABLE: the chain's statement trigger takes the lock, so the second waits.
    insert = "INSERT INTO ledger_events (originator_id, originator_version, topic, state) VALUES (%s, 1, 't', '')"
    with psycopg.connect(clean_database) as first, psycopg.connect(clean_database) as second:
        first.execute(insert, (uuid.uuid4(),))
        second.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            second.execute(insert, (uuid.uuid4(),))
        second.rollback()
        first.commit()
        second.execute(insert, (uuid.uuid4(),))
        second.commit()
    assert check_chain(clean_database).events == 2
    assert check_chain(clean_database).intact


def test_the_chain_holds_under_concurrent_writers(clean_database: str, tmp_path: Path) -> None:
    # Two ledgers (as two server processes), each with its group-commit writer, debit the same accounts at once:
    # batches interleave, some conflict and are retried (their positions are skipped), all under the lock.
    ledgers = [Ledger(postgres_env(clean_database)) for _ in range(2)]
    try:
        ledgers[0].seed(now=T0)
        for user in USERS:
            ledgers[0].grant_credits(
                GrantCredits(user_id=user, amount_millicredits=10**9, source="admin"), idempotency=None, now=T0
            )
        for ledger in ledgers:
            ledger.enable_group_commit(max_batch=32, max_wait_seconds=0.002)

        def debit(n: int) -> object:
            ledger, user = ledgers[n % 2], USERS[n % len(USERS)]
            return ledger.debit_usage(
                DebitUsage(user_id=user, tokens=10 + n), idempotency=IdempotencyKey("svc", f"c-{n}"), now=T0
            )

        with ThreadPoolExecutor(16) as pool:
            receipts = list(pool.map(debit, range(400)))
    finally:
        for ledger in ledgers:
            ledger.close()
    assert len(receipts) == 400
    check = check_chain(clean_database)
    assert check.intact, check.verdict()
    with psycopg.connect(clean_database) as conn:
        debits = conn.execute("SELECT count(*) FROM ledger_events WHERE topic LIKE '%%CreditsDebited'").fetchone()
    assert debits == (400,)
    for runner in all_runners(clean_database):
        runner.catch_up()
    verified = ledger_command("verify", database_url=clean_database, cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr


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


def test_a_database_with_history_is_chained_by_the_migration(
    scratch_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a database migrated as it was before the chain, with history written by the ledger (whose writer
    # appends through the function of migration 0013, which needs nothing of the chain),
    before_chain = [path for path in migration_files() if path.name < "0007" or path.name == "0013_append_function.sql"]
    monkeypatch.setattr(migrations, "migration_files", lambda: before_chain)
    apply_migrations(scratch_database)
    write_activity(scratch_database)
    monkeypatch.undo()
    # when the remaining migrations run,
    assert "0007_tamper_evident_log.sql" in apply_migrations(scratch_database)
    # then the existing history has a valid chain, and new events continue it.
    with psycopg.connect(scratch_database) as conn:
        events = conn.execute("SELECT count(*) FROM ledger_events").fetchone()
    assert events is not None
    assert events[0] > 20
    before = check_chain(scratch_database)
    assert before.intact, before.verdict()
    assert before.events == events[0]
    write_activity(scratch_database)  # The same commands again: seeding and grants add events.
    after = check_chain(scratch_database)
    assert after.intact, after.verdict()
    assert after.events > before.events
    with psycopg.connect(scratch_database) as conn, pytest.raises(psycopg.errors.RaiseException):
        conn.execute("DELETE FROM ledger_events")
