"""The Litestar application factory: the gateway's parts, assembled once from the settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import asyncpg
from litestar import Litestar
from litestar.config.app import AppConfig

from gateway.auth import jwt_auth
from gateway.body import decode_strictly
from gateway.calls import LedgerCalls
from gateway.framing import end_json_with_newline
from gateway.hot import HotPath
from gateway.live import channels_plugin
from gateway.logs import RequestIdMiddleware, send_request_id
from gateway.metrics import MetricsController, RequestMetricsMiddleware, prometheus_config
from gateway.openapi import openapi_config, swagger_ui_files
from gateway.problems import EXCEPTION_HANDLERS, problem_details_plugin
from gateway.ratelimit import Counter, MemoryCounter, RateLimitMiddleware, RedisCounter
from gateway.routes.admin import AdminController
from gateway.routes.health import HealthController
from gateway.routes.notifications import ContactsController, NotificationsController, WebhookEndpointsController
from gateway.routes.pages import CheckoutReturnPages
from gateway.routes.pages_admin import AdminCreditPages
from gateway.routes.pages_notifications import NotificationsPage
from gateway.routes.pages_session import pages_router
from gateway.routes.pages_settings import BillingConfigPage, PackagesPage
from gateway.routes.pages_user import MyCreditsPage
from gateway.routes.payments import PurchaseController, StripeWebhookController
from gateway.routes.public import PublicController
from gateway.routes.service import AccountsController, UsageController
from gateway.routes.user import UserCreditsController
from gateway.settings import Settings
from gateway.stripe_events import stripe_client
from gateway.web import static_files, template_config
from ledger.application import Ledger

MAX_BODY_BYTES = 64 * 1024
REDIS_TIMEOUT_SECONDS = 0.5
READ_TIMEOUT_SECONDS = 5.0
# Paths that need no token: probes, metrics, the API document and its viewer's files, the public catalogue,
# Stripe's webhook, and the two pages a buyer's browser returns to from Stripe Checkout. The other pages
# (gateway.routes.pages_*) are opened with a session cookie instead of a token; their own guard checks it.
PUBLIC_PATHS = [
    "^/health/",
    "^/metrics$",
    "^/schema",
    "^/static/",
    "^/api/credits/packages$",
    "^/api/webhooks/",
    "^/credits/success$",
    "^/credits/cancel$",
    "^/login$",
    "^/logout$",
    "^/credits$",
    "^/credits/(history|stream|buy)$",
    "^/admin/credits$",
    "^/admin/credits/(live|adjust|users)$",
    "^/admin/credits/users/[^/]+$",
    "^/admin/billing-config$",
    "^/admin/packages(/[^/]+)?$",
]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _ignore(_: BaseException) -> None:
    """Without Redis there is no Redis failure to report."""


def _version() -> str:
    try:
        return version("credit-ledger")
    except PackageNotFoundError:
        return "0.0.0"


def _request_id_outermost(app_config: AppConfig) -> AppConfig:
    # The auth middleware puts itself first; the request id and the access log must see even its 401s.
    app_config.middleware.insert(0, RequestIdMiddleware())
    return app_config


class LedgerApp(Litestar):
    """The app, with the metered-work routes answered on their lean path first (``gateway.hot``)."""

    hot: HotPath | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.hot is not None and (route := self.hot.route(scope)) is not None:
            scope["app"] = scope["litestar_app"] = self
            scope.setdefault("state", {})
            delegated = await self.hot.answer(*route, scope, receive, send)
            if delegated is None:
                return
            receive = delegated
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    ledger: Ledger,
    database_url: str,
    *,
    clock: Callable[[], datetime] = _utc_now,
    lean_routes: bool = True,
) -> Litestar:
    redis: Any | None = None
    counter: Counter
    on_redis_error: Callable[[BaseException], None]
    if settings.redis_url is not None:
        from redis.asyncio import Redis  # noqa: PLC0415

        redis = Redis.from_url(
            settings.redis_url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            health_check_interval=30,
        )
        counter = RedisCounter(redis)
        on_redis_error = counter.failed
    else:
        counter = MemoryCounter()
        on_redis_error = _ignore
    channels = channels_plugin(redis, on_redis_error)
    stripe = stripe_client(settings)

    @asynccontextmanager
    async def resources(app: Litestar) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(
            database_url,
            min_size=1,
            max_size=settings.db_pool_size,
            # A database that accepts no connection, or stops answering, is a 503 within seconds, not a
            # request that hangs: asyncpg's own defaults are a minute to connect and no bound on a query.
            timeout=settings.db_connect_timeout_seconds,
            command_timeout=READ_TIMEOUT_SECONDS,
        )
        app.state.pool = pool
        try:
            yield
        finally:
            await ledger.close_loop_writer()
            await pool.close()
            if stripe is not None:
                await stripe[1].close_async()  # type: ignore[no-untyped-call]
            if redis is not None:
                await redis.aclose()

    auth = jwt_auth(settings.jwt_secret, exclude=PUBLIC_PATHS)
    metrics = prometheus_config()
    app = LedgerApp(
        route_handlers=[
            HealthController,
            MetricsController,
            PublicController,
            UserCreditsController,
            UsageController,
            AccountsController,
            AdminController,
            PurchaseController,
            StripeWebhookController,
            WebhookEndpointsController,
            NotificationsController,
            ContactsController,
            CheckoutReturnPages,
            pages_router(
                settings.jwt_secret,
                secure=settings.public_url.startswith("https://"),
                handlers=[AdminCreditPages, BillingConfigPage, PackagesPage, NotificationsPage, MyCreditsPage],
            ),
            static_files(),
            swagger_ui_files(),
        ],
        lifespan=[resources],
        plugins=[problem_details_plugin(), channels],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        middleware=[metrics.middleware, RateLimitMiddleware()],
        on_app_init=[auth.on_app_init, _request_id_outermost],
        before_request=decode_strictly,
        before_send=[send_request_id, end_json_with_newline],
        openapi_config=openapi_config(_version()),
        template_config=template_config(),
        request_max_body_size=MAX_BODY_BYTES,
        # Logging is configured once by the process (JSON, the configured level); Litestar's default would
        # replace it with its own handler at INFO.
        logging_config=None,
        debug=False,
    )
    app.state.update(
        settings=settings,
        ledger=ledger,
        # With group commit the threads mostly wait for the writer's batch; without it each holds a
        # connection, so there are no more of them than the pool has connections.
        calls=LedgerCalls(
            ledger,
            threads=settings.ledger_threads
            if settings.group_commit_max_batch > 0
            else settings.db_pool_size + settings.db_max_overflow,
        ),
        clock=clock,
        channels=channels,
        redis=redis,
        stripe=stripe[0] if stripe is not None else None,
        rate_counter=counter,
        rate_limits={
            "user": settings.rate_limit_user_per_minute,
            "service": settings.rate_limit_service_per_minute,
            "admin": settings.rate_limit_admin_per_minute,
        },
    )
    if lean_routes:
        app.hot = HotPath(app, RequestMetricsMiddleware(_unreached, metrics), MAX_BODY_BYTES)
    return app


async def _unreached(scope: Any, receive: Any, send: Any) -> None:
    """The app the lean path's metrics object wraps: it only counts, and never calls on."""
    raise NotImplementedError
