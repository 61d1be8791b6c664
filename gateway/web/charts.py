"""Usage charts drawn on the server as SVG bars, with the same figures as a table for screen readers.

Coordinates are computed here as plain numbers with a decimal point, never locale text; the template only
places them. The chart scales with its container (``viewBox``), so it fits a phone without scrolling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from gateway.web.locale import Locale, integer_text
from projections.queries import UsageReport

WIDTH: Final = 640
HEIGHT: Final = 220
TOP: Final = 22.0  # Room for the scale's label above the tallest bar.
BOTTOM: Final = 26.0  # Room for the time labels under the bars.
SIDE: Final = 4.0
BAR_SHARE: Final = 0.72  # Of each bucket's slot; the rest is the gap between bars.
TICKS: Final = 6
EDGE_LABEL_ROOM: Final = 40.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Bar:
    x: str
    y: str
    width: str
    height: str
    label: str
    value: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Tick:
    x: str
    text: str
    anchor: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Chart:
    id: str
    title: str
    description: str
    bucket_header: str
    value_header: str
    bars: list[Bar]
    ticks: list[Tick]
    scale: str
    width: int = WIDTH
    height: int = HEIGHT
    baseline: str = f"{HEIGHT - BOTTOM:.1f}"
    right: str = f"{WIDTH - SIDE:.1f}"


def _coordinate(value: float) -> str:
    return f"{value:.1f}"


def usage_chart(
    report: UsageReport,
    *,
    chart_id: str,
    title: str,
    description: str,
    bucket_header: str,
    value_header: str,
    bucket_text: Callable[[datetime], str],
    locale: Locale,
) -> Chart:
    """Bars of tokens per bucket. ``description`` may name ``{total}`` and ``{peak}``."""
    buckets = report.buckets
    peak = max((bucket.tokens for bucket in buckets), default=0)
    plot_height = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - 2 * SIDE) / max(len(buckets), 1)
    bars = []
    for index, bucket in enumerate(buckets):
        height = plot_height * bucket.tokens / peak if peak else 0.0
        bars.append(
            Bar(
                x=_coordinate(SIDE + index * slot + slot * (1 - BAR_SHARE) / 2),
                y=_coordinate(HEIGHT - BOTTOM - height),
                width=_coordinate(slot * BAR_SHARE),
                height=_coordinate(height),
                label=bucket_text(bucket.start),
                value=integer_text(bucket.tokens, locale),
            )
        )
    every = max(1, -(-len(buckets) // TICKS))
    ticks = [
        Tick(x=_coordinate(SIDE + index * slot + slot / 2), text=bucket_text(bucket.start), anchor="middle")
        for index, bucket in enumerate(buckets)
        if index % every == 0
    ]
    # The outermost labels are aligned to the chart's edges, so neither is cut off.
    if ticks:
        ticks[0] = Tick(x=_coordinate(SIDE), text=ticks[0].text, anchor="start")
    if len(ticks) > 1 and float(ticks[-1].x) > WIDTH - EDGE_LABEL_ROOM:
        ticks[-1] = Tick(x=_coordinate(WIDTH - SIDE), text=ticks[-1].text, anchor="end")
    return Chart(
        id=chart_id,
        title=title,
        description=description.format(
            total=integer_text(report.total_tokens, locale), peak=integer_text(peak, locale)
        ),
        bucket_header=bucket_header,
        value_header=value_header,
        bars=bars,
        ticks=ticks,
        scale=integer_text(peak, locale),
    )
