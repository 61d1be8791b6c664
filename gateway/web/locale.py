"""The language a page speaks (Brazilian Portuguese or English) and how it writes numbers in it.

Amounts stay integers everywhere else; they become decimal text only here, for people to read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Final, Literal

from ledger.amounts import MILLICREDITS_PER_CREDIT

Locale = Literal["pt-BR", "en"]
DEFAULT_LOCALE: Final[Locale] = "en"
# Group and decimal separators: 1,234.5 in English, 1.234,5 in Brazilian Portuguese.
SEPARATORS: Final[dict[Locale, tuple[str, str]]] = {"en": (",", "."), "pt-BR": (".", ",")}
# The catalogue prices in minor units of two decimals (centavos, cents).
MINOR_UNITS_PER_MAJOR: Final = 100
SYMBOLS: Final = {"BRL": "R$", "USD": "US$", "EUR": "€"}
NO_BREAK_SPACE: Final = "\u00a0"
# Times are shown in UTC and say so: the service does not know the reader's time zone.
MONTHS: Final[dict[Locale, tuple[str, ...]]] = {
    "en": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
    "pt-BR": ("jan", "fev", "mar", "abr", "mai", "jun", "jul", "ago", "set", "out", "nov", "dez"),
}


def negotiate(accept_language: str | None) -> Locale:
    """The best of our two languages for an ``Accept-Language`` header; English when it names neither.

    Any Portuguese counts as Brazilian Portuguese, the only Portuguese the pages are written in.
    """
    best: tuple[float, int, Locale] | None = None
    for index, item in enumerate((accept_language or "").split(",")):
        tag, _, parameters = item.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        locale: Locale | None = "pt-BR" if primary == "pt" else "en" if primary == "en" else None
        if locale is None:
            continue
        weight = _quality(parameters)
        # Higher quality first; among equals, the header's own order (a smaller index) wins.
        if weight > 0 and (best is None or (weight, -index) > (best[0], -best[1])):
            best = (weight, index, locale)
    return best[2] if best else DEFAULT_LOCALE


def _quality(parameters: str) -> float:
    name, _, value = parameters.strip().partition("=")
    if name.strip().lower() != "q":
        return 1.0
    try:
        return min(max(float(value), 0.0), 1.0)
    except ValueError:
        return 0.0


def number_text(value: Decimal, locale: Locale, *, places: int) -> str:
    group, decimal = SEPARATORS[locale]
    text = f"{value:,.{places}f}"
    return text.replace(",", "\0").replace(".", decimal).replace("\0", group)


def credits_text(millicredits: int, locale: Locale) -> str:
    """Credits with only the decimals they need: ``100``, ``1.234,5`` (pt-BR), ``0.001`` (en)."""
    value = Decimal(millicredits) / MILLICREDITS_PER_CREDIT
    exponent = value.normalize().as_tuple().exponent
    places = max(0, -exponent) if isinstance(exponent, int) else 0
    return number_text(value, locale, places=places)


def money_text(amount_minor: int, currency: str, locale: Locale) -> str:
    code = currency.upper()
    number = number_text(Decimal(amount_minor) / MINOR_UNITS_PER_MAJOR, locale, places=2)
    return f"{SYMBOLS.get(code, code)}{NO_BREAK_SPACE}{number}"


def integer_text(value: int, locale: Locale) -> str:
    return number_text(Decimal(value), locale, places=0)


def percent_text(value: float, locale: Locale) -> str:
    """A percentage with only the decimals it has (at most two, as the API floors it): ``12,5%``."""
    exact = Decimal(str(value)).quantize(Decimal("0.01")).normalize()
    exponent = exact.as_tuple().exponent
    places = max(0, -exponent) if isinstance(exponent, int) else 0
    return f"{number_text(exact, locale, places=places)}%"


def when_text(moment: datetime, locale: Locale) -> str:
    """A moment in UTC to the minute: ``30 nov 2026, 14:05 UTC`` or ``Nov 30, 2026, 14:05 UTC``."""
    utc = moment.astimezone(UTC)
    month = MONTHS[locale][utc.month - 1]
    day = f"{utc.day} {month} {utc.year}" if locale == "pt-BR" else f"{month} {utc.day}, {utc.year}"
    return f"{day}, {utc:%H:%M} UTC"


def hour_text(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%H}h"


def day_text(moment: datetime, locale: Locale) -> str:
    utc = moment.astimezone(UTC)
    return (
        f"{utc.day} {MONTHS[locale][utc.month - 1]}"
        if locale == "pt-BR"
        else f"{MONTHS[locale][utc.month - 1]} {utc.day}"
    )
