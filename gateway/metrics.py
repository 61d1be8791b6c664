"""Prometheus metrics. HTTP requests are counted by Litestar's Prometheus middleware (by route template
and status); the ledger's own figures are defined here and the dashboard gauges are read at scrape time.

With several worker processes, set ``PROMETHEUS_MULTIPROC_DIR`` so one scrape sees every process.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.plugins.prometheus import PrometheusConfig
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
    multiprocess,
)

from gateway.figures import DatabaseFigures
from gateway.openapi import NO_TOKEN
from projections import queries

COMMANDS = Counter("ledger_commands_total", "Ledger commands by operation and outcome", ["operation", "outcome"])
REPLAYS = Counter("ledger_idempotent_replays_total", "Requests answered from an idempotency marker", ["operation"])
RATE_LIMITED = Counter("ledger_rate_limited_requests_total", "Requests refused by the request-rate limit")
RATE_LIMIT_FAILURES = Counter("ledger_rate_limit_failures_total", "Rate-limit checks that failed open")
CIRCULATION = Gauge("ledger_credits_in_circulation_millicredits", "Positive balances summed", multiprocess_mode="max")
POTENTIAL = Gauge("ledger_potential_tokens", "Credits in circulation times tokens per credit", multiprocess_mode="max")
API_USAGE = Gauge("ledger_api_usage_percent", "Potential tokens against the monthly API limit", multiprocess_mode="max")
LAG = Gauge(
    "ledger_projection_lag_events", "Events a projection has not applied yet", ["projection"], multiprocess_mode="max"
)
STRIPE_FAILURES = Counter(
    "ledger_stripe_webhook_failures", "Stripe webhooks refused (bad signature) or failing", ["reason"]
)
# Known from the start, so that the first failure is an increase from 0 (alert rules use increase()).
for _reason in ("invalid-signature", "payments-unavailable", "unavailable", "failed"):
    STRIPE_FAILURES.labels(_reason)
FIGURES = DatabaseFigures()
REGISTRY.register(FIGURES)


# Litestar adds the charset to every text/ media type itself; the library's constant carries one already.
EXPOSITION_MEDIA_TYPE = CONTENT_TYPE_LATEST.partition("; charset=")[0]


def prometheus_config() -> PrometheusConfig:
    return PrometheusConfig(app_name="ledger", prefix="ledger", group_path=True, exclude=["/metrics"])


async def refresh_gauges(pool: Any) -> None:
    stats = await queries.system_stats(pool, now=datetime.now(UTC))
    await FIGURES.refresh(pool, stats)
    CIRCULATION.set(stats.credits_in_circulation_millicredits)
    POTENTIAL.set(stats.potential_tokens)
    API_USAGE.set(stats.api_usage_percent)
    head = await pool.fetchval("SELECT coalesce(max(notification_id), 0) FROM ledger_events")
    for row in await pool.fetch("SELECT name, position FROM projection_positions"):
        LAG.labels(row["name"]).set(max(head - row["position"], 0))


class MetricsController(Controller):
    path = "/metrics"
    tags = ["Operations"]  # noqa: RUF012 - Litestar reads a list here.

    @get(
        operation_id="Metrics",
        summary="Prometheus metrics",
        description="Request counts and latencies, ledger commands by outcome, and the dashboard gauges.",
        exclude_from_auth=True,
        security=NO_TOKEN,
        media_type="text/plain",
    )
    async def metrics(self, state: State) -> Response[bytes]:
        await refresh_gauges(state.pool)
        registry = REGISTRY
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            registry.register(FIGURES)
        return Response(generate_latest(registry), media_type=EXPOSITION_MEDIA_TYPE)
