"""The admin's settings pages: the billing configuration with its audit trail, and the package catalogue.

Each form sends the values it was rendered with beside the edited ones, and only what the admin changed
goes to the ledger: a setting someone else changed meanwhile is not put back. The ledger's use cases
decide what is allowed, with the API's rules and messages; the page shows the refusal beside its field.
"""

from __future__ import annotations

from typing import Annotated, Any, Final
from uuid import uuid4

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import FormMultiDict, State
from litestar.params import Parameter, PathParameter
from litestar.response import Redirect, Template

from gateway.calls import run_command
from gateway.routes.pages_admin import wait_for_write
from gateway.routes.pages_session import for_role, visitor_of
from gateway.web.admin_words import ADMIN_WORDS, AdminWords
from gateway.web.forms import InputError, idempotency_key, minor_units, money_input, whole_number
from gateway.web.render import locale_of, page
from ledger.commands import AddPackage, ChangeBillingSettings, ChangePackage
from ledger.config import BillingSettings
from ledger.errors import (
    ConcurrencyError,
    IdempotencyConflictError,
    InvalidCommandError,
    NotFoundError,
    StateConflictError,
)
from ledger.receipts import Receipt
from projections import page_queries, queries

SETTINGS: Final = BillingSettings.__struct_fields__
# The form's name for each package field the ledger names.
PACKAGE_FIELDS: Final = {"price_amount_minor": "price"}
Query = Annotated[str | None, Parameter(required=False)]


def _refusal(error: Exception, words: AdminWords) -> tuple[str, str, int]:
    """The field a ledger refusal is about (``form`` for the whole form), what to say, and the status."""
    if isinstance(error, InputError):
        return error.field, words.refusals[error.refusal], 422
    if isinstance(error, InvalidCommandError):
        return PACKAGE_FIELDS.get(error.field, error.field), error.reason, 422
    if isinstance(error, StateConflictError):
        return PACKAGE_FIELDS.get(error.field, error.field), error.reason, 409
    if isinstance(error, NotFoundError):
        return "form", words.refusals["not-found"], 404
    if isinstance(error, IdempotencyConflictError):
        return "form", words.refusals["idempotency"], 409
    return "form", words.refusals["busy"], 503


REFUSED: Final = (
    InputError,
    InvalidCommandError,
    StateConflictError,
    NotFoundError,
    IdempotencyConflictError,
    ConcurrencyError,
)


def _done(address: str, what: str, receipt: Receipt) -> Redirect:
    return Redirect(f"{address}?done={what}&at={receipt.position}", status_code=303)


class BillingConfigPage(Controller):
    path = "/admin/billing-config"
    opt = for_role("admin")

    @get("/")
    async def show(
        self, request: Request[Any, Any, State], state: State, done: Query = None, at: Query = None
    ) -> Template:
        await wait_for_write(state, at, views=(*queries.ALL_PROJECTIONS, "audit"))  # Its change history.
        return await self._page(request, state, done=done)

    @post("/", status_code=303)
    async def change(self, request: Request[Any, Any, State], state: State) -> Response[Any]:
        form = await request.form()
        words = ADMIN_WORDS[locale_of(request)]
        entered = {name: str(form.get(name) or "") for name in SETTINGS}
        errors: dict[str, str] = {}
        changes: dict[str, int] = {}
        for name in SETTINGS:
            try:
                value = whole_number(entered[name], name)
            except InputError as error:
                errors[name] = words.refusals[error.refusal]
                continue
            # Only what this admin edited: a setting changed by someone else since the form was shown stays.
            if str(value) != str(form.get(f"was_{name}") or ""):
                changes[name] = value
        status = 422
        if not errors and not changes:
            return Redirect("/admin/billing-config", status_code=303)
        if not errors:
            command = ChangeBillingSettings(changes=changes, changed_by=visitor_of(request).sub)
            try:
                receipt = await run_command(
                    request,
                    "billing-config",
                    state.ledger.change_billing_settings,
                    command,
                    idempotency_key(form.get("idempotency_key")),
                )
            except REFUSED as error:
                field, reason, status = _refusal(error, words)
                errors[field] = reason
            else:
                return _done("/admin/billing-config", "settings", receipt)
        return await self._page(request, state, entered=entered, errors=errors, status_code=status)

    async def _page(
        self,
        request: Request[Any, Any, State],
        state: State,
        *,
        done: str | None = None,
        entered: dict[str, str] | None = None,
        errors: dict[str, str] | None = None,
        status_code: int = 200,
    ) -> Template:
        words = ADMIN_WORDS[locale_of(request)]
        current = await queries.billing_settings(state.pool)
        values = {name: str(getattr(current, name)) for name in SETTINGS}
        return page(
            request,
            "admin/config.html",
            title=words.config_title,
            visitor=visitor_of(request),
            section="config",
            status_code=status_code,
            settings=SETTINGS,
            current=values,
            entered=entered or values,
            errors=errors or {},
            changes=await page_queries.config_changes(state.pool),
            done=words.done.get(done or ""),
            form_key=uuid4().hex,
        )


class PackagesPage(Controller):
    path = "/admin/packages"
    opt = for_role("admin")

    @get("/")
    async def show(
        self, request: Request[Any, Any, State], state: State, done: Query = None, at: Query = None
    ) -> Template:
        await wait_for_write(state, at)
        return await self._page(request, state, done=done)

    @post("/", status_code=303)
    async def add(self, request: Request[Any, Any, State], state: State) -> Response[Any]:
        form = await request.form()
        words = ADMIN_WORDS[locale_of(request)]
        entered = {name: str(form.get(name) or "") for name in ("id", "name", "credits", "price", "currency")}
        try:
            command = AddPackage(
                package_id=entered["id"].strip(),
                name=entered["name"].strip(),
                credits=whole_number(entered["credits"], "credits"),
                price_amount_minor=minor_units(entered["price"], "price"),
                currency=entered["currency"].strip().upper(),
                active="active" in form,
                added_by=visitor_of(request).sub,
            )
            receipt = await run_command(
                request, "add-package", state.ledger.add_package, command, idempotency_key(form.get("idempotency_key"))
            )
        except REFUSED as error:
            field, reason, status = _refusal(error, words)
            return await self._page(
                request, state, row="new", entered=entered, errors={field: reason}, status_code=status
            )
        return _done("/admin/packages", "package-added", receipt)

    @post("/{package_id:str}", status_code=303)
    async def change(
        self, request: Request[Any, Any, State], state: State, package_id: Annotated[str, PathParameter()]
    ) -> Response[Any]:
        form = await request.form()
        words = ADMIN_WORDS[locale_of(request)]
        entered = {name: str(form.get(name) or "") for name in ("name", "credits", "price")}
        try:
            changes = _package_changes(form, entered)
            if not changes:
                return Redirect("/admin/packages", status_code=303)
            receipt = await run_command(
                request,
                "change-package",
                state.ledger.change_package,
                ChangePackage(package_id=package_id, changes=changes, changed_by=visitor_of(request).sub),
                idempotency_key(form.get("idempotency_key")),
            )
        except REFUSED as error:
            field, reason, status = _refusal(error, words)
            return await self._page(
                request, state, row=package_id, entered=entered, errors={field: reason}, status_code=status
            )
        return _done("/admin/packages", "package-changed", receipt)

    async def _page(
        self,
        request: Request[Any, Any, State],
        state: State,
        *,
        done: str | None = None,
        row: str | None = None,
        entered: dict[str, str] | None = None,
        errors: dict[str, str] | None = None,
        status_code: int = 200,
    ) -> Template:
        locale = locale_of(request)
        words = ADMIN_WORDS[locale]
        return page(
            request,
            "admin/packages.html",
            title=words.packages_title,
            visitor=visitor_of(request),
            section="packages",
            status_code=status_code,
            packages=await queries.packages(state.pool, active_only=False),
            price_input=lambda amount: money_input(amount, locale),
            row=row,
            entered=entered or {},
            errors=errors or {},
            done=words.done.get(done or ""),
            form_key=uuid4().hex,
        )


def _package_changes(form: FormMultiDict, entered: dict[str, str]) -> dict[str, str | int | bool | None]:
    """The fields this admin edited, against the values the row was rendered with."""
    edited: dict[str, str | int | bool | None] = {
        "name": entered["name"].strip(),
        "credits": whole_number(entered["credits"], "credits"),
        "price_amount_minor": minor_units(entered["price"], "price"),
        "active": "active" in form,
    }
    was: dict[str, str | int | bool | None] = {
        "name": str(form.get("was_name") or ""),
        "credits": _was_number(form.get("was_credits")),
        "price_amount_minor": _was_number(form.get("was_price")),
        "active": form.get("was_active") == "true",
    }
    return {field: value for field, value in edited.items() if value != was[field]}


def _was_number(text: Any) -> int | None:
    return int(text) if isinstance(text, str) and text.isdigit() and len(text) <= 16 else None  # noqa: PLR2004
