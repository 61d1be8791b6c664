"""What the server-rendered pages read beyond the API's own queries (``projections.queries``).

The pages call the API's queries wherever one exists, so a figure on a page is the API's figure. What is
here has no API of its own yet: the latest movements of every account, a user search by id prefix, a
user's open holds, the health of the views, and the billing configuration's audit trail, read from the
``BillingConfig`` aggregate's own events until an audit view exists.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

from ledger.errors import InvalidCommandError
from projections import audit_queries
from projections.queries import MAX_PAGE_SIZE, USERS_CURSOR_PATTERN, UserBalance, UserOrder, UserPage

# Counting a view's unapplied events stops here: past it the view is far behind whatever the exact number.
LAG_COUNT_LIMIT: Final = 100_000
MAX_PREFIX_LENGTH: Final = 128
_USERS_CURSOR = re.compile(USERS_CURSOR_PATTERN)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class Movement(msgspec.Struct, frozen=True, kw_only=True):
    """One line of any account's history, as the admin dashboard lists the latest of them."""

    position: int
    user_id: str
    kind: str
    amount_millicredits: int
    balance_after_millicredits: int
    occurred_at: datetime
    description: str | None


class Hold(msgspec.Struct, frozen=True, kw_only=True):
    reservation_id: str
    held_millicredits: int
    expires_at: datetime


class ViewLag(msgspec.Struct, frozen=True, kw_only=True):
    """How far one projection is behind the log: events not applied yet, and seconds since it last moved."""

    name: str
    position: int
    lag_events: int
    idle_seconds: float


class ConfigChange(msgspec.Struct, frozen=True, kw_only=True):
    """One billing setting changed: who, when, and the value before and after."""

    position: int
    at: datetime
    changed_by: str
    key: str
    old_value: int | None
    new_value: int


async def latest_movements(pool: Any, *, limit: int = 10) -> list[Movement]:
    """The newest movements of every account, newest first (the history table's primary key, backwards)."""
    rows = await pool.fetch(
        "SELECT position, user_id, kind, amount_millicredits, balance_after_millicredits, occurred_at, description"
        " FROM credit_transactions ORDER BY position DESC, seq DESC LIMIT $1",
        min(max(limit, 1), MAX_PAGE_SIZE),
    )
    return [Movement(**dict(row)) for row in rows]


async def active_users(pool: Any, *, now: datetime, window: timedelta) -> int:
    """Accounts whose balance or holds moved within the window: the users who did something with credits.

    The whole hours come from the accounts projection's count of accounts by the hour of their last movement,
    the window's first, partial hour from the accounts themselves: a few hundred rows, however many accounts.
    """
    since = now - window
    whole_hours_from = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    count: int = await pool.fetchval(
        "SELECT ((SELECT coalesce(sum(accounts), 0) FROM account_activity WHERE hour >= $2)"
        " + (SELECT count(*) FROM user_credits WHERE updated_at > $1 AND updated_at < $2))::bigint",
        since,
        whole_hours_from,
    )
    return count


async def sales_paused(pool: Any) -> bool:
    """Whether the oversell guard paused sales when it last decided (it decides again at each purchase)."""
    paused = await pool.fetchval("SELECT value FROM billing_config WHERE key = 'sales_paused'")
    return bool(paused == 1)


async def account(pool: Any, user_id: str) -> UserBalance | None:
    row = await pool.fetchrow(
        "SELECT user_id, balance_millicredits, reserved_millicredits, lifetime_purchased_millicredits,"
        " lifetime_used_millicredits, updated_at FROM user_credits WHERE user_id = $1",
        user_id,
    )
    return None if row is None else UserBalance(**dict(row))


async def holds(pool: Any, user_id: str, *, now: datetime) -> list[Hold]:
    """The user's open holds, soonest to expire first; a hold past its expiry no longer counts."""
    rows = await pool.fetch(
        "SELECT reservation_id, held_millicredits, expires_at FROM credit_holds"
        " WHERE user_id = $1 AND expires_at > $2 ORDER BY expires_at, reservation_id",
        user_id,
        now,
    )
    return [Hold(**dict(row)) for row in rows]


async def search_users(pool: Any, *, prefix: str, order: UserOrder, limit: int, cursor: str | None = None) -> UserPage:
    """Users whose id starts with ``prefix``, richest or most recently active first, in keyset pages.

    The cursor has the form of ``queries.users``'s: the last row's sort key and its user id.
    """
    if len(prefix) > MAX_PREFIX_LENGTH:
        raise InvalidCommandError("prefix", f"must be at most {MAX_PREFIX_LENGTH} characters")
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidCommandError("limit", f"must be from 1 to {MAX_PAGE_SIZE}")
    after_key, after_user = _decode_cursor(cursor) if cursor else (None, None)
    # LIKE's own wildcards in a user id are matched literally.
    pattern = re.sub(r"([\\%_])", r"\\\1", prefix) + "%"
    columns = (
        "user_id, balance_millicredits, reserved_millicredits, lifetime_purchased_millicredits,"
        " lifetime_used_millicredits, updated_at"
    )
    if order == "balance_desc":
        rows = await pool.fetch(
            f"SELECT {columns} FROM user_credits"  # noqa: S608 - a constant column list.
            " WHERE user_id LIKE $1 AND ($2::bigint IS NULL OR (balance_millicredits, user_id) < ($2, $3))"
            " ORDER BY balance_millicredits DESC, user_id DESC LIMIT $4",
            pattern,
            after_key,
            after_user,
            limit + 1,
        )
    else:
        rows = await pool.fetch(
            f"SELECT {columns} FROM user_credits"  # noqa: S608 - a constant column list.
            " WHERE user_id LIKE $1 AND ($2::timestamptz IS NULL OR (updated_at, user_id) < ($2, $3))"
            " ORDER BY updated_at DESC, user_id DESC LIMIT $4",
            pattern,
            None if after_key is None else _EPOCH + timedelta(microseconds=after_key),
            after_user,
            limit + 1,
        )
    items = [UserBalance(**dict(row)) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        key = last.balance_millicredits if order == "balance_desc" else _microseconds(last.updated_at)
        next_cursor = f"{key}.{last.user_id}"
    return UserPage(items=items, next_cursor=next_cursor)


def _decode_cursor(cursor: str) -> tuple[int, str]:
    if not _USERS_CURSOR.fullmatch(cursor):
        raise InvalidCommandError("cursor", "is not a cursor this list returned")
    key, user_id = cursor.split(".", 1)
    return int(key), user_id


def _microseconds(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


async def view_lags(pool: Any) -> list[ViewLag]:
    """Each projection's lag behind the log, as the readiness probe measures it (one query for them all)."""
    rows = await pool.fetch(
        "SELECT p.name, p.position, extract(epoch FROM now() - p.updated_at)::float8 AS idle_seconds,"
        " (SELECT count(*) FROM (SELECT 1 FROM ledger_events e WHERE e.notification_id > p.position LIMIT $1)"
        "  AS pending) AS behind"
        " FROM projection_positions p ORDER BY p.name",
        LAG_COUNT_LIMIT,
    )
    return [
        ViewLag(
            name=row["name"],
            position=row["position"],
            lag_events=row["behind"],
            idle_seconds=round(row["idle_seconds"], 3) if row["behind"] else 0.0,
        )
        for row in rows
    ]


async def config_changes(pool: Any, *, limit: int = 50) -> list[ConfigChange]:
    """The billing settings' changes, newest first, from the audit trail (one setting a row)."""
    page = await audit_queries.audit(pool, action="billing_config.changed", limit=min(max(limit, 1), MAX_PAGE_SIZE))
    return [
        ConfigChange(
            position=entry.id,
            at=entry.at,
            changed_by=entry.actor,
            key=key,
            old_value=entry.old.get(key),
            new_value=value,
        )
        for entry in page.items
        for key, value in entry.new.items()
    ]
