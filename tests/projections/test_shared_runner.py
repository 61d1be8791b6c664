"""One runner for several projections: one read of the log and one transaction per batch for all of them,
each projection given only the events it follows and has not applied yet.

Given a history, when the views and the notifier are run together (as ``ledger project`` runs them), then
every table is row for row what each projection run on its own gives, whatever their starting positions,
a position held by another transaction is left alone, and a standby takes every projection or none.
"""

from __future__ import annotations

import psycopg

from ledger.application import Ledger
from projections.accounts import AccountsProjection
from projections.notifier import Notifier
from projections.outbox import Outbox
from projections.runner import ProjectionRunner
from projections.standby import lock_key, take_locks
from projections.worker import all_projections
from tests.conftest import T0
from tests.ledger.test_properties import run
from tests.projections.history import write_history
from tests.projections.test_accounts_projection import rows, script
from tests.projections.test_rebuild_and_sweeper import lots, pay, views

# Tables whose rows carry no time of their own making, compared whole; the notifications without the
# columns a database fills in (their sequence and creation time).
STATE_TABLES = ("audit_log", "audit_accounts", "notifier_accounts", "notifier_checkouts", "notifier_usage_hours")
NOTIFICATIONS = "SELECT id, type, user_id, cause, log_position, occurred_at, data FROM notifications"


def history(ledger: Ledger) -> None:
    script(ledger)
    run(ledger, "u2", [("grant", 300_000), ("reserve", 100_000), ("debit", 5), ("settle", 7), ("wait", 999)])
    write_history(ledger, users=12, events_per_user=25)
    pay(ledger)
    lots(ledger)


def everything(url: str) -> dict[str, list[tuple[object, ...]]]:
    tables = views(url)
    for table in STATE_TABLES:
        tables[table] = sorted(rows(url, f"SELECT * FROM {table}"), key=repr)
    tables["notifications"] = sorted(rows(url, NOTIFICATIONS), key=repr)
    tables["positions"] = rows(url, "SELECT name, position, last_event_at FROM projection_positions ORDER BY name")
    return tables


def forget_everything(url: str) -> None:
    """Every view and the notifier's state as a database fresh from its migrations has them."""
    with psycopg.connect(url, autocommit=True) as conn:
        for table in [*views(url), *STATE_TABLES, "notifications"]:
            conn.execute(f"TRUNCATE {table} CASCADE")
        conn.execute("UPDATE notifier_state SET settings = '{}'::jsonb")
        conn.execute("DELETE FROM projection_positions")


def together(url: str, batch_size: int) -> ProjectionRunner:
    return ProjectionRunner(url, *all_projections(), Notifier(Outbox()), batch_size=batch_size)


def test_run_together_every_table_is_what_each_projection_gives_on_its_own(
    pg_ledger: Ledger, clean_database: str
) -> None:
    # Given a history
    history(pg_ledger)
    # When every projection runs on its own, then everything is rebuilt by one runner in small batches
    for projection in [*all_projections(), Notifier(Outbox())]:
        ProjectionRunner(clean_database, projection, batch_size=13).catch_up()
    alone = everything(clean_database)
    assert alone["notifications"], "the history notifies someone"
    forget_everything(clean_database)
    read = together(clean_database, batch_size=13).catch_up()
    # Then the tables are row for row the same, and the log was read once
    assert everything(clean_database) == alone
    head = rows(clean_database, "SELECT count(*) FROM ledger_events")[0][0]
    assert read == head


def test_projections_at_different_positions_each_get_only_the_events_past_their_own(
    pg_ledger: Ledger, clean_database: str
) -> None:
    # Given a history whose accounts view is already ahead (run on its own, halfway), the others not started
    history(pg_ledger)
    alone = ProjectionRunner(clean_database, AccountsProjection(), batch_size=50)
    with psycopg.connect(clean_database) as conn:
        for _ in range(4):
            alone.run_batch(conn)
    ahead = rows(clean_database, "SELECT position FROM projection_positions WHERE name = 'accounts'")[0][0]
    assert ahead > 0
    # When one runner applies them all
    together(clean_database, batch_size=17).catch_up()
    # Then no event was applied twice or skipped: the views agree with the events, and all are at the head
    from projections.verify import verify  # noqa: PLC0415 - the views' own check, as `ledger verify` runs it

    assert verify(clean_database) == []
    head = rows(clean_database, "SELECT max(notification_id) FROM ledger_events")[0][0]
    assert {position for _, position, _ in everything(clean_database)["positions"]} == {head}


def test_a_position_another_transaction_holds_is_left_until_it_is_let_go(
    pg_ledger: Ledger, clean_database: str
) -> None:
    # Given a history, and the accounts view's position row held by another transaction (as a rebuild holds
    # it while it switches its tables over)
    history(pg_ledger)
    runner = together(clean_database, batch_size=1_000)
    with psycopg.connect(clean_database, autocommit=True) as conn:
        conn.execute("INSERT INTO projection_positions (name) VALUES ('accounts') ON CONFLICT DO NOTHING")
    with psycopg.connect(clean_database) as holder, holder.transaction():
        holder.execute("SELECT position FROM projection_positions WHERE name = 'accounts' FOR UPDATE")
        # When the runner catches up meanwhile
        runner.catch_up()
        positions = dict(
            rows(clean_database, "SELECT name, position FROM projection_positions WHERE name <> 'accounts'")
        )
    head = rows(clean_database, "SELECT max(notification_id) FROM ledger_events")[0][0]
    # Then the others went on to the head and the held one did not move
    assert set(positions.values()) == {head}
    assert rows(clean_database, "SELECT position FROM projection_positions WHERE name = 'accounts'") == [(0,)]
    # and once it is let go, it catches up too
    runner.catch_up()
    assert rows(clean_database, "SELECT position FROM projection_positions WHERE name = 'accounts'") == [(head,)]


def test_a_standby_takes_every_projections_lock_or_none(clean_database: str) -> None:
    # Given another worker holding the lock of one projection only
    runner = together(clean_database, batch_size=1_000)
    with (
        psycopg.connect(clean_database, autocommit=True) as other,
        psycopg.connect(clean_database, autocommit=True) as conn,
    ):
        other.execute("SELECT pg_advisory_lock(%s)", (lock_key("payments"),))
        # When this runner tries to become active, it does not, and holds none of the locks
        assert take_locks(conn, runner.names) is False
        held = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        ).fetchone()
        assert held == (0,)
        # and once the other lets go, it takes them all
        other.execute("SELECT pg_advisory_unlock(%s)", (lock_key("payments"),))
        assert take_locks(conn, runner.names) is True
        held = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        ).fetchone()
        assert held == (len(runner.names),)


def test_the_time_of_each_projections_last_event_is_its_own(pg_ledger: Ledger, clean_database: str) -> None:
    # Given a grant, then (a day later) a debit: the catalogue's last event is the seed, the accounts' the debit
    history(pg_ledger)
    together(clean_database, batch_size=1_000).catch_up()
    last = dict(rows(clean_database, "SELECT name, last_event_at FROM projection_positions"))
    assert last["catalogue"] == T0
    assert last["accounts"] > T0
