"""Makes the fake's fixtures available to its own self-tests."""

from tests.stripe_fake.checkout_fixtures import brl_price, make_session  # noqa: F401
from tests.stripe_fake.fixture import fake_stripe, fake_stripe_client, fake_stripe_server  # noqa: F401
