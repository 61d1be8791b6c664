"""Pytest fixtures for the fake; a conftest.py makes them available by importing them.

    from tests.stripe_fake.fixture import fake_stripe, fake_stripe_client, fake_stripe_server  # noqa: F401

One server runs for the whole session (starting a thread per test would be waste); ``fake_stripe`` hands each test
that server with its state wiped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import stripe

from tests.stripe_fake.server import FakeStripe


@pytest.fixture(scope="session")
def fake_stripe_server() -> Iterator[FakeStripe]:
    fake = FakeStripe().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_stripe(fake_stripe_server: FakeStripe) -> FakeStripe:
    fake_stripe_server.reset()
    return fake_stripe_server


@pytest.fixture
async def fake_stripe_client(fake_stripe: FakeStripe) -> AsyncIterator[stripe.StripeClient]:
    """A client for both ``create(...)`` and ``await create_async(...)``, on one httpx-based HTTP client.

    It is an async fixture so the httpx connection pool is closed on the event loop that opened it.
    """
    http_client = stripe.HTTPXClient(allow_sync_methods=True)
    yield fake_stripe.client(http_client=http_client)
    # stripe-python leaves these two untyped.
    http_client.close()  # type: ignore[no-untyped-call]
    await http_client.close_async()  # type: ignore[no-untyped-call]
