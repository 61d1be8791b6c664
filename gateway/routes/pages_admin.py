"""The admin's pages about credits: the dashboard, the users, one user's account and its adjustment form.

Figures come from the same queries as the admin API; an adjustment is the API's own command, run under
the admin's principal and the idempotency key the form was rendered with, so a double submit applies once.
The dashboard's live part (figures, alerts, health, latest movements) is refreshed by the page's script
every few seconds from ``/admin/credits/live``, which renders the same fragment.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Annotated, Any, Final
from urllib.parse import quote, urlencode
from uuid import uuid4

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import Parameter, PathParameter
from litestar.response import Redirect, Template

from gateway.calls import run_command
from gateway.routes.pages_session import for_role, visitor_of
from gateway.schemas import UserId
from gateway.web import dashboard
from gateway.web.admin_words import ADMIN_WORDS, AdminWords
from gateway.web.charts import Chart, usage_chart
from gateway.web.forms import InputError, idempotency_key, millicredits
from gateway.web.locale import Locale, credits_text, day_text, hour_text
from gateway.web.render import locale_of, page
from ledger.commands import AdjustCredits
from ledger.errors import (
    ConcurrencyError,
    IdempotencyConflictError,
    InvalidCommandError,
    RemovalExceedsAvailableError,
)
from projections import page_queries, queries

LIVE_SECONDS: Final = 5
MOVEMENTS_SHOWN: Final = 10
USERS_PER_PAGE: Final = 50
HISTORY_PER_PAGE: Final = 20
REDIS_PING_SECONDS: Final = 0.5
MAX_POSITION_DIGITS: Final = 16
# The form's names for the fields the ledger names otherwise (a grant's reason is its description).
ADJUST_FIELDS: Final = {"amount_millicredits": "amount", "description": "reason", "reason": "reason"}
Query = Annotated[str | None, Parameter(required=False)]


def user_url(user_id: str, **query: str | int) -> str:
    address = f"/admin/credits/users/{quote(user_id, safe='')}"
    return f"{address}?{urlencode(query)}" if query else address


def is_user_id(text: str) -> bool:
    """A user id as the API accepts one (the same schema type)."""
    try:
        msgspec.convert(text, UserId)
    except msgspec.ValidationError:
        return False
    return True


async def wait_for_write(state: State, at: str | None, *, views: tuple[str, ...] = queries.ALL_PROJECTIONS) -> None:
    """Read-your-writes after a form's redirect: the views catch up with the write it names first."""
    if at and at.isdigit() and len(at) <= MAX_POSITION_DIGITS:
        await queries.wait_for_position(state.pool, int(at), names=views, timeout_seconds=2.0)


async def _redis_ok(state: State) -> bool | None:
    if state.redis is None:
        return None
    try:
        async with asyncio.timeout(REDIS_PING_SECONDS):
            await state.redis.ping()
    except Exception:  # noqa: BLE001 - any failure is "unavailable" on the dashboard.
        return False
    return True


def _daily(report: queries.UsageReport, chart_id: str, title: str, words: AdminWords, locale: Locale) -> Chart:
    return usage_chart(
        report,
        chart_id=chart_id,
        title=title,
        description=words.chart_desc,
        bucket_header=words.day,
        value_header=words.tokens,
        bucket_text=lambda moment: day_text(moment, locale),
        locale=locale,
    )


async def _live(state: State, words: AdminWords, locale: Locale, now: datetime) -> dict[str, Any]:
    """What the dashboard refreshes: figures, gauge, alerts, health, activity and the latest movements."""
    # Independent reads, each on its own pooled connection: the page waits for the slowest, not the sum.
    stats, lags, redis, active_users, movements = await asyncio.gather(
        queries.system_stats(state.pool, now=now),
        page_queries.view_lags(state.pool),
        _redis_ok(state),
        page_queries.active_users(state.pool, now=now, window=queries.STATS_WINDOW),
        page_queries.latest_movements(state.pool, limit=MOVEMENTS_SHOWN),
    )
    settings = state.settings
    max_lag = settings.ready_max_lag_seconds
    return {
        "stats": stats,
        "figures": dashboard.figures(stats, words, locale),
        "gauge": dashboard.gauge(stats, words, locale),
        # The figures above were read from the database, so it answers.
        "checks": dashboard.checks(
            database=True,
            lags=lags,
            max_lag_seconds=max_lag,
            redis=redis,
            stripe=state.stripe is not None and settings.stripe_webhook_secret is not None,
            words=words,
            locale=locale,
        ),
        "alerts": dashboard.alerts(
            stats, database=True, lags=lags, max_lag_seconds=max_lag, words=words, locale=locale
        ),
        "active_users": active_users,
        "movements": movements,
        "live_seconds": LIVE_SECONDS,
    }


class AdminCreditPages(Controller):
    path = "/admin/credits"
    opt = for_role("admin")

    @get("/")
    async def dashboard(self, request: Request[Any, Any, State], state: State) -> Template:
        locale = locale_of(request)
        words = ADMIN_WORDS[locale]
        now = state.clock()
        live, hourly, daily = await asyncio.gather(
            _live(state, words, locale, now),
            queries.usage(state.pool, "", granularity="hour", start=now - timedelta(hours=48), end=now, now=now),
            queries.usage(state.pool, "", granularity="day", start=now - queries.STATS_WINDOW, end=now, now=now),
        )
        return page(
            request,
            "admin/dashboard.html",
            title=words.dashboard_title,
            visitor=visitor_of(request),
            section="dashboard",
            hourly=usage_chart(
                hourly,
                chart_id="hourly",
                title=words.hourly_title,
                description=words.chart_desc,
                bucket_header=words.hour,
                value_header=words.tokens,
                bucket_text=hour_text,
                locale=locale,
            ),
            daily=_daily(daily, "daily", words.daily_title, words, locale),
            **live,
        )

    @get("/live")
    async def live(self, request: Request[Any, Any, State], state: State) -> Template:
        locale = locale_of(request)
        words = ADMIN_WORDS[locale]
        return page(
            request,
            "admin/_live.html",
            title=words.dashboard_title,
            visitor=visitor_of(request),
            **await _live(state, words, locale, state.clock()),
        )

    @get("/users")
    async def users(
        self, request: Request[Any, Any, State], state: State, q: Query = None, order: Query = None, after: Query = None
    ) -> Template:
        words = ADMIN_WORDS[locale_of(request)]
        prefix = (q or "").strip()[: page_queries.MAX_PREFIX_LENGTH]
        sort: queries.UserOrder = "updated_desc" if order == "updated_desc" else "balance_desc"
        try:
            found = await page_queries.search_users(
                state.pool, prefix=prefix, order=sort, limit=USERS_PER_PAGE, cursor=after
            )
        except InvalidCommandError:  # A cursor from nowhere: the first page instead.
            found = await page_queries.search_users(state.pool, prefix=prefix, order=sort, limit=USERS_PER_PAGE)
        return page(
            request,
            "admin/users.html",
            title=words.users_title,
            visitor=visitor_of(request),
            section="users",
            prefix=prefix,
            order=sort,
            found=found,
            user_url=user_url,
            next_url=f"?{urlencode({'q': prefix, 'order': sort, 'after': found.next_cursor})}"
            if found.next_cursor
            else None,
            first_url=f"?{urlencode({'q': prefix, 'order': sort})}" if after else None,
        )

    @get("/users/{user_id:str}")
    async def user(
        self,
        request: Request[Any, Any, State],
        state: State,
        user_id: Annotated[str, PathParameter()],
        before: Query = None,
        done: Query = None,
        at: Query = None,
    ) -> Template:
        await wait_for_write(state, at)
        return await user_page(request, state, user_id, before=before, done=done)

    @post("/adjust", status_code=303)
    async def adjust(self, request: Request[Any, Any, State], state: State) -> Response[Any]:
        form = await request.form()
        user_id = str(form.get("user_id") or "")
        entered = {"amount": str(form.get("amount") or ""), "reason": str(form.get("reason") or "")}
        words = ADMIN_WORDS[locale_of(request)]
        if not is_user_id(user_id):
            return await user_page(request, state, user_id, entered=entered, status_code=404)
        errors: dict[str, str] = {}
        status = 422
        try:
            command = AdjustCredits(
                user_id=user_id,
                amount_millicredits=millicredits(entered["amount"], "amount"),
                reason=entered["reason"],
                admin_id=visitor_of(request).sub,
            )
            receipt = await run_command(
                request, "adjust", state.ledger.adjust_credits, command, idempotency_key(form.get("idempotency_key"))
            )
        except InputError as error:
            errors[error.field] = words.refusals[error.refusal]
        except InvalidCommandError as error:
            errors[ADJUST_FIELDS.get(error.field, error.field)] = error.reason
        except RemovalExceedsAvailableError as error:
            available = credits_text(error.available_millicredits, locale_of(request))
            errors["amount"] = words.refusals["insufficient"].format(available=available)
            status = 409
        except IdempotencyConflictError:
            errors["form"] = words.refusals["idempotency"]
            status = 409
        except ConcurrencyError:
            errors["form"] = words.refusals["busy"]
            status = 503
        else:
            return Redirect(user_url(user_id, done="adjusted", at=receipt.position), status_code=303)
        return await user_page(request, state, user_id, entered=entered, errors=errors, status_code=status)


async def user_page(
    request: Request[Any, Any, State],
    state: State,
    user_id: str,
    *,
    before: str | None = None,
    done: str | None = None,
    entered: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Template:
    """One user's account: balance, holds, history, usage, and the adjustment form."""
    locale = locale_of(request)
    words = ADMIN_WORDS[locale]
    if not is_user_id(user_id):
        return page(
            request,
            "admin/user.html",
            title=words.user_title.format(user_id=user_id),
            visitor=visitor_of(request),
            section="users",
            user_id=user_id,
            missing=True,
            status_code=404,
        )
    now = state.clock()
    try:
        history = await queries.history(state.pool, user_id, limit=HISTORY_PER_PAGE, cursor=before)
    except InvalidCommandError:
        history = await queries.history(state.pool, user_id, limit=HISTORY_PER_PAGE)
    usage = await queries.usage(
        state.pool, user_id, granularity="day", start=now - queries.STATS_WINDOW, end=now, now=now
    )
    return page(
        request,
        "admin/user.html",
        title=words.user_title.format(user_id=user_id),
        visitor=visitor_of(request),
        section="users",
        status_code=status_code,
        user_id=user_id,
        missing=False,
        balance=await queries.balance(state.pool, user_id, now=now),
        account=await page_queries.account(state.pool, user_id),
        holds=await page_queries.holds(state.pool, user_id, now=now),
        history=history,
        older_url=user_url(user_id, before=history.next_cursor) if history.next_cursor else None,
        newest_url=user_url(user_id) if before else None,
        usage=_daily(usage, "user-daily", words.user_usage_title, words, locale),
        done=words.done.get(done or ""),
        entered=entered or {"amount": "", "reason": ""},
        errors=errors or {},
        # A new key for every form shown: the same form sent twice is one adjustment.
        form_key=uuid4().hex,
    )
