"""Server-rendered pages: the template engine, the service's own static files, and the words pages show.

Every asset a page needs is served by the service itself, so the pages work on a closed network and no
third party learns who opened them. Paths are built from this file, not from the working directory, so
the installed wheel and a source checkout find the same files.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template import TemplateConfig

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
# The service's own files change with a release but keep their names, so browsers keep them an hour and
# then revalidate with the ETag the static router sends.
STATIC_MAX_AGE_SECONDS = 3600


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    # An engine built from a directory autoescapes every template; a ready-made instance would not.
    return TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine)


def static_files() -> Router:
    return create_static_files_router(
        "/static",
        [STATIC],
        name="static",
        cache_control=CacheControlHeader(max_age=STATIC_MAX_AGE_SECONDS),
        include_in_schema=False,
    )
