"""The accounts projection's copy in memory: the views come out as if every batch read its rows back.

Given a history, when batches run across a failure, across another worker's batches or over a bound of
one account, then the rows equal those of a projection that reads everything, and ``verify`` finds no
difference.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from ledger.application import Ledger
from ledger.commands import DebitUsage, GrantCredits
from projections.accounts import AccountsProjection, ProjectionError
from projections.rebuild import rebuild
from projections.runner import ProjectionRunner
from projections.verify import verify
from tests.conftest import T0
from tests.ledger.test_properties import run
from tests.projections.test_accounts_projection import _views, rows, script


class FailsWhenArmed:
    """A projection after the accounts one in the same runner: its failure rolls the whole batch back."""

    name = "fails-when-armed"
    tables: tuple[str, ...] = ()
    topic_prefix: str | tuple[str, ...] = "ledger.CreditAccount."

    def __init__(self) -> None:
        self.armed = False

    def apply(self, conn: psycopg.Connection[Any], events: list[tuple[int, Any]]) -> None:
        if self.armed:
            self.armed = False
            raise RuntimeError("this batch fails after the accounts projection applied it")


def grant(ledger: Ledger, user: str, amount: int) -> None:
    ledger.grant_credits(
        GrantCredits(user_id=user, amount_millicredits=amount, source="admin"), idempotency=None, now=T0
    )


def debit(ledger: Ledger, user: str, tokens: int) -> None:
    ledger.debit_usage(DebitUsage(user_id=user, tokens=tokens), idempotency=None, now=T0)


def balance(url: str, user: str) -> int:
    return int(rows(url, f"SELECT balance_millicredits FROM user_credits WHERE user_id = '{user}'")[0][0])


def test_a_batch_that_failed_is_applied_again_from_the_tables(pg_ledger: Ledger, clean_database: str) -> None:
    grant(pg_ledger, "u1", 500_000)
    failing = FailsWhenArmed()
    runner = ProjectionRunner(clean_database, AccountsProjection(), failing)
    runner.catch_up()
    debit(pg_ledger, "u1", 7_000)
    failing.armed = True
    with pytest.raises(RuntimeError):
        runner.catch_up()
    runner.catch_up()
    assert balance(clean_database, "u1") == 500_000 - 7_000
    assert verify(clean_database) == []


def test_a_position_another_worker_moved_has_the_rows_read_again(pg_ledger: Ledger, clean_database: str) -> None:
    grant(pg_ledger, "u1", 500_000)
    first = ProjectionRunner(clean_database, AccountsProjection())
    first.catch_up()
    debit(pg_ledger, "u1", 7_000)
    ProjectionRunner(clean_database, AccountsProjection()).catch_up()  # A standby that took over for a while.
    debit(pg_ledger, "u1", 11_000)
    first.catch_up()
    assert balance(clean_database, "u1") == 500_000 - 7_000 - 11_000
    assert verify(clean_database) == []


def test_a_rebuild_that_switches_at_the_live_position_has_the_rows_read_again(
    pg_ledger: Ledger, clean_database: str
) -> None:
    grant(pg_ledger, "u1", 500_000)
    ProjectionRunner(clean_database, AccountsProjection()).catch_up()
    with psycopg.connect(clean_database, autocommit=True) as conn:  # A view gone wrong, which a rebuild repairs.
        conn.execute("UPDATE user_credits SET balance_millicredits = 400000")
    debit(pg_ledger, "u1", 7_000)
    live = ProjectionRunner(clean_database, AccountsProjection())
    live.catch_up()
    rebuild(clean_database, AccountsProjection())  # No event since: the position stays where the live runner left it.
    debit(pg_ledger, "u1", 11_000)
    live.catch_up()
    assert balance(clean_database, "u1") == 500_000 - 7_000 - 11_000
    assert verify(clean_database) == []


def test_a_balance_row_gone_from_the_view_stops_the_projection_though_it_is_in_memory(
    pg_ledger: Ledger, clean_database: str
) -> None:
    grant(pg_ledger, "u1", 500_000)
    runner = ProjectionRunner(clean_database, AccountsProjection())
    runner.catch_up()
    with psycopg.connect(clean_database, autocommit=True) as conn:
        conn.execute("DELETE FROM user_credits")
    debit(pg_ledger, "u1", 1)
    with pytest.raises(ProjectionError, match="gone from the view"):
        runner.catch_up()


def test_a_bound_of_one_account_gives_the_same_rows(pg_ledger: Ledger, clean_database: str) -> None:
    script(pg_ledger)
    for user in ("u2", "u3"):
        run(pg_ledger, user, [("grant", 300_000), ("debit", 5), ("grant", 20_000), ("reserve", 90_000), ("debit", 9)])
        run(pg_ledger, user, [("settle", 7), ("debit", 400), ("wait", 999), ("debit", 3)])
    ProjectionRunner(clean_database, AccountsProjection(most_accounts=1), batch_size=2).catch_up()
    bounded = [*_views(clean_database), rows(clean_database, "SELECT * FROM credit_lots ORDER BY user_id, lot_id")]
    with psycopg.connect(clean_database, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(AccountsProjection.tables)}")  # type: ignore[arg-type]
        conn.execute("DELETE FROM projection_positions WHERE name = 'accounts'")
    ProjectionRunner(clean_database, AccountsProjection(), batch_size=500).catch_up()
    unbounded = [*_views(clean_database), rows(clean_database, "SELECT * FROM credit_lots ORDER BY user_id, lot_id")]
    assert bounded == unbounded
    assert verify(clean_database) == []
