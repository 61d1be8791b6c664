"""Server-rendered pages: the template engine, the service's own static files, and the words pages show.

Every asset a page needs is served by the service itself, so the pages work on a closed network and no
third party learns who opened them. Paths are built from this file, not from the working directory, so
the installed wheel and a source checkout find the same files.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import pass_context
from jinja2.runtime import Context
from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template import TemplateConfig

from gateway.web.locale import Locale, credits_text, integer_text, money_text, percent_text, when_text

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
# The service's own files change with a release but keep their names, so browsers keep them an hour and
# then revalidate with the ETag the static router sends.
STATIC_MAX_AGE_SECONDS = 3600


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    # An engine built from a directory autoescapes every template; a ready-made instance would not.
    return TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine, engine_callback=_add_filters)


def _localized(format_: Callable[[Any, Locale], str]) -> Callable[[Context, Any], str]:
    """A Jinja filter that writes a value in the page's language (the ``locale`` of its context)."""

    @pass_context
    def localized(context: Context, value: Any) -> str:
        return format_(value, context["locale"])

    return localized


def _money(value: Any, locale: Locale) -> str:
    return money_text(value.amount_minor, value.currency, locale)


def _when(value: datetime | None, locale: Locale) -> str:
    return "" if value is None else when_text(value, locale)


def _add_filters(engine: JinjaTemplateEngine) -> None:
    # Amounts stay integers up to the template, and become text in the reader's language only there.
    engine.engine.filters.update(
        credits=_localized(credits_text),
        integer=_localized(integer_text),
        percent=_localized(percent_text),
        money=_localized(_money),
        when=_localized(_when),
    )


def static_files() -> Router:
    return create_static_files_router(
        "/static",
        [STATIC],
        name="static",
        cache_control=CacheControlHeader(max_age=STATIC_MAX_AGE_SECONDS),
        include_in_schema=False,
    )
