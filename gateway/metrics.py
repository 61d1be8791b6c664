"""Prometheus metrics. HTTP requests are counted by Litestar's Prometheus middleware (by route template
and status); the ledger's own figures are defined here and the dashboard gauges are read at scrape time.

With several worker processes, set ``PROMETHEUS_MULTIPROC_DIR`` so one scrape sees every process.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any

from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.plugins.prometheus import PrometheusConfig, PrometheusMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send
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


class RequestMetricsMiddleware(PrometheusMiddleware):
    """Litestar's Prometheus middleware (the same metrics, names and labels), with each label set's series
    looked up once per process instead of on every request.

    The library's version builds a request object and four label dictionaries per request and finds each
    series by its labels, under a lock, four times: most of the no-op route's metrics cost in the
    benchmark's profile. A config with extra labels or exemplars gets the library's version unchanged.
    """

    def __init__(self, app: ASGIApp, config: PrometheusConfig) -> None:
        super().__init__(app, config)
        self._lean = not config.labels and config.exemplars is None and not config.excluded_http_methods
        self._in_progress: dict[tuple[str, str], Any] = {}
        self._finished: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._lean or scope["type"] != ScopeType.HTTP:
            await super().__call__(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path_template"] if self._config.group_path else scope["path"]
        started = self.begin(method, path)
        span = [200, 0.0]  # status, seconds until the body was sent

        async def noting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                span[0] = message["status"]
            elif message["type"] == "http.response.body":
                span[1] = time.perf_counter() - started
            await send(message)

        try:
            await self.app(scope, receive, noting_send)
        except Exception as error:
            # Raised past us (a rate-limit refusal): the app's outer handler answers it with this status.
            span[0], span[1] = getattr(error, "status_code", 500), time.perf_counter() - started
            raise
        finally:
            self.end(method, path, int(span[0]), span[1])

    def begin(self, method: str, path: str) -> float:
        """A request is in progress; the time it started, for ``end``."""
        in_progress = self._in_progress.get((method, path))
        if in_progress is None:
            labels = self._labels(method, path, 200)
            in_progress = self.requests_in_progress(labels).labels(*labels.values())
            self._in_progress[(method, path)] = in_progress
        in_progress.inc()
        return time.perf_counter()

    def end(self, method: str, path: str, status: int, seconds: float) -> None:
        """The request has its answer: out of progress, counted and timed by its status."""
        self._in_progress[(method, path)].dec()
        count, duration, errors = self._series(method, path, status)
        if errors is not None:
            errors.inc()
        count.inc()
        duration.observe(seconds)

    def _labels(self, method: str, path: str, status: int) -> dict[str, str | int | float]:
        # The library's label names, in its order.
        return {"method": method, "path": path, "status_code": status, "app_name": self._config.app_name}

    def _series(self, method: str, path: str, status: int) -> tuple[Any, Any, Any]:
        series = self._finished.get((method, path, status))
        if series is None:
            labels = self._labels(method, path, status)
            values = [*labels.values()]
            errors = self.requests_error_count(labels).labels(*values) if status >= 500 else None  # noqa: PLR2004
            series = (self.request_count(labels).labels(*values), self.request_time(labels).labels(*values), errors)
            self._finished[(method, path, status)] = series
        return series


def prometheus_config() -> PrometheusConfig:
    return PrometheusConfig(
        app_name="ledger",
        prefix="ledger",
        group_path=True,
        exclude=["/metrics"],
        middleware_class=RequestMetricsMiddleware,
    )


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
