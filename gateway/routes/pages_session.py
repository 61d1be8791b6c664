"""Signing in and out of the pages, and the router every signed-in page hangs from.

A page is opened with the session cookie that ``POST /login`` sets from a token (``gateway.web.session``).
The router checks it with one guard: no valid session is a redirect to ``/login``, the wrong role a 403
page. Every form on these pages carries Litestar's CSRF token (a signed double-submit cookie); a POST
without it is refused with 403 before any handler runs. None of this reaches the JSON API: the router has
its own CSRF middleware and guard, and the app's bearer authentication leaves the page paths alone.
"""

from __future__ import annotations

from typing import Any, Final

from litestar import Controller, Request, Response, Router, get, post
from litestar.config.csrf import CSRFConfig
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie, State
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler
from litestar.middleware import DefineMiddleware
from litestar.middleware.csrf import CSRFMiddleware
from litestar.response import Redirect, Template
from litestar.types import ControllerRouterHandler

from gateway.web.render import locale_of, page
from gateway.web.session import (
    COOKIE_NAME,
    CSRF_COOKIE_NAME,
    TokenRefusedError,
    Visitor,
    csrf_secret,
    seal,
    unseal,
    visitor_from_token,
)
from gateway.web.words import WORDS

# A handler's opt names the role its page is for; the guard reads it.
PAGE_ROLE: Final = "page_role"
HOME: Final = {"admin": "/admin/credits", "user": "/credits"}


def for_role(role: str) -> dict[str, Any]:
    return {PAGE_ROLE: role}


def _secure(state: State) -> bool:
    return bool(state.settings.public_url.startswith("https://"))


def current_visitor(connection: ASGIConnection[Any, Any, Any, Any]) -> Visitor | None:
    return unseal(connection.cookies.get(COOKIE_NAME), connection.app.state.settings.jwt_secret)


def signed_in(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """The pages' guard: a session for the handler's role, whose principal the handler then acts as."""
    role = handler.opt.get(PAGE_ROLE)
    if role is None:
        return
    visitor = current_visitor(connection)
    if visitor is None:
        raise NotAuthorizedException("sign in")
    if visitor.role != role:
        raise PermissionDeniedException(f"this page is for the role {role}")
    # The same principal the API would see for this person's token: commands run under its idempotency scope.
    connection.scope["user"] = visitor.principal
    connection.scope["auth"] = visitor


def visitor_of(request: Request[Any, Any, Any]) -> Visitor:
    visitor: Visitor = request.auth
    return visitor


def _to_login(_: Request[Any, Any, Any], __: NotAuthorizedException) -> Response[Any]:
    return Redirect("/login", status_code=303)


def _forbidden(request: Request[Any, Any, Any], _: PermissionDeniedException) -> Response[Any]:
    visitor = current_visitor(request)
    return page(
        request,
        "forbidden.html",
        title=WORDS[locale_of(request)].layout.forbidden_title,
        visitor=visitor,
        status_code=403,
        home=HOME[visitor.role] if visitor else "/login",
    )


def _session_cookie(state: State, value: str, max_age: int) -> Cookie:
    return Cookie(
        key=COOKIE_NAME,
        value=value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(state),
    )


class SignIn(Controller):
    path = "/"

    @get("/login")
    async def form(self, request: Request[Any, Any, State]) -> Template:
        return _login_page(request, current_visitor(request), signed_out=request.query_params.get("out") == "1")

    @post("/login", status_code=303)
    async def sign_in(self, request: Request[Any, Any, State], state: State) -> Response[Any]:
        form = await request.form()
        try:
            visitor = visitor_from_token(str(form.get("token") or ""), state.settings.jwt_secret)
        except TokenRefusedError as refused:
            return _login_page(request, None, refusal=refused.refusal, status_code=401)
        max_age = max(1, visitor.expires_at - int(state.clock().timestamp()))
        return Redirect(
            HOME[visitor.role],
            status_code=303,
            cookies=[_session_cookie(state, seal(visitor, state.settings.jwt_secret), max_age)],
        )

    @post("/logout", status_code=303)
    async def sign_out(self, state: State) -> Response[Any]:
        return Redirect("/login?out=1", status_code=303, cookies=[_session_cookie(state, "", 0)])


def _login_page(
    request: Request[Any, Any, Any],
    visitor: Visitor | None,
    *,
    refusal: str | None = None,
    signed_out: bool = False,
    status_code: int = 200,
) -> Template:
    words = WORDS[locale_of(request)].sign_in
    return page(
        request,
        "login.html",
        title=words.title,
        visitor=visitor,
        status_code=status_code,
        refusal=words.refusals[refusal] if refusal else None,
        signed_out=signed_out and visitor is None,
        home=HOME[visitor.role] if visitor else None,
    )


def pages_router(secret: str, *, secure: bool, handlers: list[ControllerRouterHandler]) -> Router:
    """The pages: session guard, CSRF on every form, HTML errors, and nothing in the API document."""
    csrf = CSRFConfig(
        secret=csrf_secret(secret),
        cookie_name=CSRF_COOKIE_NAME,
        cookie_path="/",
        cookie_secure=secure,
        cookie_httponly=True,
        cookie_samesite="strict",
    )
    return Router(
        path="/",
        route_handlers=[SignIn, *handlers],
        guards=[signed_in],
        middleware=[DefineMiddleware(CSRFMiddleware, config=csrf)],
        exception_handlers={NotAuthorizedException: _to_login, PermissionDeniedException: _forbidden},
        include_in_schema=False,
        # The app's bearer authentication is for the API; a page is opened with its session cookie.
        opt={"exclude_from_auth": True},
    )
