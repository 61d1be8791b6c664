"""Webhook signing exactly as Stripe does it, so tests can deliver events that pass ``construct_event``.

Stripe sends ``Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" keyed with the whole
whsec_ secret>``. This is written out here rather than borrowed from stripe-python, so that the self-test checks the
scheme against the SDK's verifier instead of the SDK against itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from tests.stripe_fake.samples import StripeObject

DEFAULT_WEBHOOK_SECRET = "whsec_fake_stripe_0123456789abcdefghijklmnopqrstuv"


def signature_header(payload: str, secret: str, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def event_payload(event: StripeObject) -> str:
    # Stripe delivers pretty-printed JSON; a handler that re-serializes the body instead of verifying the raw bytes
    # then fails here as it would against Stripe.
    return json.dumps(event, indent=2)


@dataclass(frozen=True)
class SignedWebhook:
    """A webhook delivery: the exact body to POST and its ``Stripe-Signature`` header."""

    payload: str
    signature: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": self.signature}


def sign_event(event: StripeObject, secret: str, timestamp: int | None = None) -> SignedWebhook:
    payload = event_payload(event)
    return SignedWebhook(payload, signature_header(payload, secret, timestamp))
