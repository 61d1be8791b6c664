"""Self-tests of the fake's API, driven through stripe-python 16 exactly as the service drives Stripe."""

from __future__ import annotations

import httpx
import pytest
import stripe

from tests.stripe_fake import FakeStripe
from tests.stripe_fake.checkout_fixtures import SessionFactory
from tests.stripe_fake.forms import decode


def test_the_pinned_api_version_is_the_one_the_fake_speaks(fake_stripe: FakeStripe) -> None:
    # The fake's rules (allowed_payment_method_types, no payment_method_types) follow this version.
    assert stripe.api_version == "2026-10-28.endive"
    assert fake_stripe.store.api_version == stripe.api_version


def test_requests_without_an_api_key_get_stripes_401(fake_stripe: FakeStripe) -> None:
    response = httpx.get(f"{fake_stripe.api_base}/v1/products")
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "You did not provide an API key" in error["message"]


def test_a_live_key_is_refused(fake_stripe_client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.AuthenticationError, match="Invalid API Key provided"):
        fake_stripe_client.v1.products.list(options={"api_key": "sk_live_0123456789abcdef"})


def test_unknown_urls_are_404s(fake_stripe: FakeStripe) -> None:
    response = httpx.get(f"{fake_stripe.api_base}/v1/nonsense", headers={"Authorization": "Bearer sk_test_x"})
    assert response.status_code == 404
    assert "Unrecognized request URL (GET: /v1/nonsense)" in response.json()["error"]["message"]


async def test_stripe_pythons_default_http_clients_work_sync_and_async(fake_stripe: FakeStripe) -> None:
    # Without an http_client, stripe-python uses requests for sync calls and falls back to httpx for async ones.
    # Calling the sync client inside a coroutine blocks the event loop, which is fine: the fake has its own thread.
    client = fake_stripe.client()
    created = client.v1.products.create({"name": "sync"})
    listed = await client.v1.products.list_async()
    assert [product.id for product in listed.data] == [created.id]
    assert fake_stripe.requests[0].headers["stripe-version"] == stripe.api_version
    http_client = client._requestor._client
    http_client.close()
    await http_client.close_async()


def test_catalogue_create_update_and_lookup(fake_stripe_client: stripe.StripeClient) -> None:
    client = fake_stripe_client
    product = client.v1.products.create({"id": "credits_p100", "name": "100 credits", "metadata": {"a": "1", "b": "2"}})
    assert (product.id, product.object, product.active) == ("credits_p100", "product", True)

    updated = client.v1.products.update(product.id, {"name": "100 AI credits", "metadata": {"a": "", "c": "3"}})
    # Metadata updates merge, and an empty value deletes its key.
    assert updated.name == "100 AI credits"
    assert updated.metadata.to_dict() == {"b": "2", "c": "3"}
    assert client.v1.products.retrieve(product.id).name == "100 AI credits"

    with pytest.raises(stripe.InvalidRequestError) as exists:
        client.v1.products.create({"id": "credits_p100", "name": "again"})
    assert exists.value.code == "resource_already_exists"

    old = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "brl",
            "unit_amount": 1990,
            "lookup_key": "credits_p100_brl",
        }
    )
    assert (old.type, old.unit_amount, old.currency, old.lookup_key) == ("one_time", 1990, "brl", "credits_p100_brl")

    with pytest.raises(stripe.InvalidRequestError) as taken:
        client.v1.prices.create(
            {"product": product.id, "currency": "brl", "unit_amount": 2490, "lookup_key": "credits_p100_brl"}
        )
    assert taken.value.param == "lookup_key"

    new = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "brl",
            "unit_amount": 2490,
            "lookup_key": "credits_p100_brl",
            "transfer_lookup_key": True,
        }
    )
    client.v1.prices.update(old.id, {"active": False})

    found = client.v1.prices.list(
        {"lookup_keys": ["credits_p100_brl", "other"], "active": True, "expand": ["data.product"]}
    )
    assert [price.id for price in found.data] == [new.id]
    assert found.data[0].product.name == "100 AI credits"
    assert client.v1.prices.retrieve(old.id).lookup_key is None
    assert [price.id for price in client.v1.prices.list({"active": False}).data] == [old.id]


def test_lists_paginate_newest_first(fake_stripe_client: stripe.StripeClient) -> None:
    ids = [fake_stripe_client.v1.products.create({"name": f"p{index}"}).id for index in range(5)]
    first = fake_stripe_client.v1.products.list({"limit": 2})
    assert [product.id for product in first.data] == ids[::-1][:2]
    assert first.has_more
    every = [product.id for product in fake_stripe_client.v1.products.list({"limit": 2}).auto_paging_iter()]
    assert every == ids[::-1]


async def test_checkout_session_lifecycle_with_the_async_client(
    fake_stripe: FakeStripe, fake_stripe_client: stripe.StripeClient, brl_price: stripe.Price
) -> None:
    sessions = fake_stripe_client.v1.checkout.sessions
    session = await sessions.create_async(
        {
            "mode": "payment",
            "line_items": [{"price": brl_price.id, "quantity": 2}],
            "currency": "brl",
            "allowed_payment_method_types": ["card", "pix"],
            "payment_method_options": {"pix": {"expires_after_seconds": 3600}},
            "success_url": "https://app.example/ok",
            "cancel_url": "https://app.example/cancel",
            "client_reference_id": "user_42",
            "metadata": {"user_id": "42"},
        }
    )
    assert isinstance(session, stripe.checkout.Session)
    assert session.id.startswith("cs_test_")
    assert session.url == f"https://checkout.stripe.com/c/pay/{session.id}"
    assert (session.object, session.mode, session.status, session.payment_status) == (
        "checkout.session",
        "payment",
        "open",
        "unpaid",
    )
    assert (session.amount_total, session.currency) == (3980, "brl")
    assert session.payment_method_types == ["card", "pix"]
    assert session.payment_method_options.pix.expires_after_seconds == 3600
    assert session.client_reference_id == "user_42"
    assert session.metadata.to_dict() == {"user_id": "42"}
    # Checkout creates the PaymentIntent only when the customer submits.
    assert session.payment_intent is None

    fetched = await sessions.retrieve_async(session.id, {"expand": ["line_items"]})
    assert fetched.line_items.data[0].price.id == brl_price.id
    assert fetched.line_items.data[0].quantity == 2

    expired = await sessions.expire_async(session.id)
    assert (expired.status, expired.url) == ("expired", None)
    [event] = fake_stripe.events_of_type("checkout.session.expired")
    assert event["request"]["id"] is not None

    with pytest.raises(stripe.InvalidRequestError, match="status of `open`"):
        await sessions.expire_async(session.id)


async def test_async_idempotent_retry_replays_the_first_response(
    fake_stripe: FakeStripe, fake_stripe_client: stripe.StripeClient, brl_price: stripe.Price
) -> None:
    params = {
        "mode": "payment",
        "line_items": [{"price": brl_price.id, "quantity": 1}],
        "success_url": "https://a.example",
    }
    options = {"idempotency_key": "checkout:purchase-1"}
    sessions = fake_stripe_client.v1.checkout.sessions
    first = await sessions.create_async(params, options)
    again = await sessions.create_async(params, options)
    assert again.id == first.id
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(fake_stripe.store.objects["checkout.session"]) == 1

    with pytest.raises(stripe.IdempotencyError, match="same parameters"):
        await sessions.create_async(params | {"client_reference_id": "someone else"}, options)


def test_missing_objects_raise_invalid_request_error_with_stripes_message(
    fake_stripe_client: stripe.StripeClient,
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as missing:
        fake_stripe_client.v1.checkout.sessions.retrieve("cs_test_missing")
    assert missing.value.http_status == 404
    assert missing.value.code == "resource_missing"
    assert missing.value.param == "id"
    assert missing.value.user_message == "No such checkout.session: 'cs_test_missing'"


def test_a_missing_price_in_line_items_is_a_400_naming_the_param(make_session: SessionFactory) -> None:
    with pytest.raises(stripe.InvalidRequestError) as missing:
        make_session(line_items=[{"price": "price_missing", "quantity": 1}])
    assert (missing.value.http_status, missing.value.code) == (400, "resource_missing")
    assert missing.value.param == "line_items[0][price]"


def test_payment_method_types_is_rejected_under_endive(make_session: SessionFactory) -> None:
    with pytest.raises(stripe.InvalidRequestError) as removed:
        make_session(payment_method_types=["card", "pix"])
    assert (removed.value.code, removed.value.param) == ("parameter_unknown", "payment_method_types")


def test_an_older_pinned_version_still_takes_payment_method_types(
    fake_stripe_client: stripe.StripeClient, brl_price: stripe.Price
) -> None:
    params = {
        "mode": "payment",
        "line_items": [{"price": brl_price.id, "quantity": 1}],
        "payment_method_types": ["card", "pix"],
    }
    session = fake_stripe_client.v1.checkout.sessions.create(params, {"stripe_version": "2026-08-26.dahlia"})
    assert session.payment_method_types == ["card", "pix"]


def test_pix_is_silently_dropped_where_stripe_cannot_offer_it(
    fake_stripe: FakeStripe, fake_stripe_client: stripe.StripeClient, make_session: SessionFactory
) -> None:
    usd = fake_stripe_client.v1.prices.create({"product": "credits_p100", "currency": "usd", "unit_amount": 499})
    assert make_session(line_items=[{"price": usd.id, "quantity": 1}]).payment_method_types == ["card"]

    fake_stripe.enabled_payment_methods = ["card"]
    assert make_session().payment_method_types == ["card"]
    with pytest.raises(stripe.InvalidRequestError, match="No valid payment method types"):
        make_session(allowed_payment_method_types=["pix"])


def test_pix_expiry_must_lie_within_stripes_range(make_session: SessionFactory) -> None:
    with pytest.raises(stripe.InvalidRequestError) as too_short:
        make_session(payment_method_options={"pix": {"expires_after_seconds": 59}})
    assert too_short.value.param == "payment_method_options[pix][expires_after_seconds]"


def test_unknown_parameters_are_rejected(make_session: SessionFactory) -> None:
    with pytest.raises(
        stripe.InvalidRequestError, match="Received unknown parameter: payment_intent_data\\[metdata\\]"
    ):
        make_session(payment_intent_data={"metdata": {"user_id": "42"}})


def test_sessions_are_found_by_payment_intent(
    fake_stripe: FakeStripe, fake_stripe_client: stripe.StripeClient, make_session: SessionFactory
) -> None:
    session = make_session()
    make_session()
    fake_stripe.complete_with_card(session.id)
    paid = fake_stripe_client.v1.checkout.sessions.retrieve(session.id, {"expand": ["payment_intent.latest_charge"]})
    found = fake_stripe_client.v1.checkout.sessions.list({"payment_intent": paid.payment_intent.id})
    assert [item.id for item in found.data] == [session.id]
    assert paid.payment_intent.latest_charge.payment_intent == paid.payment_intent.id


def test_curl_style_bodies_decode_like_stripe_pythons() -> None:
    body = "expand[]=a&expand[]=b&line_items[0][price]=p&line_items[1][quantity]=2&metadata[0]=zero&metadata[k]="
    assert decode(body) == {
        "expand": ["a", "b"],
        "line_items": [{"price": "p"}, {"quantity": "2"}],
        "metadata": {"0": "zero", "k": ""},
    }
