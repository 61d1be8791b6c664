"""The audit trail: one row per audited change, with who, role, reason, request id, old and new values; paged
and filtered; rebuilt identically; and `verify` catching hand edits of the catalogue's tables."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import psycopg
import pytest

from ledger.account import CreditAccount
from ledger.amounts import MILLICREDITS_PER_CREDIT
from ledger.application import Ledger
from ledger.commands import AddPackage, AdjustCredits, ChangeBillingSettings, ChangePackage, IdempotencyKey, Origin
from ledger.errors import InvalidCommandError
from projections import audit_queries
from projections.accounts import ProjectionError
from projections.audit import AuditProjection
from projections.catalogue import CatalogueProjection
from projections.rebuild import rebuild
from projections.verify import verify
from projections.worker import all_runners
from tests.conftest import T0

ADMIN = Origin(actor_role="admin", request_id="req-1")


@pytest.fixture
async def pool(clean_database: str) -> AsyncIterator[Any]:
    pool = await asyncpg.create_pool(clean_database, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


def _changes(app: Ledger) -> None:
    """One of each audited change, each at its own minute after T0."""
    key = IdempotencyKey("admin:ana", "k-1")
    adjust = AdjustCredits(user_id="u1", amount_millicredits=50_000, reason="ticket 12", admin_id="ana")
    app.adjust_credits(adjust, idempotency=key, now=T0 + timedelta(minutes=1), origin=ADMIN)
    # The same request again: answered from its marker, nothing written.
    app.adjust_credits(adjust, idempotency=key, now=T0 + timedelta(minutes=2), origin=ADMIN)
    app.adjust_credits(
        AdjustCredits(user_id="u1", amount_millicredits=-20_000, reason="double grant", admin_id="ana"),
        idempotency=None,
        now=T0 + timedelta(minutes=3),
        origin=Origin(actor_role="admin", request_id="req-2"),
    )
    app.change_billing_settings(
        ChangeBillingSettings(changes={"welcome_credits": 7, "tokens_per_credit": 1_000}, changed_by="bob"),
        now=T0 + timedelta(minutes=4),
        origin=Origin(actor_role="admin", request_id="req-3"),
    )
    app.add_package(
        AddPackage(
            package_id="studio", name="Studio", credits=9, price_amount_minor=900, currency="BRL", added_by="bob"
        ),
        now=T0 + timedelta(minutes=5),
        origin=Origin(actor_role="admin", request_id="req-4"),
    )
    app.change_package(
        ChangePackage(package_id="studio", changes={"credits": 10, "name": "Studio"}, changed_by="bob"),
        now=T0 + timedelta(minutes=6),
        origin=Origin(actor_role="admin", request_id="req-5"),
    )
    settings = app.billing_settings()
    limit = settings.api_monthly_limit_tokens
    over_millicredits = limit * MILLICREDITS_PER_CREDIT // settings.tokens_per_credit
    assert app.evaluate_sales(
        circulation_millicredits=over_millicredits, smallest_package_credits=1, now=T0 + timedelta(minutes=7)
    )
    assert app.evaluate_sales(circulation_millicredits=0, smallest_package_credits=1, now=T0 + timedelta(minutes=8))


def _project(url: str) -> None:
    for runner in all_runners(url):
        runner.catch_up()


async def test_each_change_is_one_row_with_who_why_and_the_old_and_new_values(
    pg_ledger: Ledger, clean_database: str, pool: Any
) -> None:
    _changes(pg_ledger)
    _project(clean_database)
    page = await audit_queries.audit(pool, limit=100)
    rows = [(e.action, e.actor, e.actor_role, e.target, e.old, e.new, e.request_id) for e in page.items]
    package = {
        "name": "Studio",
        "credits": 9,
        "price_amount_minor": 900,
        "currency": "BRL",
        "active": True,
        "stripe_price_id": None,
    }
    assert rows[:7] == [
        ("sales.resumed", "system", "system", "sales", {"sales_paused": True}, {"sales_paused": False}, None),
        ("sales.paused", "system", "system", "sales", {"sales_paused": False}, {"sales_paused": True}, None),
        ("package.changed", "bob", "admin", "package:studio", {"credits": 9}, {"credits": 10}, "req-5"),
        ("package.added", "bob", "admin", "package:studio", {}, package, "req-4"),
        (
            "billing_config.changed",
            "bob",
            "admin",
            "billing_config",
            {"welcome_credits": 0},
            {"welcome_credits": 7},
            "req-3",
        ),
        ("credits.adjusted", "ana", "admin", "user:u1", {}, {"amount_millicredits": -20_000}, "req-2"),
        (
            "credits.adjusted",
            "ana",
            "admin",
            "user:u1",
            {},
            {"amount_millicredits": 50_000, "kind": "promo", "expires_at": None},
            "req-1",
        ),
    ]
    assert [e.reason for e in page.items[2:7]] == [None, None, None, "double grant", "ticket 12"]
    # The seeded catalogue, added by the ledger itself, oldest last.
    seeded = page.items[7:]
    assert [(e.action, e.actor, e.actor_role, e.reason) for e in seeded] == [
        ("package.added", "system", "system", "seeded defaults")
    ] * 3
    assert [e.target for e in seeded] == ["package:enterprise", "package:professional", "package:starter"]
    assert "would pass" in (page.items[1].reason or "")
    # Exactly once each: the replayed adjustment added nothing.
    assert [e.action for e in page.items].count("credits.adjusted") == 2
    assert page.items[0].at == T0 + timedelta(minutes=8)
    assert page.next_cursor is None


async def test_the_trail_pages_newest_first_and_filters_by_actor_and_action(
    pg_ledger: Ledger, clean_database: str, pool: Any
) -> None:
    _changes(pg_ledger)
    _project(clean_database)
    everything = (await audit_queries.audit(pool, limit=100)).items
    seen, cursor = [], None
    while True:
        page = await audit_queries.audit(pool, limit=3, cursor=cursor)
        seen.extend(page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == everything
    assert [e.id for e in seen] == sorted((e.id for e in seen), reverse=True)
    by_ana = (await audit_queries.audit(pool, actor="ana", limit=100)).items
    assert {e.actor for e in by_ana} == {"ana"} and len(by_ana) == 2
    paused = (await audit_queries.audit(pool, action="sales.paused", limit=100)).items
    assert [e.action for e in paused] == ["sales.paused"]
    assert (await audit_queries.audit(pool, actor="ana", action="package.added", limit=100)).items == []
    with pytest.raises(InvalidCommandError):
        await audit_queries.audit(pool, limit=1, cursor="x")


async def test_a_rebuild_writes_the_same_rows(pg_ledger: Ledger, clean_database: str, pool: Any) -> None:
    _changes(pg_ledger)
    _project(clean_database)
    before = (await audit_queries.audit(pool, limit=100)).items
    result = rebuild(clean_database, AuditProjection())
    assert result.events > 0
    assert (await audit_queries.audit(pool, limit=100)).items == before
    with psycopg.connect(clean_database) as conn:
        assert conn.execute("SELECT position FROM projection_positions WHERE name = 'audit'").fetchone() == (
            pg_ledger.recorder.max_notification_id(),
        )


def test_verify_reports_hand_edits_of_the_settings_and_packages(pg_ledger: Ledger, clean_database: str) -> None:
    _changes(pg_ledger)
    _project(clean_database)
    assert verify(clean_database) == []
    with psycopg.connect(clean_database, autocommit=True) as conn:
        conn.execute("UPDATE billing_config SET value = 1 WHERE key = 'tokens_per_credit'")
        conn.execute("UPDATE credit_packages SET price_amount_minor = 1 WHERE id = 'starter'")
        conn.execute("DELETE FROM credit_packages WHERE id = 'studio'")
        conn.execute("INSERT INTO billing_config (key, value, updated_at) VALUES ('made_up', 3, now())")
    assert verify(clean_database) == [
        "billing_config made_up: events say nothing, view says 3",
        "billing_config tokens_per_credit: events say 1000, view says 1",
        "credit_packages starter price_amount_minor: events say 3000, view says 1",
        "credit_packages studio: events say a package, view says nothing",
    ]
    # A rebuild from the events puts the views right again.
    rebuild(clean_database, CatalogueProjection())
    assert verify(clean_database) == []


def test_the_audit_projection_stops_on_an_adjustment_of_an_account_it_never_saw_open(clean_database: str) -> None:
    # Positions are never skipped: an adjustment without its account's opening means a broken log.
    account = CreditAccount.open("u9", T0)
    account.grant(
        grant_id="g", amount_millicredits=1, source="admin", reference=None, description="x", granted_by="a", now=T0
    )
    granted = account.collect_events()[1]
    with psycopg.connect(clean_database) as conn, pytest.raises(ProjectionError):
        AuditProjection().apply(conn, [(2, granted)])
