"""What happens after Checkout: the customer pays or not, then refunds and disputes, each with Stripe's events.

Every transition changes the stored objects the way Stripe would and records the events Stripe would send, in a
plausible order, returning the one a webhook handler cares about. Stripe itself guarantees no order, so tests should
also deliver them shuffled. A step that makes no sense in the current state (paying an expired session, refunding
more than was paid) raises ``StripeError`` with an explanation, as the API would.

How the objects link up, as in Stripe: Checkout creates the PaymentIntent only when the customer submits, so
``session.payment_intent`` is null until then. The PaymentIntent carries ``payment_intent_data[metadata]`` from the
session create call, not the session's own ``metadata``; each charge copies the PaymentIntent's metadata and has
``payment_intent``; refunds and disputes have ``charge`` and ``payment_intent``.
"""

from __future__ import annotations

from typing import Literal

from tests.stripe_fake import errors, objects
from tests.stripe_fake.ids import new_id
from tests.stripe_fake.samples import StripeObject
from tests.stripe_fake.store import RequestContext, Store

DisputeOutcome = Literal["won", "lost"]

_DISPUTE_RESPONSE_WINDOW = 7 * 24 * 3600
_PIX_QR_SAMPLE = "00020101021226700014br.gov.bcb.pix2548pix.example.com/qr/v3/at/fake5204000053039865802BR6304ABCD"


def complete_with_card(store: Store, session_id: str) -> StripeObject:
    session = _open_session(store, session_id, "card")
    intent = _new_payment_intent(store, session)
    charge = _new_charge(store, intent, session, objects.card_details())
    intent.update(status="succeeded", amount_received=intent["amount"], latest_charge=charge["id"])
    store.emit("payment_intent.succeeded", intent)
    _complete(session, intent, payment_status="paid")
    return store.emit("checkout.session.completed", session)


def complete_with_pix(store: Store, session_id: str) -> StripeObject:
    session = _open_session(store, session_id, "pix")
    intent = _new_payment_intent(store, session)
    expires_after = store.checkout_extras[session_id].pix_expires_after_seconds
    # The customer submitted Checkout; Stripe now shows the Pix QR code and waits for the bank transfer.
    intent.update(
        status="requires_action",
        next_action={
            "type": "pix_display_qr_code",
            "pix_display_qr_code": {
                "data": _PIX_QR_SAMPLE,
                "expires_at": store.now() + expires_after,
                "hosted_instructions_url": f"https://payments.stripe.com/pix/instructions/{new_id('', 40)}",
                "image_url_png": f"https://qr.stripe.com/{new_id('', 40)}.png",
                "image_url_svg": f"https://qr.stripe.com/{new_id('', 40)}.svg",
            },
        },
    )
    store.emit("payment_intent.requires_action", intent)
    _complete(session, intent, payment_status="unpaid")
    return store.emit("checkout.session.completed", session)


def pix_paid(store: Store, session_id: str) -> StripeObject:
    session, intent = _pending_pix(store, session_id)
    charge = _new_charge(store, intent, session, objects.pix_details())
    intent.update(status="succeeded", amount_received=intent["amount"], latest_charge=charge["id"], next_action=None)
    store.emit("payment_intent.succeeded", intent)
    session["payment_status"] = "paid"
    return store.emit("checkout.session.async_payment_succeeded", session)


def pix_failed(store: Store, session_id: str) -> StripeObject:
    session, intent = _pending_pix(store, session_id)
    # The Pix code expired unpaid: the attempt fails and the PaymentIntent waits for a new payment method.
    intent.update(
        status="requires_payment_method",
        next_action=None,
        payment_method=None,
        last_payment_error={
            "code": "payment_intent_payment_attempt_expired",
            "message": "The Pix code expired before the customer paid.",
            "type": "invalid_request_error",
        },
    )
    store.emit("payment_intent.payment_failed", intent)
    return store.emit("checkout.session.async_payment_failed", session)


def expire(store: Store, session_id: str, request: RequestContext | None = None) -> StripeObject:
    session = store.get("checkout.session", session_id)
    if session["status"] != "open":
        raise errors.invalid(
            f"Only Checkout Sessions with a status of `open` can be expired; {session_id} is `{session['status']}`."
        )
    session.update(status="expired", url=None)
    return store.emit("checkout.session.expired", session, request)


def refund(
    store: Store,
    target: str,
    amount: int | None = None,
    *,
    reason: str | None = None,
    metadata: dict[str, str] | None = None,
    request: RequestContext | None = None,
) -> tuple[StripeObject, StripeObject]:
    """Refund ``amount`` (default: all that is left) of the charge behind ``target``; return the refund and event."""
    charge = charge_for(store, target)
    remaining = charge["amount"] - charge["amount_refunded"]
    if charge["disputed"]:
        raise errors.invalid(
            f"Charge {charge['id']} has been charged back; it cannot be refunded.", code="charge_disputed"
        )
    if remaining == 0:
        raise errors.invalid(f"Charge {charge['id']} has already been refunded.", code="charge_already_refunded")
    amount = remaining if amount is None else amount
    if amount <= 0:
        raise errors.invalid("Refund amount must be a positive integer.", param="amount")
    if amount > remaining:
        raise errors.invalid(
            f"Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining})",
            param="amount",
            code="amount_too_large",
        )
    is_pix = charge["payment_method_details"]["type"] == "pix"
    destination = objects.pix_refund_destination() if is_pix else objects.card_refund_destination()
    created = store.add(
        objects.refund(
            {
                "id": new_id("re_"),
                "amount": amount,
                "charge": charge["id"],
                "created": store.now(),
                "currency": charge["currency"],
                "destination_details": destination,
                "metadata": metadata or {},
                "payment_intent": charge["payment_intent"],
                "payment_method": charge["payment_method"],
                "reason": reason,
            }
        )
    )
    store.emit("refund.created", created, request)
    # ``amount_refunded`` is cumulative: a handler can compute what to claw back from the total, not the delta.
    charge["amount_refunded"] += amount
    charge["refunded"] = charge["amount_refunded"] == charge["amount"]
    return created, store.emit("charge.refunded", charge, request)


def open_dispute(store: Store, target: str, amount: int | None = None, reason: str = "fraudulent") -> StripeObject:
    charge = charge_for(store, target)
    if charge["disputed"]:
        raise errors.invalid(f"Charge {charge['id']} is already disputed.")
    amount = charge["amount"] if amount is None else amount
    if not 0 < amount <= charge["amount"]:
        raise errors.invalid(f"A dispute cannot exceed the charge amount ({charge['amount']}).", param="amount")
    now = store.now()
    is_pix = charge["payment_method_details"]["type"] == "pix"
    dispute = store.add(
        objects.dispute(
            {
                "id": new_id("dp_"),
                "amount": amount,
                "balance_transactions": [],
                "charge": charge["id"],
                "created": now,
                "currency": charge["currency"],
                "evidence_details": {
                    "due_by": now + _DISPUTE_RESPONSE_WINDOW,
                    "enhanced_eligibility": {},
                    "has_evidence": False,
                    "past_due": False,
                    "submission_count": 0,
                },
                "payment_intent": charge["payment_intent"],
                "payment_method_details": {"type": "pix"} if is_pix else objects.card_dispute_details(),
                "reason": reason,
                "status": "needs_response",
            }
        )
    )
    charge["disputed"] = True
    created = store.emit("charge.dispute.created", dispute)
    store.emit("charge.dispute.funds_withdrawn", dispute)
    return created


def close_dispute(store: Store, target: str, outcome: DisputeOutcome) -> StripeObject:
    dispute = _dispute_for(store, target)
    if dispute["status"] in {"won", "lost"}:
        raise errors.invalid(f"Dispute {dispute['id']} is already closed ({dispute['status']}).")
    dispute["status"] = outcome
    closed = store.emit("charge.dispute.closed", dispute)
    if outcome == "won":
        store.emit("charge.dispute.funds_reinstated", dispute)
    return closed


def charge_for(store: Store, target: str) -> StripeObject:
    """The charge behind a Checkout Session, PaymentIntent or charge id."""
    if target.startswith("cs_"):
        intent_id = store.get("checkout.session", target)["payment_intent"]
        if intent_id is None:
            raise errors.invalid(f"Checkout Session {target} has not been paid.")
        target = intent_id
    if target.startswith("pi_"):
        charge_id = store.get("payment_intent", target)["latest_charge"]
        if charge_id is None:
            raise errors.invalid(f"PaymentIntent {target} has no charge.")
        target = charge_id
    return store.get("charge", target)


def _dispute_for(store: Store, target: str) -> StripeObject:
    if target.startswith("dp_"):
        return store.get("dispute", target)
    charge_id = charge_for(store, target)["id"]
    found = next((d for d in store.newest_first("dispute") if d["charge"] == charge_id), None)
    if found is None:
        raise errors.invalid(f"Charge {charge_id} has no dispute.")
    return found


def _open_session(store: Store, session_id: str, method: str) -> StripeObject:
    session = store.get("checkout.session", session_id)
    if session["status"] != "open":
        raise errors.invalid(f"Checkout Session {session_id} is `{session['status']}`, not `open`.")
    if method not in session["payment_method_types"]:
        raise errors.invalid(
            f"Checkout Session {session_id} does not offer {method}: it offers {session['payment_method_types']}."
        )
    # Submitting the Checkout form is when Stripe learns who the customer is.
    session["customer_details"] = objects.customer_details(session["customer_email"] or "customer@example.com")
    return session


def _pending_pix(store: Store, session_id: str) -> tuple[StripeObject, StripeObject]:
    session = store.get("checkout.session", session_id)
    intent_id = session["payment_intent"]
    intent = None if intent_id is None else store.get("payment_intent", intent_id)
    if intent is None or intent["status"] != "requires_action" or session["payment_status"] != "unpaid":
        raise errors.invalid(f"Checkout Session {session_id} has no Pix payment waiting to be paid.")
    return session, intent


def _new_payment_intent(store: Store, session: StripeObject) -> StripeObject:
    extras = store.checkout_extras[session["id"]]
    options: StripeObject = {}
    if "pix" in session["payment_method_types"]:
        options["pix"] = {"amount_includes_iof": "never", "expires_after_seconds": extras.pix_expires_after_seconds}
    intent = store.add(
        objects.payment_intent(
            {
                "id": new_id("pi_"),
                "amount": session["amount_total"],
                "amount_received": 0,
                "created": store.now(),
                "currency": session["currency"],
                "description": extras.payment_intent_description,
                "metadata": dict(extras.payment_intent_metadata),
                "payment_method": new_id("pm_"),
                "payment_method_options": options,
                "payment_method_types": list(session["payment_method_types"]),
                "status": "requires_payment_method",
            }
        )
    )
    store.emit("payment_intent.created", intent)
    return intent


def _new_charge(store: Store, intent: StripeObject, session: StripeObject, details: StripeObject) -> StripeObject:
    charge = store.add(
        objects.charge(
            {
                "id": new_id("ch_"),
                "amount": intent["amount"],
                "created": store.now(),
                "currency": intent["currency"],
                "description": intent["description"],
                "metadata": dict(intent["metadata"]),
                "payment_intent": intent["id"],
                "payment_method": intent["payment_method"],
                "payment_method_details": details,
            }
        )
    )
    # Stripe copies the customer that Checkout collected into the charge's billing details.
    charge["billing_details"].update(
        email=session["customer_details"]["email"], name=session["customer_details"]["name"]
    )
    store.emit("charge.succeeded", charge)
    return charge


def _complete(session: StripeObject, intent: StripeObject, *, payment_status: str) -> None:
    # A completed session no longer has a payment page, so Stripe nulls its URL.
    session.update(status="complete", payment_status=payment_status, payment_intent=intent["id"], url=None)
