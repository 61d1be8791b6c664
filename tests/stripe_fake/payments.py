"""Read access to what Checkout produced (PaymentIntents, charges, refunds, disputes, events) and refund create.

A webhook handler that follows Stripe's advice re-fetches the object an event names rather than trusting the
payload, so these endpoints matter as much as the events themselves.
"""

from __future__ import annotations

from tests.stripe_fake import errors, lifecycle
from tests.stripe_fake.call import Call, Handler
from tests.stripe_fake.listing import PAGINATION, paginate
from tests.stripe_fake.samples import StripeObject
from tests.stripe_fake.store import Store

_REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")


def retriever(kind: str) -> Handler:
    """A handler that returns the stored object of ``kind`` named in the URL."""

    def retrieve(store: Store, call: Call) -> StripeObject:
        call.params.only()
        return store.get(kind, call.path_id)

    return retrieve


def list_charges(store: Store, call: Call) -> StripeObject:
    call.params.only("payment_intent", *PAGINATION)
    intent = call.params.text("payment_intent")
    items = [charge for charge in store.newest_first("charge") if intent is None or charge["payment_intent"] == intent]
    return paginate(items, call.params, "/v1/charges", "charge")


def list_refunds(store: Store, call: Call) -> StripeObject:
    call.params.only("charge", "payment_intent", *PAGINATION)
    charge = call.params.text("charge")
    intent = call.params.text("payment_intent")
    items = [
        refund
        for refund in store.newest_first("refund")
        if (charge is None or refund["charge"] == charge) and (intent is None or refund["payment_intent"] == intent)
    ]
    return paginate(items, call.params, "/v1/refunds", "refund")


def create_refund(store: Store, call: Call) -> StripeObject:
    params = call.params
    params.only("charge", "payment_intent", "amount", "reason", "metadata")
    charge = params.text("charge")
    intent = params.text("payment_intent")
    if (charge is None) == (intent is None):
        raise errors.invalid("You must provide exactly one of `charge` or `payment_intent`.", param="charge")
    target = charge or intent or ""
    kind, param = ("charge", "charge") if charge else ("payment_intent", "payment_intent")
    store.get(kind, target, param=param, status=400)
    reason = params.text("reason")
    if reason is not None and reason not in _REFUND_REASONS:
        raise errors.invalid(f"Invalid reason: must be one of {', '.join(_REFUND_REASONS)}", param="reason")
    refund, _ = lifecycle.refund(
        store,
        target,
        params.integer("amount", minimum=1),
        reason=reason,
        metadata=params.metadata(),
        request=call.context,
    )
    return refund


def list_disputes(store: Store, call: Call) -> StripeObject:
    call.params.only("charge", "payment_intent", *PAGINATION)
    charge = call.params.text("charge")
    intent = call.params.text("payment_intent")
    items = [
        dispute
        for dispute in store.newest_first("dispute")
        if (charge is None or dispute["charge"] == charge) and (intent is None or dispute["payment_intent"] == intent)
    ]
    return paginate(items, call.params, "/v1/disputes", "dispute")


def list_events(store: Store, call: Call) -> StripeObject:
    call.params.only("type", "types", *PAGINATION)
    event_type = call.params.text("type")
    types = call.params.strings("types")
    items = [
        event
        for event in store.newest_first("event")
        if (event_type is None or _type_matches(event["type"], event_type))
        and (types is None or event["type"] in types)
    ]
    return paginate(items, call.params, "/v1/events", "event")


def _type_matches(event_type: str, pattern: str) -> bool:
    # Stripe's ``type`` filter accepts a trailing wildcard, such as ``checkout.session.*``.
    return event_type.startswith(pattern[:-1]) if pattern.endswith("*") else event_type == pattern
