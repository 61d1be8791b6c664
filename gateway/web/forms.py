"""What a person types into a page's form, turned into the integers the ledger takes.

Only the writing is checked here (digits, at most so many decimals); whether a value is allowed is the
ledger's to say, with the same rules and messages as the API. Either decimal separator is read, so
``12,5`` and ``12.5`` are the same amount in both languages; group separators are not, because ``1.000``
would mean a thousand in Portuguese and one in English.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Final, Literal

from gateway.web.locale import SEPARATORS, Locale
from ledger.amounts import MILLICREDITS_PER_CREDIT

# Which rule of writing a field broke; the page says it in the reader's language.
Refusal = Literal["integer", "credits", "money"]

_SPACES: Final = re.compile(r"[\s\u00a0\u202f]+")
_INTEGER: Final = re.compile(r"^[-+]?[0-9]{1,16}$")
_CREDITS: Final = re.compile(r"^[-+]?[0-9]{1,13}(?:[.,][0-9]{1,3})?$")
_MONEY: Final = re.compile(r"^[0-9]{1,13}(?:[.,][0-9]{1,2})?$")
_IDEMPOTENCY_KEY: Final = re.compile(r"^[\x21-\x7e]{1,255}$")
MINOR_UNITS: Final = 100


class InputError(Exception):
    """A field written so that it names no number; ``field`` is the form's own name for it."""

    def __init__(self, field: str, refusal: Refusal) -> None:
        super().__init__(f"{field}: {refusal}")
        self.field = field
        self.refusal: Refusal = refusal


def _clean(text: str | None) -> str:
    return _SPACES.sub("", text or "")


def whole_number(text: str | None, field: str) -> int:
    cleaned = _clean(text)
    if not _INTEGER.fullmatch(cleaned):
        raise InputError(field, "integer")
    return int(cleaned)


def millicredits(text: str | None, field: str) -> int:
    """Credits as written (``-12,5``) to millicredits (``-12500``), exactly."""
    cleaned = _clean(text)
    if not _CREDITS.fullmatch(cleaned):
        raise InputError(field, "credits")
    return int(Decimal(cleaned.replace(",", ".")) * MILLICREDITS_PER_CREDIT)


def minor_units(text: str | None, field: str) -> int:
    """Money as written (``30,00``) to minor units (``3000``), exactly."""
    cleaned = _clean(text)
    if not _MONEY.fullmatch(cleaned):
        raise InputError(field, "money")
    return int(Decimal(cleaned.replace(",", ".")) * MINOR_UNITS)


def idempotency_key(text: str | None) -> str | None:
    """The key the form was rendered with; a form that lost it is sent without one."""
    return text if text and _IDEMPOTENCY_KEY.fullmatch(text) else None


def money_input(amount_minor: int, locale: Locale) -> str:
    """A price as a form shows it for editing, without group separators: ``30,00`` or ``30.00``."""
    text = f"{Decimal(amount_minor) / MINOR_UNITS:.2f}"
    return text.replace(".", SEPARATORS[locale][1])
