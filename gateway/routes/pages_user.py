"""The user's own page: the balance (live), the history, usage, and the packages to buy.

The account is the session's user, as it is the token's ``sub`` in the API: no address names another
account. The live balance comes over a server-sent event stream opened with the session cookie
(``EventSource`` cannot send a bearer header), fed by the same change notices as the API's stream. A buy
button posts to ``/credits/buy``, which opens the Checkout exactly as ``POST /api/credits/purchase``
does and sends the browser on to Stripe.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Final
from uuid import uuid4

import msgspec
import stripe
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import Parameter
from litestar.plugins.problem_details import ProblemDetailsException
from litestar.response import Redirect, ServerSentEvent, Template

from gateway.live import balance_events
from gateway.routes.pages_session import for_role, visitor_of
from gateway.routes.payments import start_purchase
from gateway.web.charts import usage_chart
from gateway.web.forms import idempotency_key
from gateway.web.locale import Locale, credits_text, day_text
from gateway.web.render import locale_of, page, page_headers
from gateway.web.words import WORDS
from ledger.errors import InvalidCommandError, NotFoundError, SalesPausedError
from projections import page_queries, queries

HISTORY_PER_PAGE: Final = 20
READ_WAIT_SECONDS: Final = 2.0
BALANCE_FIGURES: Final = ("balance_millicredits", "reserved_millicredits", "available_millicredits")
Query = Annotated[str | None, Parameter(required=False)]


def balance_figures(view: queries.BalanceView, locale: Locale) -> dict[str, tuple[int, str]]:
    """Each balance figure as the API gives it and as the page writes it."""
    return {name: (getattr(view, name), credits_text(getattr(view, name), locale)) for name in BALANCE_FIGURES}


class MyCreditsPage(Controller):
    path = "/credits"
    opt = for_role("user")

    @get("/")
    async def show(self, request: Request[Any, Any, State], state: State, before: Query = None) -> Template:
        return await my_page(request, state, before=before)

    @get("/history")
    async def history(self, request: Request[Any, Any, State], state: State) -> Template:
        """The newest page of the history alone, which the page's script swaps in after a balance change."""
        words = WORDS[locale_of(request)]
        found = await queries.history(state.pool, visitor_of(request).sub, limit=HISTORY_PER_PAGE)
        return page(request, "user/_history.html", title=words.mine.history, history=found)

    @get("/stream")
    async def stream(self, request: Request[Any, Any, State], state: State) -> ServerSentEvent:
        user_id = visitor_of(request).sub
        locale = locale_of(request)

        async def read(position: int) -> str:
            if position:
                await queries.wait_for_position(state.pool, position, timeout_seconds=READ_WAIT_SECONDS)
            view = await queries.balance(state.pool, user_id, now=state.clock())
            return msgspec.json.encode(balance_figures(view, locale)).decode()

        return ServerSentEvent(balance_events(state.channels, user_id, read), headers={"Cache-Control": "no-store"})

    @post("/buy", status_code=303)
    async def buy(self, request: Request[Any, Any, State], state: State) -> Response[Any]:
        form = await request.form()
        package_id = str(form.get("package_id") or "")
        try:
            started = await start_purchase(
                state, visitor_of(request).principal, package_id, idempotency_key(form.get("idempotency_key"))
            )
        except SalesPausedError:
            return await my_page(request, state, refusal="sales-paused", status_code=409)
        except NotFoundError:
            return await my_page(request, state, refusal="not-found", status_code=404)
        except stripe.APIConnectionError:
            return await my_page(request, state, refusal="payments-unavailable", status_code=503)
        except ProblemDetailsException as error:
            refusal = error.type_ if error.type_ == "payment-provider-error" else "payments-unavailable"
            return await my_page(request, state, refusal=refusal, detail=error.detail, status_code=error.status_code)
        return Redirect(started.checkout_url, status_code=303)


async def my_page(
    request: Request[Any, Any, State],
    state: State,
    *,
    before: str | None = None,
    refusal: str | None = None,
    detail: str = "",
    status_code: int = 200,
) -> Template:
    locale = locale_of(request)
    words = WORDS[locale].mine
    user_id = visitor_of(request).sub
    now = state.clock()
    balance = await queries.balance(state.pool, user_id, now=now)
    try:
        history = await queries.history(state.pool, user_id, limit=HISTORY_PER_PAGE, cursor=before)
    except InvalidCommandError:  # A cursor from nowhere: the newest page instead.
        history = await queries.history(state.pool, user_id, limit=HISTORY_PER_PAGE)
    usage = await queries.usage(
        state.pool, user_id, granularity="day", start=now - timedelta(days=30), end=now, now=now
    )
    return page(
        request,
        "user/credits.html",
        title=words.title,
        visitor=visitor_of(request),
        section="mine",
        status_code=status_code,
        # The buy buttons post here and continue to Stripe Checkout.
        headers=page_headers(checkout=True),
        figures=balance_figures(balance, locale),
        lots=balance.lots,
        history=history,
        older_url=f"/credits?before={history.next_cursor}" if history.next_cursor else None,
        newest_url="/credits" if before else None,
        usage=usage_chart(
            usage,
            chart_id="usage",
            title=words.usage_title,
            description=words.usage_desc,
            bucket_header=words.day,
            value_header=words.tokens,
            bucket_text=lambda moment: day_text(moment, locale),
            locale=locale,
        ),
        packages=await queries.packages(state.pool, active_only=True),
        sales_paused=await page_queries.sales_paused(state.pool),
        refusal=words.refusals[refusal].format(detail=detail) if refusal else None,
        form_key=uuid4().hex,
    )
