"""Fixtures for the self-tests: a catalogue price and a factory of Checkout Sessions made the way the service does.

The main suite can reuse them the same way, by importing them into a conftest.py.
"""

from collections.abc import Callable
from typing import Any, cast

import pytest
import stripe
from stripe.params.checkout import SessionCreateParams

SessionFactory = Callable[..., stripe.checkout.Session]


@pytest.fixture
def brl_price(fake_stripe_client: stripe.StripeClient) -> stripe.Price:
    """A 100-credit package sold for R$19.90, as the price-sync script would create it."""
    product = fake_stripe_client.v1.products.create({"id": "credits_p100", "name": "100 credits"})
    return fake_stripe_client.v1.prices.create(
        {
            "product": product.id,
            "currency": "brl",
            "unit_amount": 1990,
            "lookup_key": "credits_p100_brl",
            "metadata": {"credits": "100"},
        }
    )


@pytest.fixture
def make_session(fake_stripe_client: stripe.StripeClient, brl_price: stripe.Price) -> SessionFactory:
    """Creates a Checkout Session for ``brl_price`` the way the service does; keyword arguments override params."""

    def make(**overrides: Any) -> stripe.checkout.Session:
        params: dict[str, Any] = {
            "mode": "payment",
            "line_items": [{"price": brl_price.id, "quantity": 1}],
            "allowed_payment_method_types": ["card", "pix"],
            "payment_method_options": {"pix": {"expires_after_seconds": 3600}},
            "success_url": "https://app.example/credits/ok?session_id={CHECKOUT_SESSION_ID}",
            "cancel_url": "https://app.example/credits/cancel",
            "client_reference_id": "user_42",
            "metadata": {"user_id": "42", "package": "p100", "credits": "100"},
            "payment_intent_data": {"metadata": {"user_id": "42", "package": "p100"}},
        }
        return fake_stripe_client.v1.checkout.sessions.create(cast("SessionCreateParams", params | overrides))

    return make
