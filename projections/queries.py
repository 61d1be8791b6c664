"""Everything the gateway and the dashboards read, as asyncpg queries returning typed msgspec Structs.

The views can be a few milliseconds behind the log. A caller that must see its own write passes the
receipt's position to ``wait_for_position`` first. Lists use keyset pagination: the cursor is the sort key
of the last row returned, so a page never skips or repeats a row while new rows arrive at the top.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal

import msgspec

from ledger.amounts import MILLICREDITS_PER_CREDIT, credits_text
from ledger.config import BillingSettings
from ledger.errors import InvalidCommandError
from ledger.receipts import LotView

DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 500
# Usage series are bounded so one request cannot ask for millions of buckets.
MAX_USAGE_RANGE: Final = {"hour": timedelta(days=31), "day": timedelta(days=366)}
DEFAULT_USAGE_RANGE: Final = {"hour": timedelta(hours=24), "day": timedelta(days=30)}
STATS_WINDOW: Final = timedelta(days=30)
MIN_YEAR: Final = 2000
MAX_YEAR: Final = 3000
# The times a usage range may start or end at, as the API document states them: RFC 3339 with a zone, in the
# years MIN_YEAR to MAX_YEAR - 1, to the microsecond (a finer fraction would be rounded, possibly into the
# next year).
USAGE_TIME_PATTERN: Final = (
    r"^2[0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(\.[0-9]{1,6})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])\Z"
)
# Polling the position table is a primary-key read; a millisecond apart keeps read-your-writes tight
# without loading the database (the library's own wait backs off to 100 ms and more).
POLL_INTERVAL_SECONDS: Final = 0.001
MAX_POLL_INTERVAL_SECONDS: Final = 0.01

# A read that waits for a position waits for every view: a write may be projected by any of them (a package
# change by the catalogue, a purchase by the payments view).
ALL_PROJECTIONS: Final = ("accounts", "catalogue", "payments")

Granularity = Literal["hour", "day"]
UserOrder = Literal["balance_desc", "updated_desc"]


class BalanceView(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    balance_millicredits: int
    reserved_millicredits: int
    available_millicredits: int
    balance_credits: str
    updated_at: datetime | None
    # Open lots, in the order usage consumes them.
    lots: list[LotView] = []


class HistoryItem(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    kind: str
    amount_millicredits: int
    balance_after_millicredits: int
    occurred_at: datetime
    reference: str | None
    description: str | None


class HistoryPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[HistoryItem]
    next_cursor: str | None


class UsageBucket(msgspec.Struct, frozen=True, kw_only=True):
    start: datetime
    tokens: int
    amount_millicredits: int
    events: int
    # Credits of lots that expired in the bucket: not usage, so not in tokens, events or quotas.
    expired_millicredits: int = 0


class UsageReport(msgspec.Struct, frozen=True, kw_only=True):
    granularity: Granularity
    buckets: list[UsageBucket]
    total_tokens: int
    total_millicredits: int
    total_expired_millicredits: int = 0


class UserBalance(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    balance_millicredits: int
    reserved_millicredits: int
    lifetime_purchased_millicredits: int
    lifetime_used_millicredits: int
    updated_at: datetime


class UserPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[UserBalance]
    next_cursor: str | None


class SystemStats(msgspec.Struct, frozen=True, kw_only=True):
    credits_in_circulation_millicredits: int
    potential_tokens: int
    api_monthly_limit_tokens: int
    api_usage_percent: float
    alert_threshold_percent: int
    sales_paused: bool
    tokens_used_30d: Annotated[
        int, msgspec.Meta(description="Tokens used from the start of the hour 30 days before as_of up to as_of.")
    ]
    analyses_30d: Annotated[
        int,
        msgspec.Meta(
            description="Analyses that started in the same span: an analysis counts once, at the time of the"
            " first debit recorded with its analysis_id, whatever usage it has later."
        ),
    ]
    users_with_balance: int
    reserved_millicredits: int
    as_of: datetime
    expired_millicredits_30d: Annotated[
        int, msgspec.Meta(description="Credits of lots that expired in the same span as tokens_used_30d.")
    ] = 0


class BalanceAsOf(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    balance_millicredits: int
    balance_credits: str
    as_of: datetime
    position: int | None


class Price(msgspec.Struct, frozen=True, kw_only=True):
    amount_minor: int
    currency: str


class PackageView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    credits: int
    price: Price
    active: bool


class AdminPackageView(PackageView, frozen=True, kw_only=True):
    stripe_price_id: str | None
    updated_at: datetime


# Cursors: opaque to callers, the last row's sort key to us, written so that a pattern describes every cursor
# exactly. Any string of that pattern is a keyset position the query takes (the integers fit the columns they
# are compared with: 16 digits in a bigint, 4 in the smallint seq), so the document can say precisely what a
# cursor is and the server refuses nothing it allows. (Patterns end in \Z, as gateway.schemas explains.)
_INTEGER = r"(0|[1-9][0-9]{0,15})"
# History: `<position>.<seq>` of the last item.
HISTORY_CURSOR_PATTERN: Final = rf"^{_INTEGER}\.(0|[1-9][0-9]{{0,3}})\Z"
# Users: `<key>.<user_id>`, the key being the balance or the microseconds since the epoch of the last change
# (signed: a balance may be negative). The user id is what the API allows one to be.
USERS_CURSOR_PATTERN: Final = rf"^-?{_INTEGER}\.[\x21-\x7e]{{1,128}}\Z"
CURSOR_MAX_LENGTH: Final = 1 + 16 + 1 + 128
_HISTORY_CURSOR = re.compile(HISTORY_CURSOR_PATTERN)
_USERS_CURSOR = re.compile(USERS_CURSOR_PATTERN)


def _history_cursor(position: int, seq: int) -> str:
    return f"{position}.{seq}"


def _users_cursor(key: int, user_id: str) -> str:
    return f"{key}.{user_id}"


def _decode_history_cursor(cursor: str) -> tuple[int, int]:
    if not _HISTORY_CURSOR.fullmatch(cursor):
        raise InvalidCommandError("cursor", "is not a cursor this list returned")
    position, seq = cursor.split(".")
    return int(position), int(seq)


def _decode_users_cursor(cursor: str) -> tuple[int, str]:
    if not _USERS_CURSOR.fullmatch(cursor):
        raise InvalidCommandError("cursor", "is not a cursor this list returned")
    key, user_id = cursor.split(".", 1)
    return int(key), user_id


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidCommandError("limit", f"must be from 1 to {MAX_PAGE_SIZE}")
    return limit


# User reads.


_LOTS_DECODER: Final = msgspec.json.Decoder(list[LotView])


async def balance(pool: Any, user_id: str, *, now: datetime) -> BalanceView:
    """The user's balance and open lots; holds and lots past their expiry no longer count, even before the
    sweeper records their expiry."""
    row = await pool.fetchrow(
        "SELECT u.balance_millicredits - (SELECT coalesce(sum(l.remaining_millicredits), 0)::bigint"
        "  FROM credit_lots l WHERE l.user_id = u.user_id AND l.expires_at <= $2) AS balance_millicredits,"
        " u.updated_at,"
        " (SELECT coalesce(sum(h.held_millicredits), 0)::bigint FROM credit_holds h"
        "  WHERE h.user_id = u.user_id AND h.expires_at > $2) AS reserved,"
        " (SELECT coalesce(json_agg(json_build_object('lot_id', l.lot_id, 'kind', l.kind,"
        "   'granted_millicredits', l.granted_millicredits, 'remaining_millicredits', l.remaining_millicredits,"
        "   'expires_at', l.expires_at) ORDER BY l.expires_at NULLS LAST, l.kind <> 'promo', l.granted_at,"
        "   l.position), '[]')::text"
        "  FROM credit_lots l WHERE l.user_id = u.user_id AND (l.expires_at IS NULL OR l.expires_at > $2)) AS lots"
        " FROM user_credits u WHERE u.user_id = $1",
        user_id,
        now,
    )
    if row is None:
        return BalanceView(
            user_id=user_id,
            balance_millicredits=0,
            reserved_millicredits=0,
            available_millicredits=0,
            balance_credits=credits_text(0),
            updated_at=None,
        )
    return BalanceView(
        user_id=user_id,
        balance_millicredits=row["balance_millicredits"],
        reserved_millicredits=row["reserved"],
        available_millicredits=row["balance_millicredits"] - row["reserved"],
        balance_credits=credits_text(row["balance_millicredits"]),
        updated_at=row["updated_at"],
        lots=_LOTS_DECODER.decode(row["lots"]),
    )


async def history(pool: Any, user_id: str, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None) -> HistoryPage:
    """The user's movements, newest first."""
    limit = _limit(limit)
    after = _decode_history_cursor(cursor) if cursor else (2**63 - 1, 0)
    rows = await pool.fetch(
        "SELECT position, seq, id, kind, amount_millicredits, balance_after_millicredits, occurred_at,"
        " reference, description FROM credit_transactions"
        " WHERE user_id = $1 AND (position, seq) < ($2, $3) ORDER BY position DESC, seq DESC LIMIT $4",
        user_id,
        after[0],
        after[1],
        limit + 1,
    )
    items = [
        HistoryItem(
            id=r["id"],
            kind=r["kind"],
            amount_millicredits=r["amount_millicredits"],
            balance_after_millicredits=r["balance_after_millicredits"],
            occurred_at=r["occurred_at"],
            reference=r["reference"],
            description=r["description"],
        )
        for r in rows[:limit]
    ]
    last = rows[limit - 1] if len(rows) > limit else None
    return HistoryPage(items=items, next_cursor=_history_cursor(last["position"], last["seq"]) if last else None)


async def balance_as_of(pool: Any, user_id: str, at: datetime) -> BalanceAsOf:
    """The balance the user had at a past moment: the balance after the last movement at or before it."""
    row = await pool.fetchrow(
        "SELECT balance_after_millicredits, position FROM credit_transactions"
        " WHERE user_id = $1 AND occurred_at <= $2 ORDER BY occurred_at DESC, position DESC, seq DESC LIMIT 1",
        user_id,
        at,
    )
    amount = row["balance_after_millicredits"] if row else 0
    return BalanceAsOf(
        user_id=user_id,
        balance_millicredits=amount,
        balance_credits=credits_text(amount),
        as_of=at,
        position=row["position"] if row else None,
    )


async def usage(
    pool: Any,
    user_id: str,
    *,
    granularity: Granularity,
    start: datetime | None,
    end: datetime | None,
    now: datetime,
) -> UsageReport:
    """Token usage in hourly or daily buckets, oldest first, with empty buckets filled with zeros.

    Without ``start`` and ``end``: the default span up to now. With only ``end``: the default span up to it.
    With only ``start``: from it up to now, at most the longest range (a start still to come is an empty
    range). ``start == end`` is an empty range: no buckets, totals 0.
    """
    step = timedelta(hours=1) if granularity == "hour" else timedelta(days=1)
    for name, moment in (("from", start), ("to", end)):
        if moment is not None and moment.tzinfo is None:
            raise InvalidCommandError(name, "must be an RFC 3339 time with a zone, e.g. 2026-01-01T00:00:00Z")
        # The year as written (in the time's own zone), which is what USAGE_TIME_PATTERN describes.
        if moment is not None and not MIN_YEAR <= moment.year < MAX_YEAR:
            raise InvalidCommandError(name, f"must be in the years {MIN_YEAR} to {MAX_YEAR - 1}")
    longest = MAX_USAGE_RANGE[granularity]
    if start is None:
        end = end or now
        start = end - DEFAULT_USAGE_RANGE[granularity]
    elif end is None:
        end = min(max(now, start), start + longest)
    if start > end:
        raise InvalidCommandError("from", "must not be after to")
    if end - start > longest:
        raise InvalidCommandError("from", f"the range is at most {longest.days} days")
    if start == end:
        return UsageReport(granularity=granularity, buckets=[], total_tokens=0, total_millicredits=0)
    first = _truncate(start, granularity)
    rows = await pool.fetch(
        "SELECT bucket_start, tokens, amount_millicredits, events, expired_millicredits FROM usage_rollups"
        " WHERE user_id = $1 AND granularity = $2 AND bucket_start >= $3 AND bucket_start < $4"
        " ORDER BY bucket_start",
        user_id,
        granularity,
        first,
        end,
    )
    found = {r["bucket_start"]: r for r in rows}
    buckets = []
    moment = first
    count = -(-(end - first) // step)  # Whole buckets from the first to the one holding ``end``.
    for _ in range(count):
        r = found.get(moment)
        buckets.append(
            UsageBucket(
                start=moment,
                tokens=r["tokens"] if r else 0,
                amount_millicredits=r["amount_millicredits"] if r else 0,
                events=r["events"] if r else 0,
                expired_millicredits=r["expired_millicredits"] if r else 0,
            )
        )
        moment += step
    return UsageReport(
        granularity=granularity,
        buckets=buckets,
        total_tokens=sum(b.tokens for b in buckets),
        total_millicredits=sum(b.amount_millicredits for b in buckets),
        total_expired_millicredits=sum(b.expired_millicredits for b in buckets),
    )


def _truncate(moment: datetime, granularity: Granularity) -> datetime:
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if granularity == "day" else moment


# Admin reads.


async def users(
    pool: Any, *, order: UserOrder = "balance_desc", limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
) -> UserPage:
    limit = _limit(limit)
    columns = (
        "user_id, balance_millicredits, reserved_millicredits, lifetime_purchased_millicredits,"
        " lifetime_used_millicredits, updated_at"
    )
    if order == "balance_desc":
        after_balance, after_user = _decode_users_cursor(cursor) if cursor else (None, None)
        rows = await pool.fetch(
            f"SELECT {columns} FROM user_credits"  # noqa: S608 - a constant column list.
            " WHERE $1::bigint IS NULL OR (balance_millicredits, user_id) < ($1, $2)"
            " ORDER BY balance_millicredits DESC, user_id DESC LIMIT $3",
            after_balance,
            after_user,
            limit + 1,
        )
    else:
        after_us, after_user = _decode_users_cursor(cursor) if cursor else (None, None)
        rows = await pool.fetch(
            f"SELECT {columns} FROM user_credits"  # noqa: S608 - a constant column list.
            " WHERE $1::timestamptz IS NULL OR (updated_at, user_id) < ($1, $2)"
            " ORDER BY updated_at DESC, user_id DESC LIMIT $3",
            _from_us(after_us) if after_us is not None else None,
            after_user,
            limit + 1,
        )
    items = [UserBalance(**dict(r)) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        key = last.balance_millicredits if order == "balance_desc" else _to_us(last.updated_at)
        next_cursor = _users_cursor(key, last.user_id)
    return UserPage(items=items, next_cursor=next_cursor)


def _to_us(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_us(value: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value)


async def billing_settings(pool: Any) -> BillingSettings:
    """The billing configuration from its view (defaults for anything not projected yet)."""
    return (await _config(pool))[0]


async def _config(pool: Any) -> tuple[BillingSettings, bool]:
    """The billing settings, and whether the oversell guard has paused sales."""
    rows = {r["key"]: r["value"] for r in await pool.fetch("SELECT key, value FROM billing_config")}
    return BillingSettings.from_values(rows), rows.get("sales_paused") == 1


async def system_stats(pool: Any, *, now: datetime) -> SystemStats:
    """The admin dashboard's figures: what was sold against what the upstream API allows."""
    settings, paused = await _config(pool)
    totals = await pool.fetchrow(
        "SELECT credits_in_circulation_millicredits, users_with_balance, reserved_millicredits"
        " FROM account_totals WHERE name = 'all'"
    )
    # The system's hourly roll-ups of the window: at most 721 rows, whatever the number of accounts.
    used = await pool.fetchrow(
        "SELECT coalesce(sum(tokens), 0)::bigint AS tokens, coalesce(sum(analyses), 0)::bigint AS analyses,"
        " coalesce(sum(expired_millicredits), 0)::bigint AS expired FROM usage_rollups"
        " WHERE user_id = '' AND granularity = 'hour' AND bucket_start >= $1 AND bucket_start <= $2",
        _truncate(now - STATS_WINDOW, "hour"),
        now,
    )
    circulation = totals["credits_in_circulation_millicredits"] if totals else 0
    potential = circulation * settings.tokens_per_credit // MILLICREDITS_PER_CREDIT
    # Basis points in integers, then one rounding for display: the comparison itself stays exact.
    basis_points = potential * 10_000 // settings.api_monthly_limit_tokens
    return SystemStats(
        credits_in_circulation_millicredits=circulation,
        potential_tokens=potential,
        api_monthly_limit_tokens=settings.api_monthly_limit_tokens,
        api_usage_percent=basis_points / 100,
        alert_threshold_percent=settings.alert_threshold_percent,
        sales_paused=paused,
        tokens_used_30d=used["tokens"],
        analyses_30d=used["analyses"],
        expired_millicredits_30d=used["expired"],
        users_with_balance=totals["users_with_balance"] if totals else 0,
        reserved_millicredits=totals["reserved_millicredits"] if totals else 0,
        as_of=now,
    )


async def packages(pool: Any, *, active_only: bool) -> list[AdminPackageView]:
    rows = await pool.fetch(
        "SELECT id, name, credits, price_amount_minor, currency, active, stripe_price_id, updated_at"
        " FROM credit_packages WHERE active OR NOT $1 ORDER BY price_amount_minor, id",
        active_only,
    )
    return [
        AdminPackageView(
            id=r["id"],
            name=r["name"],
            credits=r["credits"],
            price=Price(amount_minor=r["price_amount_minor"], currency=r["currency"]),
            active=r["active"],
            stripe_price_id=r["stripe_price_id"],
            updated_at=r["updated_at"],
        )
        for r in rows
    ]


class CheckoutView(msgspec.Struct, frozen=True, kw_only=True):
    """One Checkout Session as its buyer sees it on returning from Stripe: what was bought and how it went."""

    checkout_session_id: str
    status: Literal["open", "pending", "paid", "failed", "expired"]
    payment_method: str | None
    package_id: str
    package_name: str | None
    credits_millicredits: int
    amount_minor: int
    currency: str
    refunded_amount_minor: int
    updated_at: datetime


async def checkout(pool: Any, session_id: str) -> CheckoutView | None:
    """The purchase a Checkout Session started, or None when the payments view has no such session."""
    row = await pool.fetchrow(
        "SELECT p.checkout_session_id, p.status, p.payment_method, p.package_id, c.name AS package_name,"
        " p.credits_millicredits, p.amount_minor, p.currency, p.refunded_amount_minor, p.updated_at"
        " FROM stripe_payments p LEFT JOIN credit_packages c ON c.id = p.package_id"
        " WHERE p.checkout_session_id = $1",
        session_id,
    )
    return None if row is None else msgspec.convert(dict(row), CheckoutView)


# Read-your-writes.


async def wait_for_position(
    pool: Any, position: int, *, names: tuple[str, ...] = ALL_PROJECTIONS, timeout_seconds: float = 2.0
) -> bool:
    """Wait until every named projection has applied the log up to ``position``. False on timeout."""
    if position <= 0:
        return True
    deadline = time.monotonic() + timeout_seconds
    interval = POLL_INTERVAL_SECONDS
    while True:
        reached = await pool.fetchval(
            "SELECT count(*) FROM projection_positions WHERE name = ANY($1::text[]) AND position >= $2",
            list(names),
            position,
        )
        if reached == len(names):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)
        interval = min(interval * 2, MAX_POLL_INTERVAL_SECONDS)
