"""A database written before grants were lots, migrated: same balances, one lot per past grant, old snapshots load.

The database is ``tests/fixtures/pre_lots/database.sql``, dumped from a run of the code before lots (its README
says which commit and how to make it again); ``expected.json`` is what that run left.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from ledger.account import CreditAccount
from ledger.application import Ledger
from ledger.ids import account_id
from ledger.lots import LotKind
from ledger.persistence import postgres_env
from migrations import apply_migrations
from projections.runner import ProjectionRunner
from projections.verify import verify
from projections.worker import all_projections

FIXTURE = Path(__file__).parent.parent / "fixtures" / "pre_lots"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())["users"]
# After the fixture's last event (October 2026) and before dave's hold expires (2026-11-01 12:00 UTC).
NOW = datetime(2026, 11, 1, tzinfo=UTC)

pytestmark = pytest.mark.postgres


@pytest.fixture
def pre_lots_database(database_url: str) -> Iterator[str]:
    """A new database holding the fixture exactly as the old code left it (migrations up to 0011)."""
    name = f"pre_lots_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    url = database_url.replace(f"/{psycopg.conninfo.conninfo_to_dict(database_url)['dbname']}", f"/{name}", 1)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute((FIXTURE / "database.sql").read_bytes())
        yield url
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def _old_snapshots(url: str) -> list[tuple[uuid.UUID, int, str, bytes]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT originator_id, originator_version, topic, state FROM ledger_snapshots ORDER BY originator_version"
        ).fetchall()


def _account(url: str, user_id: str) -> CreditAccount:
    ledger = Ledger(postgres_env(url))
    try:
        account = ledger.get_account(user_id)
    finally:
        ledger.close()
    assert account is not None
    return account


def test_the_fixture_is_as_the_old_code_left_it(pre_lots_database: str) -> None:
    snapshots = _old_snapshots(pre_lots_database)
    assert [version for _, version, _, _ in snapshots] == EXPECTED["alice"]["snapshot_versions"]
    assert all(b'"class_version"' not in bytes(state) for *_, state in snapshots)


def test_migrated_accounts_keep_their_balances_with_one_lot_per_past_grant(pre_lots_database: str) -> None:
    apply_migrations(pre_lots_database)
    for user_id, expected in EXPECTED.items():
        account = _account(pre_lots_database, user_id)
        assert account.version == expected["last_version"]
        assert account.balance_millicredits == expected["balance_millicredits"]
        assert account.reserved_millicredits(NOW) == expected["reserved_millicredits"]
        grants = {grant["grant_id"]: grant for grant in expected["grants"]}
        # Every open lot is one past grant, of the kind its source makes, never expiring; the lots and the
        # debt add up to the balance.
        assert set(account.lots) <= set(grants)
        for lot_id, lot in account.lots.items():
            assert lot["granted_millicredits"] == grants[lot_id]["amount_millicredits"]
            assert lot["expires_at_us"] is None
            assert lot["reference"] == grants[lot_id]["reference"]
            source = grants[lot_id]["source"]
            assert lot["kind"] == (LotKind.PAID if source in {"purchase", "dispute"} else LotKind.PROMO)
        remaining = sum(lot["remaining_millicredits"] for lot in account.lots.values())
        assert remaining - account.debt_millicredits == expected["balance_millicredits"]
    # alice's debits took her welcome credits (promo) before her purchase; bob's promotion repaid part of his debt.
    alice = _account(pre_lots_database, "alice")
    purchase = next(g["grant_id"] for g in EXPECTED["alice"]["grants"] if g["source"] == "purchase")
    assert {lot_id: lot["remaining_millicredits"] for lot_id, lot in alice.lots.items()} == {purchase: 17_562}
    bob = _account(pre_lots_database, "bob")
    assert (bob.lots, bob.debt_millicredits) == ({}, 35_000)


def test_snapshots_from_before_lots_are_dropped_and_one_left_behind_still_loads(pre_lots_database: str) -> None:
    snapshots = _old_snapshots(pre_lots_database)
    apply_migrations(pre_lots_database)
    assert _old_snapshots(pre_lots_database) == []
    # Put the newest old snapshot back, as if the migration had missed it: it loads as one paid lot.
    with psycopg.connect(pre_lots_database) as conn:
        conn.execute(
            "INSERT INTO ledger_snapshots (originator_id, originator_version, topic, state) VALUES (%s, %s, %s, %s)",
            snapshots[-1],
        )
    alice = _account(pre_lots_database, "alice")
    assert alice.id == account_id("alice")
    assert alice.balance_millicredits == EXPECTED["alice"]["balance_millicredits"]
    assert list(alice.lots) == ["legacy"]
    assert alice.lots["legacy"]["kind"] == LotKind.PAID
    assert alice.lots["legacy"]["remaining_millicredits"] == alice.balance_millicredits


def test_the_views_are_rebuilt_with_lots_and_agree_with_the_events(pre_lots_database: str) -> None:
    apply_migrations(pre_lots_database)
    for projection in all_projections():
        ProjectionRunner(pre_lots_database, projection).catch_up()
    assert verify(pre_lots_database) == []
    with psycopg.connect(pre_lots_database) as conn:
        balances = dict(conn.execute("SELECT user_id, balance_millicredits FROM user_credits").fetchall())
        lots = conn.execute("SELECT user_id, lot_id, remaining_millicredits FROM credit_lots").fetchall()
    assert balances == {user: expected["balance_millicredits"] for user, expected in EXPECTED.items()}
    for user_id in EXPECTED:
        account = _account(pre_lots_database, user_id)
        in_view = {lot_id: remaining for user, lot_id, remaining in lots if user == user_id}
        assert in_view == {lot_id: lot["remaining_millicredits"] for lot_id, lot in account.lots.items()}
