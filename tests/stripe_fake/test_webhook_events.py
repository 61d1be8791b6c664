"""Self-tests of the scenario helpers: each event is Stripe-shaped, signed as Stripe signs, and linked up."""

from __future__ import annotations

import time

import pytest
import stripe

from tests.stripe_fake import FakeStripe, signature_header
from tests.stripe_fake.checkout_fixtures import SessionFactory
from tests.stripe_fake.errors import StripeError
from tests.stripe_fake.samples import StripeObject


def construct(fake: FakeStripe, event: StripeObject) -> stripe.Event:
    """Deliver ``event`` the way Stripe does and parse it the way a webhook handler does."""
    signed = fake.sign(event)
    return stripe.Webhook.construct_event(signed.payload, signed.signature, fake.webhook_secret)


def assert_event(fake: FakeStripe, event: StripeObject, event_type: str, object_class: type) -> stripe.Event:
    assert event["id"].startswith("evt_")
    assert (event["object"], event["type"], event["livemode"]) == ("event", event_type, False)
    assert event["api_version"] == stripe.api_version
    assert abs(event["created"] - time.time()) < 60
    parsed = construct(fake, event)
    assert isinstance(parsed, stripe.Event)
    assert parsed.type == event_type
    assert isinstance(parsed.data.object, object_class)
    return parsed


def test_the_signature_matches_stripe_pythons_own() -> None:
    payload = '{"id": "evt_1"}'
    assert signature_header(payload, "whsec_x", 1700000000) == stripe.WebhookSignature.generate_signature_header(
        payload, "whsec_x", 1700000000
    )


def test_construct_event_rejects_tampered_stale_and_foreign_signatures(
    fake_stripe: FakeStripe, make_session: SessionFactory
) -> None:
    event = fake_stripe.complete_with_card(make_session().id)
    secret = fake_stripe.webhook_secret
    signed = fake_stripe.sign(event)
    assert stripe.Webhook.construct_event(signed.payload, signed.signature, secret).id == event["id"]

    tampered = signed.payload.replace('"paid"', '"unpaid"')
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(tampered, signed.signature, secret)

    stale = fake_stripe.sign(event, timestamp=int(time.time()) - 301)
    with pytest.raises(stripe.SignatureVerificationError, match="tolerance"):
        stripe.Webhook.construct_event(stale.payload, stale.signature, secret)

    foreign = fake_stripe.sign(event, secret="whsec_someone_else")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(foreign.payload, foreign.signature, secret)


def test_card_payment(fake_stripe: FakeStripe, make_session: SessionFactory) -> None:
    session = make_session()
    parsed = assert_event(
        fake_stripe, fake_stripe.complete_with_card(session.id), "checkout.session.completed", stripe.checkout.Session
    )
    paid = parsed.data.object
    assert (paid.id, paid.status, paid.payment_status) == (session.id, "complete", "paid")
    assert paid.metadata.to_dict() == {"user_id": "42", "package": "p100", "credits": "100"}
    assert paid.client_reference_id == "user_42"

    intent = fake_stripe.get(paid.payment_intent)
    charge = fake_stripe.get(intent["latest_charge"])
    assert (intent["status"], intent["amount_received"]) == ("succeeded", 1990)
    assert charge["payment_intent"] == intent["id"]
    assert charge["payment_method_details"]["type"] == "card"
    # The session's own metadata stays on the session; payment_intent_data[metadata] is what reaches the charge.
    assert intent["metadata"] == charge["metadata"] == {"user_id": "42", "package": "p100"}
    assert [event["type"] for event in fake_stripe.events] == [
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.succeeded",
        "checkout.session.completed",
    ]


def test_pix_paid_later(
    fake_stripe: FakeStripe, fake_stripe_client: stripe.StripeClient, make_session: SessionFactory
) -> None:
    session = make_session()
    pending = assert_event(
        fake_stripe, fake_stripe.complete_with_pix(session.id), "checkout.session.completed", stripe.checkout.Session
    )
    assert (pending.data.object.status, pending.data.object.payment_status) == ("complete", "unpaid")
    intent = fake_stripe_client.v1.payment_intents.retrieve(pending.data.object.payment_intent)
    assert intent.status == "requires_action"
    assert intent.next_action.pix_display_qr_code.hosted_instructions_url.startswith("https://")

    succeeded = assert_event(
        fake_stripe,
        fake_stripe.pix_paid(session.id),
        "checkout.session.async_payment_succeeded",
        stripe.checkout.Session,
    )
    assert succeeded.data.object.payment_status == "paid"
    # The event is a snapshot; the earlier one still says unpaid, as a late redelivery from Stripe would.
    assert fake_stripe.events_of_type("checkout.session.completed")[0]["data"]["object"]["payment_status"] == "unpaid"
    charge = fake_stripe_client.v1.charges.retrieve(fake_stripe.get(intent.id)["latest_charge"])
    assert charge.payment_method_details.type == "pix"
    assert fake_stripe_client.v1.checkout.sessions.retrieve(session.id).payment_status == "paid"


def test_pix_failed(fake_stripe: FakeStripe, make_session: SessionFactory) -> None:
    session = make_session()
    fake_stripe.complete_with_pix(session.id)
    failed = assert_event(
        fake_stripe,
        fake_stripe.pix_failed(session.id),
        "checkout.session.async_payment_failed",
        stripe.checkout.Session,
    )
    assert (failed.data.object.status, failed.data.object.payment_status) == ("complete", "unpaid")
    assert fake_stripe.events_of_type("payment_intent.payment_failed")
    with pytest.raises(StripeError, match="no Pix payment waiting"):
        fake_stripe.pix_paid(session.id)


def test_pix_is_only_possible_where_offered(fake_stripe: FakeStripe, make_session: SessionFactory) -> None:
    session = make_session(allowed_payment_method_types=["card"])
    with pytest.raises(StripeError, match="does not offer pix"):
        fake_stripe.complete_with_pix(session.id)


def test_expired(fake_stripe: FakeStripe, make_session: SessionFactory) -> None:
    session = make_session()
    expired = assert_event(
        fake_stripe, fake_stripe.expire_session(session.id), "checkout.session.expired", stripe.checkout.Session
    )
    assert (expired.data.object.status, expired.data.object.payment_status) == ("expired", "unpaid")
    with pytest.raises(StripeError, match="not `open`"):
        fake_stripe.complete_with_card(session.id)


def test_partial_then_full_refund(
    fake_stripe: FakeStripe, fake_stripe_client: stripe.StripeClient, make_session: SessionFactory
) -> None:
    session = make_session()
    fake_stripe.complete_with_card(session.id)

    partial = assert_event(fake_stripe, fake_stripe.refund(session.id, 500), "charge.refunded", stripe.Charge)
    assert (partial.data.object.amount_refunded, partial.data.object.refunded) == (500, False)
    full = assert_event(fake_stripe, fake_stripe.refund(session.id), "charge.refunded", stripe.Charge)
    charge = full.data.object
    assert (charge.amount, charge.amount_refunded, charge.refunded) == (1990, 1990, True)
    assert charge.metadata.to_dict() == {"user_id": "42", "package": "p100"}

    refunds = fake_stripe_client.v1.refunds.list({"charge": charge.id})
    assert sorted(refund.amount for refund in refunds.data) == [500, 1490]
    assert {refund.payment_intent for refund in refunds.data} == {charge.payment_intent}
    with pytest.raises(StripeError) as again:
        fake_stripe.refund(session.id)
    assert again.value.code == "charge_already_refunded"


def test_refund_through_the_api(
    fake_stripe: FakeStripe, fake_stripe_client: stripe.StripeClient, make_session: SessionFactory
) -> None:
    session = make_session()
    fake_stripe.complete_with_card(session.id)
    intent_id = fake_stripe.get(session.id)["payment_intent"]
    refund = fake_stripe_client.v1.refunds.create({"payment_intent": intent_id, "amount": 990})
    assert (refund.object, refund.amount, refund.status) == ("refund", 990, "succeeded")
    [event] = fake_stripe.events_of_type("charge.refunded")
    assert event["data"]["object"]["amount_refunded"] == 990
    with pytest.raises(stripe.InvalidRequestError) as too_much:
        fake_stripe_client.v1.refunds.create({"payment_intent": intent_id, "amount": 1001})
    assert too_much.value.param == "amount"


@pytest.mark.parametrize("outcome", ["won", "lost"])
def test_dispute_opened_and_closed(fake_stripe: FakeStripe, make_session: SessionFactory, outcome: str) -> None:
    session = make_session()
    fake_stripe.complete_with_card(session.id)
    created = assert_event(fake_stripe, fake_stripe.open_dispute(session.id), "charge.dispute.created", stripe.Dispute)
    dispute = created.data.object
    intent = fake_stripe.get(session.id)["payment_intent"]
    assert (dispute.charge, dispute.payment_intent) == (fake_stripe.get(intent)["latest_charge"], intent)
    assert (dispute.amount, dispute.status) == (1990, "needs_response")
    assert fake_stripe.get(dispute.charge)["disputed"] is True

    closed = assert_event(
        fake_stripe, fake_stripe.close_dispute(dispute.id, outcome), "charge.dispute.closed", stripe.Dispute
    )
    assert (closed.data.object.id, closed.data.object.status) == (dispute.id, outcome)
    assert bool(fake_stripe.events_of_type("charge.dispute.funds_reinstated")) == (outcome == "won")


def test_events_can_be_fetched_back(
    fake_stripe: FakeStripe, fake_stripe_client: stripe.StripeClient, make_session: SessionFactory
) -> None:
    event = fake_stripe.complete_with_card(make_session().id)
    assert fake_stripe_client.v1.events.retrieve(event["id"]).type == "checkout.session.completed"
    listed = fake_stripe_client.v1.events.list({"type": "checkout.session.*"})
    assert [item.id for item in listed.data] == [event["id"]]
