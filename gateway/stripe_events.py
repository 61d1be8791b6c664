"""Stripe: the client, and the translation of verified webhook events into the ledger's payment facts.

Translation only: which checkout an event is about, and what it says (paid, refunded so far, disputed).
What that means for the buyer's credits is the ledger's business. Refunds and disputes name only the
PaymentIntent; the ledger's own index finds the checkout, and when an event comes before the ledger
has heard of the payment, Stripe itself is asked which Checkout Session the PaymentIntent belongs to.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import stripe

from gateway.settings import Settings
from ledger.payments import (
    AsyncPaymentFailed,
    AsyncPaymentSucceeded,
    ChargeRefunded,
    DisputeChanged,
    DisputeStatus,
    PaymentFact,
    SessionCompleted,
    SessionDetails,
    SessionExpired,
)

log = logging.getLogger(__name__)

# A Stripe that cannot be reached is a 503 within about two seconds: one retry of a connection that
# takes at most half a second to open. An answer may take longer (Stripe's own work), up to READ_TIMEOUT.
MAX_NETWORK_RETRIES = 1
CONNECT_TIMEOUT_SECONDS = 0.5
READ_TIMEOUT_SECONDS = 20.0
SESSION_EVENTS = {
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
}
WON_DISPUTE_STATUSES = {"won", "warning_closed", "prevented"}

SessionOfIntent = Callable[[str], Awaitable[str | None]]


def stripe_client(settings: Settings) -> tuple[stripe.StripeClient, stripe.HTTPXClient] | None:
    """The async Stripe client, or None when no secret key is configured (payments then answer 503)."""
    if settings.stripe_secret_key is None:
        return None
    http_client = stripe.HTTPXClient(timeout=httpx.Timeout(READ_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS))
    client = stripe.StripeClient(
        settings.stripe_secret_key,
        http_client=http_client,
        max_network_retries=MAX_NETWORK_RETRIES,
        base_addresses={"api": settings.stripe_api_base} if settings.stripe_api_base else {},
    )
    return client, http_client


def details_of(session: Any) -> SessionDetails | None:
    """The purchase a Checkout Session was created for, from the metadata the purchase endpoint set."""
    metadata = _plain(getattr(session, "metadata", None))
    try:
        return SessionDetails(
            user_id=str(metadata["user_id"]),
            package_id=str(metadata["package_id"]),
            credits=int(metadata["credits"]),
            amount_minor=int(session.amount_total),
            currency=str(session.currency).upper(),
        )
    except (KeyError, TypeError, ValueError):
        return None  # Not a session this ledger created.


async def to_fact(event: stripe.Event, session_of_intent: SessionOfIntent, client: Any) -> PaymentFact | None:
    """The payment fact an event states, or None for an event the ledger does not act on."""
    kind = event.type
    obj = event.data.object
    if kind in SESSION_EVENTS:
        return _session_fact(event.id, kind, obj)
    if kind == "charge.refunded":
        session = await _session(obj.payment_intent, session_of_intent, client)
        if session is None:
            return None
        return ChargeRefunded(
            stripe_event_id=event.id,
            session_id=session[0],
            details=session[1],
            charge_id=obj.id,
            charge_amount_minor=int(obj.amount),
            amount_refunded_minor=int(obj.amount_refunded),
        )
    if kind in {"charge.dispute.created", "charge.dispute.closed"}:
        intent = getattr(obj, "payment_intent", None)
        if intent is None and client is not None:
            intent = (await client.v1.charges.retrieve_async(obj.charge)).payment_intent
        session = await _session(intent, session_of_intent, client)
        if session is None:
            return None
        status: DisputeStatus = "open"
        if kind == "charge.dispute.closed":
            status = "won" if obj.status in WON_DISPUTE_STATUSES else "lost"
        return DisputeChanged(
            stripe_event_id=event.id,
            session_id=session[0],
            details=session[1],
            dispute_id=obj.id,
            amount_minor=int(obj.amount),
            status=status,
        )
    return None


def _session_fact(event_id: str, kind: str, session: Any) -> PaymentFact | None:
    details = details_of(session)
    common: dict[str, Any] = {"stripe_event_id": event_id, "session_id": session.id, "details": details}
    intent = session.payment_intent if isinstance(session.payment_intent, str) else None
    if kind == "checkout.session.completed":
        paid = session.payment_status in {"paid", "no_payment_required"}
        methods = list(session.payment_method_types or [])
        # A session paid at once was paid by card; one completed unpaid waits for an asynchronous method.
        method = ("card" if "card" in methods else None) if paid else ("pix" if "pix" in methods else None)
        return SessionCompleted(**common, paid=paid, payment_intent_id=intent, payment_method=method)
    if kind == "checkout.session.async_payment_succeeded":
        return AsyncPaymentSucceeded(**common, payment_intent_id=intent, payment_method="pix")
    if kind == "checkout.session.async_payment_failed":
        return AsyncPaymentFailed(**common)
    return SessionExpired(**common)


async def _session(
    intent: Any, session_of_intent: SessionOfIntent, client: Any
) -> tuple[str, SessionDetails | None] | None:
    if not isinstance(intent, str):
        return None
    known = await session_of_intent(intent)
    if known is not None:
        return known, None
    if client is None:
        return None
    sessions = await client.v1.checkout.sessions.list_async({"payment_intent": intent, "limit": 1})
    if not sessions.data:
        log.warning("no checkout session for payment intent %s; event ignored", intent)
        return None
    session = sessions.data[0]
    return session.id, details_of(session)


def _plain(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if hasattr(value, "to_dict"):
        return dict(value.to_dict())
    return dict(value)
