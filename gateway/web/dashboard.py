"""The admin dashboard's content as typed records: each stats figure in words and as the API gives it,
the system's health, the API usage gauge and the alerts that are active now.

Alerts are derived from what the figures already say (the ledger's oversell guard has paused sales, API
usage has reached the alert threshold, a view lags the log more than the readiness probe allows), so the
page shows the same conditions the API and ``/health/ready`` report, and decides none of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec

from gateway.web.admin_words import AdminWords
from gateway.web.locale import Locale, credits_text, integer_text, percent_text, when_text
from projections.page_queries import ViewLag
from projections.queries import SystemStats

State = Literal["ok", "unavailable", "not-configured", "configured", "lagging"]
TOKEN_FIGURES: Final = frozenset({"potential_tokens", "api_monthly_limit_tokens", "tokens_used_30d"})
GAUGE_WIDTH: Final = 100.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Figure:
    """One figure: ``value`` is its JSON exactly as the API answers it (a string's without the quotes)."""

    name: str
    label: str
    hint: str
    text: str
    value: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Check:
    name: str
    label: str
    state: State
    detail: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Alert:
    kind: str
    text: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Gauge:
    """The API usage bar: ``fill`` and ``mark`` are percentages of its width, capped at 100."""

    fill: str
    mark: str
    over: bool
    text: str


def api_value(value: Any) -> str:
    """A value as the API's JSON writes it: ``12``, ``12.5``, ``true``; a string without its quotes."""
    encoded = msgspec.json.encode(value)
    decoded = msgspec.json.decode(encoded)
    return decoded if isinstance(decoded, str) else encoded.decode()


def figures(stats: SystemStats, words: AdminWords, locale: Locale) -> list[Figure]:
    """Every field of ``GET /api/admin/credits/stats``, in the order the API lists them."""
    shown = []
    for name in stats.__struct_fields__:
        value = getattr(stats, name)
        label = words.figures.get(name)
        shown.append(
            Figure(
                name=name,
                label=label.name if label else name,
                hint=label.hint if label else "",
                text=_text(name, value, words, locale),
                value=api_value(value),
            )
        )
    return shown


def _text(name: str, value: Any, words: AdminWords, locale: Locale) -> str:  # noqa: PLR0911 - one per kind.
    if name == "sales_paused":
        return words.sales_paused if value else words.sales_open
    if name == "as_of":
        return when_text(value, locale)
    if "_millicredits" in name:  # Also a figure over a span, such as expired_millicredits_30d.
        return f"{credits_text(value, locale)} {words.credits_unit}"
    if name.endswith("_percent"):
        return percent_text(value, locale)
    if name in TOKEN_FIGURES:
        return f"{integer_text(value, locale)} {words.tokens_unit}"
    if isinstance(value, bool):
        return words.yes if value else words.no
    if isinstance(value, int):
        return integer_text(value, locale)
    return str(value)


def usage_reached(stats: SystemStats) -> bool:
    return stats.api_usage_percent >= stats.alert_threshold_percent


def gauge(stats: SystemStats, words: AdminWords, locale: Locale) -> Gauge:
    return Gauge(
        fill=f"{min(stats.api_usage_percent, GAUGE_WIDTH):.2f}",
        mark=f"{min(stats.alert_threshold_percent, GAUGE_WIDTH):.2f}",
        over=usage_reached(stats),
        text=words.gauge_text.format(
            percent=percent_text(stats.api_usage_percent, locale),
            limit=integer_text(stats.api_monthly_limit_tokens, locale),
            threshold=percent_text(stats.alert_threshold_percent, locale),
        ),
    )


def lagging(lag: ViewLag, max_lag_seconds: int) -> bool:
    """The readiness probe's rule: a view that has not moved for longer than allowed while behind."""
    return lag.idle_seconds > max_lag_seconds


def checks(
    *,
    database: bool,
    lags: list[ViewLag],
    max_lag_seconds: int,
    redis: bool | None,
    stripe: bool,
    words: AdminWords,
    locale: Locale,
) -> list[Check]:
    """Health as ``/health/ready`` sees it; ``redis`` None means none is configured."""
    found = [Check(name="database", label=words.health["database"], state="ok" if database else "unavailable")]
    found.extend(
        Check(
            name=f"projection-{lag.name}",
            label=lag.name,
            state="lagging" if lagging(lag, max_lag_seconds) else "ok",
            detail=words.lag.format(events=integer_text(lag.lag_events, locale)) if lag.lag_events else "",
        )
        for lag in lags
    )
    redis_state: State = "not-configured" if redis is None else "ok" if redis else "unavailable"
    found.append(Check(name="redis", label=words.health["redis"], state=redis_state))
    found.append(Check(name="stripe", label=words.health["stripe"], state="configured" if stripe else "not-configured"))
    return found


def alerts(
    stats: SystemStats,
    *,
    database: bool,
    lags: list[ViewLag],
    max_lag_seconds: int,
    words: AdminWords,
    locale: Locale,
) -> list[Alert]:
    active = []
    if not database:
        active.append(Alert(kind="database", text=words.alerts["database"]))
    if stats.sales_paused:
        active.append(Alert(kind="sales-paused", text=words.alerts["sales-paused"]))
    if usage_reached(stats):
        active.append(
            Alert(
                kind="api-usage",
                text=words.alerts["api-usage"].format(
                    percent=percent_text(stats.api_usage_percent, locale),
                    threshold=percent_text(stats.alert_threshold_percent, locale),
                ),
            )
        )
    active.extend(
        Alert(
            kind="view-lagging",
            text=words.alerts["view-lagging"].format(
                name=lag.name,
                events=integer_text(lag.lag_events, locale),
                seconds=integer_text(int(lag.idle_seconds), locale),
            ),
        )
        for lag in lags
        if lagging(lag, max_lag_seconds)
    )
    return active
