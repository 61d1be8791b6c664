"""How every page is answered: one layout's context, and the headers that keep a page to itself.

Pages run only the service's own script and style, post forms only to the service (and, for the user's
page, to Stripe Checkout, where a purchase continues), are never framed, cached or sent in a Referer.
"""

from __future__ import annotations

from typing import Any, Final

from litestar import Request
from litestar.response import Template

from gateway.web.admin_words import ADMIN_WORDS
from gateway.web.locale import Locale, negotiate
from gateway.web.session import Visitor
from gateway.web.words import WORDS

STRIPE_CHECKOUT: Final = "https://checkout.stripe.com"


def page_headers(*, scripts: bool = True, forms: bool = True, checkout: bool = False) -> dict[str, str]:
    form_action = ("'self' " + STRIPE_CHECKOUT if checkout else "'self'") if forms else "'none'"
    policy = [
        "default-src 'none'",
        "style-src 'self'",
        "img-src 'self' data:",
        f"form-action {form_action}",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
    if scripts:
        policy[1:1] = ["script-src 'self'", "connect-src 'self'"]
    return {
        # A page shows one person's account: no cache keeps it, and a shared one never serves it to another.
        "Cache-Control": "no-store",
        "Content-Security-Policy": "; ".join(policy),
        "Referrer-Policy": "no-referrer",
        "Vary": "Accept-Language, Cookie",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
    }


def locale_of(request: Request[Any, Any, Any]) -> Locale:
    return negotiate(request.headers.get("accept-language"))


def page(
    request: Request[Any, Any, Any],
    name: str,
    *,
    title: str,
    visitor: Visitor | None = None,
    section: str = "",
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Template:
    """A page in the shared layout, in the language the browser asks for."""
    locale = locale_of(request)
    return Template(
        template_name=name,
        context={
            "locale": locale,
            "words": WORDS[locale],
            "admin": ADMIN_WORDS[locale],
            "title": title,
            "visitor": visitor,
            "section": section,
            **context,
        },
        status_code=status_code,
        headers=page_headers() if headers is None else headers,
    )
