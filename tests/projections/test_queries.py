"""The query layer over the views: exact figures, pages that never skip or repeat, the past balance."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.application import Ledger
from ledger.commands import DebitUsage, GrantCredits, ReserveCredits
from ledger.errors import InvalidCommandError
from projections import page_queries, queries
from projections.accounts import AccountsProjection
from projections.catalogue import CatalogueProjection
from projections.payments import PaymentsProjection
from projections.runner import ProjectionRunner
from tests.conftest import T0
from tests.projections.test_accounts_projection import script


@pytest.fixture
async def pool(clean_database: str) -> AsyncIterator[Any]:
    pool = await asyncpg.create_pool(clean_database, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


def project(url: str) -> None:
    for projection in (AccountsProjection(), CatalogueProjection(), PaymentsProjection()):
        ProjectionRunner(url, projection).catch_up()


async def test_balance_counts_only_holds_that_have_not_expired(pg_ledger: Ledger, clean_database: str, pool: Any):
    pg_ledger.grant_credits(
        GrantCredits(user_id="u1", amount_millicredits=500_000, source="purchase"), idempotency=None, now=T0
    )
    pg_ledger.reserve_credits(
        ReserveCredits(user_id="u1", estimated_tokens=200_000, ttl_seconds=60), idempotency=None, now=T0
    )
    project(clean_database)
    held = await queries.balance(pool, "u1", now=T0 + timedelta(seconds=59))
    assert (held.balance_millicredits, held.reserved_millicredits, held.available_millicredits) == (
        500_000,
        200_000,
        300_000,
    )
    assert held.balance_credits == "500.000"
    expired = await queries.balance(pool, "u1", now=T0 + timedelta(seconds=60))
    assert (expired.reserved_millicredits, expired.available_millicredits) == (0, 500_000)
    nobody = await queries.balance(pool, "nobody", now=T0)
    assert (nobody.balance_millicredits, nobody.updated_at) == (0, None)


async def test_history_pages_walk_every_row_newest_first(pg_ledger: Ledger, clean_database: str, pool: Any):
    script(pg_ledger)
    project(clean_database)
    everything = await queries.history(pool, "u1", limit=500)
    assert everything.next_cursor is None
    assert len(everything.items) == 11
    assert [item.kind for item in everything.items[:3]] == ["release", "reservation", "refund"]
    walked: list[queries.HistoryItem] = []
    cursor = None
    while True:
        page = await queries.history(pool, "u1", limit=3, cursor=cursor)
        walked.extend(page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert walked == everything.items
    assert (await queries.history(pool, "someone-else")).items == []


# "0" was allowed by the document when a cursor was any string of 1 to 200 characters, and refused.
@pytest.mark.parametrize(
    "cursor", ["0", "not-base64!", "WyJhIiwiYiJd", "1.2.3", "01.0", "1.10000", "12345678901234567.0", "1.0\n", "-1.0"]
)
async def test_a_history_cursor_not_of_the_documented_form_is_refused(clean_database: str, pool: Any, cursor: str):
    with pytest.raises(InvalidCommandError) as refused:
        await queries.history(pool, "u1", cursor=cursor)
    assert refused.value.field == "cursor"


@pytest.mark.parametrize("cursor", ["0", "0.", "1 .u", "--1.u", "1.u\n", "1.caf\u00e9", "1." + "u" * 129])
async def test_a_users_cursor_not_of_the_documented_form_is_refused(clean_database: str, pool: Any, cursor: str):
    for order in ("balance_desc", "updated_desc"):
        with pytest.raises(InvalidCommandError) as refused:
            await queries.users(pool, order=order, cursor=cursor)  # type: ignore[arg-type]
        assert refused.value.field == "cursor"


def matching(pattern: str, *extremes: str) -> list[str]:
    """Strings of the pattern: its extremes, and a few dozen drawn at random (the same ones on every run)."""
    drawn = list(extremes)

    @settings(max_examples=60, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(st.from_regex(pattern, fullmatch=True))
    def draw(cursor: str) -> None:
        drawn.append(cursor)

    draw()
    return drawn


async def test_every_cursor_of_the_documented_form_is_a_position_the_lists_take(
    pg_ledger: Ledger, clean_database: str, pool: Any
):
    # The document states each list's cursor as a pattern; whatever matches it must be taken, never refused
    # and never a database error (a number too large for its column, say).
    script(pg_ledger)
    project(clean_database)
    for cursor in matching(queries.HISTORY_CURSOR_PATTERN, "0.0", "9999999999999999.9999"):
        await queries.history(pool, "u1", cursor=cursor)
    for cursor in matching(queries.USERS_CURSOR_PATTERN, "-9999999999999999." + "~" * 128, "9999999999999999.!"):
        for order in ("balance_desc", "updated_desc"):
            await queries.users(pool, order=order, cursor=cursor)  # type: ignore[arg-type]


async def test_the_balance_as_of_a_time_is_the_balance_the_account_had_then(
    pg_ledger: Ledger, clean_database: str, pool: Any
):
    had: list[tuple[Any, int]] = []
    grant = pg_ledger.grant_credits(
        GrantCredits(user_id="u1", amount_millicredits=900_000, source="purchase"), idempotency=None, now=T0
    )
    had.append((T0, grant.balance_after_millicredits))
    for minute in range(1, 8):
        debit = pg_ledger.debit_usage(
            DebitUsage(user_id="u1", tokens=10_000 * minute), idempotency=None, now=T0 + timedelta(minutes=minute)
        )
        had.append((T0 + timedelta(minutes=minute), debit.balance_after_millicredits))
    project(clean_database)
    assert (await queries.balance_as_of(pool, "u1", T0 - timedelta(seconds=1))).balance_millicredits == 0
    for moment, balance in had:
        assert (await queries.balance_as_of(pool, "u1", moment)).balance_millicredits == balance
        between = await queries.balance_as_of(pool, "u1", moment + timedelta(seconds=30))
        assert between.balance_millicredits == balance


async def test_usage_buckets_fill_the_range_with_exact_totals(pg_ledger: Ledger, clean_database: str, pool: Any):
    script(pg_ledger)
    project(clean_database)
    hourly = await queries.usage(pool, "u1", granularity="hour", start=T0, end=T0 + timedelta(hours=3), now=T0)
    assert [(b.start, b.tokens, b.events) for b in hourly.buckets] == [
        (T0, 51_000, 2),
        (T0 + timedelta(hours=1), 1_000, 1),
        (T0 + timedelta(hours=2), 0, 0),
    ]
    assert (hourly.total_tokens, hourly.total_millicredits) == (52_000, 52_000)
    daily = await queries.usage(pool, "u1", granularity="day", start=None, end=None, now=T0 + timedelta(days=1))
    assert len(daily.buckets) == 30
    assert daily.total_tokens == 52_000
    with pytest.raises(InvalidCommandError):
        await queries.usage(pool, "u1", granularity="hour", start=T0, end=T0 + timedelta(days=40), now=T0)


async def test_a_usage_range_from_a_moment_to_itself_is_empty(clean_database: str, pool: Any):
    # No schema can relate from and to, so the document allows from == to: an empty range, not a refusal.
    report = await queries.usage(pool, "u1", granularity="hour", start=T0, end=T0, now=T0 + timedelta(days=1))
    assert (report.buckets, report.total_tokens, report.total_millicredits) == ([], 0, 0)
    with pytest.raises(InvalidCommandError) as refused:
        await queries.usage(pool, "u1", granularity="day", start=T0, end=T0 - timedelta(seconds=1), now=T0)
    assert refused.value.field == "from"


async def test_a_usage_range_given_only_its_start_runs_to_now_or_its_longest(clean_database: str, pool: Any):
    now = T0 + timedelta(days=100)
    recent = await queries.usage(pool, "u1", granularity="hour", start=now - timedelta(hours=5), end=None, now=now)
    assert len(recent.buckets) == 5
    long_ago = await queries.usage(pool, "u1", granularity="hour", start=T0, end=None, now=now)
    assert len(long_ago.buckets) == 31 * 24
    to_come = await queries.usage(pool, "u1", granularity="day", start=now + timedelta(days=1), end=None, now=now)
    assert to_come.buckets == []


async def test_only_the_times_given_must_fall_in_the_years_the_document_states(clean_database: str, pool: Any):
    first = datetime(queries.MIN_YEAR, 1, 1, tzinfo=UTC)
    report = await queries.usage(pool, "u1", granularity="day", start=None, end=first, now=T0)
    assert len(report.buckets) == 30  # The default span reaches back into 1999; only what was given is checked.
    with pytest.raises(InvalidCommandError) as refused:
        await queries.usage(pool, "u1", granularity="day", start=first - timedelta(seconds=1), end=first, now=T0)
    assert refused.value.field == "from"


@pytest.mark.parametrize("order", ["balance_desc", "updated_desc"])
async def test_user_pages_never_skip_or_repeat(pg_ledger: Ledger, clean_database: str, pool: Any, order: Any):
    for n in range(23):
        pg_ledger.grant_credits(
            GrantCredits(user_id=f"user-{n:02d}", amount_millicredits=1_000 * (n % 5 + 1), source="admin"),
            idempotency=None,
            now=T0 + timedelta(seconds=n % 4),
        )
    project(clean_database)
    walked: list[queries.UserBalance] = []
    cursor = None
    while True:
        page = await queries.users(pool, order=order, limit=4, cursor=cursor)
        walked.extend(page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(u.user_id for u in walked) == [f"user-{n:02d}" for n in range(23)]
    keys = [u.balance_millicredits if order == "balance_desc" else u.updated_at for u in walked]
    assert keys == sorted(keys, reverse=True)


async def test_system_stats_are_exact(pg_ledger: Ledger, clean_database: str, pool: Any):
    script(pg_ledger)
    pg_ledger.grant_credits(
        GrantCredits(user_id="u2", amount_millicredits=100_000, source="purchase"), idempotency=None, now=T0
    )
    pg_ledger.debit_usage(DebitUsage(user_id="u2", tokens=100, analysis_id="an-2"), idempotency=None, now=T0)
    project(clean_database)
    stats = await queries.system_stats(pool, now=T0 + timedelta(days=1))
    assert stats.credits_in_circulation_millicredits == 400_000 + 99_900
    assert stats.potential_tokens == 499_900
    assert stats.users_with_balance == 2
    assert stats.tokens_used_30d == 52_100
    assert stats.analyses_30d == 2
    assert stats.api_usage_percent == 0.49  # 499,900 of 100,000,000 tokens, floored to basis points.
    assert not stats.sales_paused
    later = await queries.system_stats(pool, now=T0 + timedelta(days=40))
    assert (later.tokens_used_30d, later.analyses_30d) == (0, 0)


async def test_active_users_count_the_accounts_that_moved_in_the_window(
    pg_ledger: Ledger, clean_database: str, pool: Any
):
    moved = {"a": 10, "b": 40, "c": 80, "d": 300, "e": 301}  # Minutes after T0 of each account's last movement.
    for user, minutes in moved.items():
        pg_ledger.grant_credits(
            GrantCredits(user_id=user, amount_millicredits=1_000, source="admin"),
            idempotency=None,
            now=T0 + timedelta(minutes=minutes),
        )
    project(clean_database)
    window = timedelta(days=30)
    for since_minutes in (0, 9, 10, 30, 40, 60, 61, 299, 300, 301, 400):
        now = T0 + window + timedelta(minutes=since_minutes)
        found = await page_queries.active_users(pool, now=now, window=window)
        assert found == sum(1 for minutes in moved.values() if minutes > since_minutes), since_minutes


async def test_packages_and_settings_read_from_their_views(pg_ledger: Ledger, clean_database: str, pool: Any):
    project(clean_database)
    listed = await queries.packages(pool, active_only=True)
    assert [(p.id, p.credits, p.price.amount_minor, p.price.currency) for p in listed] == [
        ("starter", 100, 3_000, "BRL"),
        ("professional", 500, 20_000, "BRL"),
        ("enterprise", 2_000, 70_000, "BRL"),
    ]
    assert (await queries.billing_settings(pool)).hourly_token_limit == 500_000


async def test_waiting_for_a_position_returns_once_the_view_reaches_it(
    pg_ledger: Ledger, clean_database: str, pool: Any
):
    receipt = pg_ledger.grant_credits(
        GrantCredits(user_id="u1", amount_millicredits=1, source="admin"), idempotency=None, now=T0
    )
    assert not await queries.wait_for_position(pool, receipt.position, timeout_seconds=0.05)
    threading.Timer(0.1, project, args=(clean_database,)).start()
    assert await queries.wait_for_position(pool, receipt.position, timeout_seconds=5)
    await asyncio.sleep(0)
