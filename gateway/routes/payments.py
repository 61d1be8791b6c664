"""Buying credits: a user starts a Stripe Checkout, and Stripe's signed webhooks say how it went."""

from __future__ import annotations

import logging
from typing import Annotated, Any
from uuid import uuid4

import asyncpg
import msgspec
import stripe
from litestar import Controller, Request, Response, post
from litestar.datastructures import State
from litestar.params import HeaderParameter
from litestar.plugins.problem_details import ProblemDetailsException

from gateway.auth import Principal, requires
from gateway.calls import OptionalIdempotencyKeyHeader
from gateway.live import publish
from gateway.metrics import STRIPE_FAILURES
from gateway.openapi import NO_TOKEN, body_example, problem_responses
from gateway.problems import problem
from gateway.schemas import Body, PackageId
from gateway.stripe_events import details_of, to_fact
from ledger.errors import NotFoundError
from ledger.ids import derived_id, request_id
from ledger.payments import SessionDetails
from projections import queries

log = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 1_000_000


class PurchaseRequest(Body, frozen=True, kw_only=True):
    package_id: PackageId


class PurchaseResponse(msgspec.Struct, frozen=True, kw_only=True):
    checkout_session_id: str
    checkout_url: str


class WebhookAnswer(msgspec.Struct, frozen=True, kw_only=True):
    received: bool
    handled: bool


def _stripe(state: State) -> Any:
    if state.stripe is None:
        raise problem("payments-unavailable", 503, "STRIPE_SECRET_KEY is not configured")
    return state.stripe


class PurchaseController(Controller):
    path = "/api/credits/purchase"
    tags = ["User"]  # noqa: RUF012 - Litestar reads a list here.
    opt = requires("user")

    @post(
        operation_id="PurchaseCredits",
        summary="Start a Stripe Checkout for a credit package (card or PIX)",
        description="The credits are granted when Stripe reports the payment. 409 sales-paused while the "
        "oversell guard is on; 404 for an unknown or inactive package; 502 when Stripe refuses; 503 when Stripe "
        "cannot be reached.",
        status_code=201,
        responses=problem_responses(404, 409),
    )
    async def purchase(
        self,
        request: Request[Principal, Any, State],
        data: Annotated[PurchaseRequest, body_example("Buy the starter package", {"package_id": "starter"})],
        idempotency_key: OptionalIdempotencyKeyHeader,
    ) -> Response[PurchaseResponse]:
        started = await start_purchase(request.app.state, request.user, data.package_id, idempotency_key)
        return Response(started, status_code=201)


async def start_purchase(
    state: State, buyer: Principal, package_id: str, idempotency_key: str | None
) -> PurchaseResponse:
    """Open a Stripe Checkout for one package: the one way to buy, for the API and the user's page alike.

    Raises the ledger's refusals (an unknown or inactive package, sales paused) and problem details for
    Stripe's (502 refused, 503 not configured); Stripe unreachable propagates as a dependency fault.
    """
    client = _stripe(state)
    settings = state.settings
    now = state.clock()
    stats = await queries.system_stats(state.pool, now=now)
    package = await state.calls.read(state.ledger.prepare_purchase, package_id, potential_tokens=stats.potential_tokens)
    user_id = buyer.sub
    # The same key from the same user is the same purchase, so Stripe's own idempotency returns the
    # same session to a retry instead of opening a second one.
    purchase = (
        derived_id(request_id(buyer.scope, "purchase", idempotency_key), "purchase") if idempotency_key else uuid4()
    )
    metadata = {
        "user_id": user_id,
        "package_id": package.id,
        "credits": str(package.credits),
        "purchase_id": str(purchase),
    }
    line_item: dict[str, Any] = {"quantity": 1}
    if package.stripe_price_id:
        line_item["price"] = package.stripe_price_id
    else:
        line_item["price_data"] = {
            "currency": package.currency.lower(),
            "unit_amount": package.price_amount_minor,
            "product_data": {"name": f"{package.name} ({package.credits} credits)"},
        }
    params = {
        "mode": "payment",
        "line_items": [line_item],
        "allowed_payment_method_types": ["card", "pix"],
        "payment_method_options": {"pix": {"expires_after_seconds": settings.pix_expires_after_seconds}},
        "client_reference_id": user_id,
        "metadata": metadata,
        "payment_intent_data": {"metadata": metadata},
        "success_url": settings.checkout_success_url,
        "cancel_url": settings.checkout_cancel_url,
    }
    try:
        session = await client.v1.checkout.sessions.create_async(params, {"idempotency_key": f"purchase:{purchase}"})
    except stripe.APIConnectionError:
        raise  # Stripe unreachable or too slow: a 503 with Retry-After (gateway.problems), not a refusal.
    except stripe.StripeError as error:
        log.warning("stripe refused a checkout: %s", type(error).__name__)
        raise problem(
            "payment-provider-error", 502, error.user_message or "Stripe could not create the checkout"
        ) from None
    details = details_of(session) or SessionDetails(
        user_id=user_id,
        package_id=package.id,
        credits=package.credits,
        amount_minor=package.price_amount_minor,
        currency=package.currency,
    )
    await state.calls.read(state.ledger.start_checkout, session.id, details, now=now)
    return PurchaseResponse(checkout_session_id=session.id, checkout_url=session.url)


async def _record_failure(state: State, reason: str) -> None:
    """Count a Stripe webhook refused or failing, for the alert over five minutes (``projections.watch``)."""
    STRIPE_FAILURES.labels(reason).inc()
    try:
        await state.pool.execute("INSERT INTO stripe_webhook_failures (reason) VALUES ($1)", reason)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        log.warning("could not record a Stripe webhook failure (%s): the database is away", reason)


class StripeWebhookController(Controller):
    path = "/api/webhooks/stripe"
    tags = ["Stripe"]  # noqa: RUF012

    @post(
        operation_id="StripeWebhook",
        summary="Stripe's signed events: payments, refunds and disputes",
        description="Verifies Stripe-Signature on the raw body. 200 for every verified event, handled or "
        "ignored; the same event delivered again changes nothing. 400 for a missing, wrong or stale signature.",
        status_code=200,
        exclude_from_auth=True,
        security=NO_TOKEN,
        request_max_body_size=MAX_WEBHOOK_BYTES,
        responses=problem_responses(400, 503, auth=False),
    )
    async def webhook(
        self,
        request: Request[Any, Any, State],
        signature: Annotated[str | None, HeaderParameter(name="Stripe-Signature", required=False)] = None,
    ) -> WebhookAnswer:
        try:
            return await self._handle(request, signature)
        except ProblemDetailsException as refusal:
            await _record_failure(request.app.state, str(refusal.type_ or "refused"))
            raise
        except Exception:
            await _record_failure(request.app.state, "failed")
            raise

    async def _handle(self, request: Request[Any, Any, State], signature: str | None) -> WebhookAnswer:
        state = request.app.state
        secret = state.settings.stripe_webhook_secret
        if secret is None:
            raise problem("payments-unavailable", 503, "STRIPE_WEBHOOK_SECRET is not configured")
        payload = await request.body()
        if not signature:
            raise problem("invalid-signature", 400, "the Stripe-Signature header is missing")
        try:
            event = stripe.Webhook.construct_event(payload, signature, secret)
        except (ValueError, stripe.SignatureVerificationError):
            raise problem("invalid-signature", 400, "the signature does not match the body, or is too old") from None

        async def session_of_intent(intent: str) -> str | None:
            found: str | None = await state.calls.read(state.ledger.session_for_payment_intent, intent)
            return found

        fact = await to_fact(event, session_of_intent, state.stripe)
        if fact is None:
            return WebhookAnswer(received=True, handled=False)
        try:
            receipt = await state.calls.command("stripe-event", state.ledger.record_payment, fact, now=state.clock())
        except NotFoundError:
            # A session this ledger did not create (no purchase metadata): nothing to do, and no retry.
            log.info("stripe event %s is about a checkout this ledger does not know", event.id)
            return WebhookAnswer(received=True, handled=False)
        publish(state.channels, receipt.user_id, receipt.position)
        return WebhookAnswer(received=True, handled=True)
