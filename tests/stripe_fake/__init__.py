"""A stateful fake of Stripe's API for the test suite; see README.md."""

from tests.stripe_fake.errors import StripeError
from tests.stripe_fake.server import FakeStripe
from tests.stripe_fake.signing import DEFAULT_WEBHOOK_SECRET, SignedWebhook, sign_event, signature_header

__all__ = ["DEFAULT_WEBHOOK_SECRET", "FakeStripe", "SignedWebhook", "StripeError", "sign_event", "signature_header"]
