"""The pages a buyer's browser comes back to from Stripe Checkout: the purchase's state, or "nothing charged".

They need no session and no token. The browser arrives from Stripe's site, so a ``SameSite=Strict`` cookie
is not sent, and the Checkout Session id in the address is what names the purchase; the page shows that
purchase and nothing else. They are HTML for people, not API operations, so they stay out of the OpenAPI
document.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.params import QueryParameter
from litestar.response import Template

from gateway.web.locale import Locale, credits_text, money_text
from gateway.web.render import locale_of, page, page_headers
from gateway.web.words import WORDS
from projections import queries
from projections.queries import CheckoutView

# The address carries the Checkout Session id, so neither caches nor other sites' Referer logs keep it.
# The pages run no script, post no form and load only the service's own stylesheet.
RETURN_PAGE_HEADERS = page_headers(scripts=False, forms=False)


class CheckoutReturnPages(Controller):
    path = "/credits"
    include_in_schema = False
    opt = {"exclude_from_auth": True}  # noqa: RUF012 - Litestar reads a mapping here.

    @get("/success")
    async def success(
        self,
        request: Request[Any, Any, Any],
        state: State,
        # Any value is looked up rather than refused: a malformed id is an unknown purchase, a 404 page.
        session_id: Annotated[str | None, QueryParameter(required=False)] = None,
    ) -> Template:
        locale = locale_of(request)
        checkout = None
        # PostgreSQL text cannot hold a NUL, and no Stripe id has one: such an id names no purchase.
        if session_id and "\x00" not in session_id:
            checkout = await queries.checkout(state.pool, session_id)
        if checkout is None:
            return _page(request, "not_found.html", WORDS[locale].not_found_title, status="not-found", status_code=404)
        return _page(
            request, "purchase.html", WORDS[locale].outcomes[checkout.status].title, **_purchase(checkout, locale)
        )

    @get("/cancel")
    async def cancel(self, request: Request[Any, Any, Any]) -> Template:
        return _page(request, "cancel.html", WORDS[locale_of(request)].cancel_title, status="cancelled")


def _purchase(checkout: CheckoutView, locale: Locale) -> dict[str, Any]:
    words = WORDS[locale]
    outcome = words.outcomes[checkout.status]
    credits_bought = credits_text(checkout.credits_millicredits, locale)
    details = [
        (words.package, checkout.package_name or checkout.package_id),
        (words.credits, credits_bought),
        (words.price, money_text(checkout.amount_minor, checkout.currency, locale)),
    ]
    if checkout.payment_method:
        details.append((words.payment_method, words.methods.get(checkout.payment_method, checkout.payment_method)))
    refunded = (
        words.refunded.format(amount=money_text(checkout.refunded_amount_minor, checkout.currency, locale))
        if checkout.refunded_amount_minor
        else None
    )
    return {
        "status": checkout.status,
        "outcome": outcome,
        "explanation": outcome.explanation.format(credits=credits_bought),
        "details": details,
        "refunded": refunded,
        # A state that is still to change offers a reload rather than refreshing by itself, which would move
        # the page under a screen reader's feet.
        "again_url": None
        if outcome.settled
        else f"/credits/success?{urlencode({'session_id': checkout.checkout_session_id})}",
    }


def _page(
    request: Request[Any, Any, Any], name: str, title: str, *, status_code: int = 200, **context: Any
) -> Template:
    return page(request, name, title=title, status_code=status_code, headers=RETURN_PAGE_HEADERS, **context)
