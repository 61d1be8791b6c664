"""The admin's notifications page: the notifications sent with their delivery status, and the webhook endpoints.

The page reads and writes through the same store as the JSON API (``projections.notification_queries``), with
its checks of a webhook URL, and each form's write runs once per the idempotency key it was rendered with, so a
double submit redelivers, adds or deletes once. A new endpoint's signing secret is shown only in the answer
to the form that created it (a page rendered for that POST, not a redirect): nothing but the database keeps it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final
from urllib.parse import urlencode
from uuid import UUID, uuid4

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import Parameter, PathParameter, QueryParameter
from litestar.response import Redirect, Template

from gateway.outbound.addresses import private_address_of, url_problem
from gateway.routes.pages_admin import user_url
from gateway.routes.pages_session import for_role, visitor_of
from gateway.web.admin_words import ADMIN_WORDS, AdminWords
from gateway.web.forms import idempotency_key
from gateway.web.render import locale_of, page
from projections import notification_queries as store
from projections.notices import NOTIFICATION_TYPES

PAGE: Final = "/admin/notifications"
PER_PAGE: Final = store.DEFAULT_PAGE_SIZE
ALL_TYPES: Final = "*"
MAX_DESCRIPTION: Final = 500
Query = Annotated[str | None, Parameter(required=False)]
# Why a form's write was refused, and the status the page is answered with.
REFUSAL_STATUS: Final = {"missing": 404, "idempotency": 409}
TypeQuery = Annotated[str | None, QueryParameter(name="type", required=False)]


class _MissingError(Exception):
    """The notification or endpoint a form names is not there; its transaction is rolled back."""


def _kind(text: str | None) -> str | None:
    return text if text in NOTIFICATION_TYPES else None


def _status(text: str | None) -> str | None:
    return text if text in store.STATUSES else None


def _cursor(text: str | None) -> str | None:
    """A cursor as the list gives one; any other is the first page."""
    return text if text and re.fullmatch(store.CURSOR_PATTERN, text) else None


def _address(*, kind: str | None = None, status: str | None = None, **more: str | None) -> str:
    query = {name: value for name, value in {"type": kind, "status": status, **more}.items() if value}
    return f"{PAGE}?{urlencode(query)}" if query else PAGE


async def _endpoint_refusals(
    url: str, event_types: list[str], description: str, *, allow_private: bool, words: AdminWords
) -> dict[str, str]:
    """Why the add form cannot register this endpoint, by field: the API's checks of the same request."""
    errors: dict[str, str] = {}
    reason = url_problem(url)
    if reason is None and not allow_private:
        private = await private_address_of(url)
        if private is not None:
            reason = words.refusals["private-address"].format(address=private)
    if reason:
        errors["url"] = reason
    unknown = [kind for kind in event_types if kind != ALL_TYPES and kind not in NOTIFICATION_TYPES]
    if unknown:
        errors["event_types"] = " ".join(words.refusals["unknown-type"].format(kind=kind) for kind in unknown)
    elif not event_types:
        errors["event_types"] = words.refusals["no-types"]
    if len(description) > MAX_DESCRIPTION:
        errors["description"] = words.refusals["too-long"].format(limit=MAX_DESCRIPTION)
    elif "\x00" in description:
        errors["description"] = words.refusals["nul"]  # PostgreSQL's text cannot hold it.
    return errors


class NotificationsPage(Controller):
    path = PAGE
    opt = for_role("admin")

    @get("/")
    async def show(
        self,
        request: Request[Any, Any, State],
        state: State,
        type_: TypeQuery = None,
        status: Query = None,
        before: Query = None,
        done: Query = None,
    ) -> Template:
        return await self._page(request, state, kind=_kind(type_), status=_status(status), before=before, done=done)

    @post("/{notification_id:uuid}/redeliver", status_code=303)
    async def redeliver(
        self, request: Request[Any, Any, State], state: State, notification_id: Annotated[UUID, PathParameter()]
    ) -> Response[Any]:
        form = await request.form()
        kind, status = _kind(str(form.get("type") or "")), _status(str(form.get("status") or ""))
        words = ADMIN_WORDS[locale_of(request)]

        async def write(conn: Any) -> tuple[int, Any]:
            if not await store.redeliver(conn, notification_id):
                raise _MissingError
            return 202, {"id": str(notification_id), "status": "pending"}

        refusal = await self._once(request, state, "redeliver", form.get("idempotency_key"), notification_id, write)
        if refusal is not None:
            code = REFUSAL_STATUS[refusal]
            problem = words.refusals["no-notification" if refusal == "missing" else refusal]
            return await self._page(request, state, kind=kind, status=status, problem=problem, status_code=code)
        return Redirect(_address(kind=kind, status=status, done="redelivered"), status_code=303)

    @post("/endpoints", status_code=303)
    async def add_endpoint(self, request: Request[Any, Any, State], state: State) -> Response[Any]:
        form = await request.form()
        words = ADMIN_WORDS[locale_of(request)]
        url = str(form.get("url") or "").strip()
        event_types = sorted({str(kind) for kind in form.getall("event_types", [])})
        description = str(form.get("description") or "").strip()
        entered: dict[str, Any] = {"url": url, "event_types": event_types, "description": description}
        errors = await _endpoint_refusals(
            url,
            event_types,
            description,
            allow_private=state.settings.webhook_allow_private_networks,
            words=words,
        )
        if errors:
            return await self._page(request, state, entered=entered, errors=errors, status_code=422)

        async def write(conn: Any) -> tuple[int, Any]:
            added = await store.add_endpoint(conn, url=url, event_types=event_types, description=description)
            return 201, added

        try:
            _, created, _ = await store.once(
                state.pool,
                principal=visitor_of(request).principal.scope,
                operation="create-webhook-endpoint",
                key=idempotency_key(form.get("idempotency_key")),
                body=entered,
                write=write,
            )
        except store.WriteConflictError:
            errors = {"form": words.refusals["idempotency"]}
            return await self._page(request, state, entered=entered, errors=errors, status_code=409)
        # The secret is in this answer only: the page is rendered here rather than after a redirect.
        return await self._page(request, state, created=created, status_code=201)

    @post("/endpoints/{endpoint_id:uuid}/delete", status_code=303)
    async def delete_endpoint(
        self, request: Request[Any, Any, State], state: State, endpoint_id: Annotated[UUID, PathParameter()]
    ) -> Response[Any]:
        form = await request.form()
        words = ADMIN_WORDS[locale_of(request)]

        async def write(conn: Any) -> tuple[int, Any]:
            if not await store.delete_endpoint(conn, endpoint_id):
                raise _MissingError
            return 204, None

        key = form.get("idempotency_key")
        refusal = await self._once(request, state, "delete-webhook-endpoint", key, endpoint_id, write)
        if refusal is not None:
            problem = words.refusals["no-endpoint" if refusal == "missing" else refusal]
            return await self._page(request, state, problem=problem, status_code=REFUSAL_STATUS[refusal])
        return Redirect(_address(done="endpoint-deleted"), status_code=303)

    async def _once(
        self, request: Request[Any, Any, State], state: State, operation: str, key: Any, target: UUID, write: Any
    ) -> str | None:
        """Run a form's write once per its key, as the API does: None when done, else why it was refused."""
        try:
            await store.once(
                state.pool,
                principal=visitor_of(request).principal.scope,
                operation=operation,
                key=idempotency_key(key),
                body={"id": str(target)},
                write=write,
            )
        except _MissingError:
            return "missing"
        except store.WriteConflictError:
            return "idempotency"
        return None

    async def _page(
        self,
        request: Request[Any, Any, State],
        state: State,
        *,
        kind: str | None = None,
        status: str | None = None,
        before: str | None = None,
        done: str | None = None,
        problem: str | None = None,
        entered: dict[str, Any] | None = None,
        errors: dict[str, str] | None = None,
        created: dict[str, Any] | None = None,
        status_code: int = 200,
    ) -> Template:
        words = ADMIN_WORDS[locale_of(request)]
        cursor = _cursor(before)
        found = await store.notifications(state.pool, kind=kind, status=status, limit=PER_PAGE, cursor=cursor)
        return page(
            request,
            "admin/notifications.html",
            title=words.notifications_title,
            visitor=visitor_of(request),
            section="notifications",
            status_code=status_code,
            found=found,
            endpoints=await store.endpoints(state.pool),
            kind=kind,
            status=status,
            types=NOTIFICATION_TYPES,
            statuses=store.STATUSES,
            all_types=ALL_TYPES,
            user_url=user_url,
            older_url=_address(kind=kind, status=status, before=found.next_cursor) if found.next_cursor else None,
            newest_url=_address(kind=kind, status=status) if cursor else None,
            done=words.done.get(done or ""),
            problem=problem,
            entered=entered or {"url": "", "event_types": [ALL_TYPES], "description": ""},
            errors=errors or {},
            created=created,
            # A new key for every form shown (each row's form adds its own suffix): a double submit acts once.
            form_key=uuid4().hex,
        )
