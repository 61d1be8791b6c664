"""Makes the checkout helpers available to the fake's own self-tests (its fixtures come from tests/conftest.py)."""

from tests.stripe_fake.checkout_fixtures import brl_price, make_session  # noqa: F401
