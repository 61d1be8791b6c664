"""Purchases: whatever order and however often Stripe's facts arrive, the buyer ends up holding exactly the
credits the payment, its refunds and its disputes say."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from ledger.application import Ledger
from ledger.commands import DebitUsage
from ledger.errors import NotFoundError
from ledger.payments import (
    AsyncPaymentFailed,
    AsyncPaymentSucceeded,
    ChargeRefunded,
    DisputeChanged,
    PaymentFact,
    SessionCompleted,
    SessionDetails,
    SessionExpired,
)
from tests.conftest import T0

DETAILS = SessionDetails(user_id="buyer", package_id="starter", credits=100, amount_minor=3_000, currency="BRL")
events = itertools.count()


def fact(kind: type[Any], **fields: Any) -> PaymentFact:
    fields.setdefault("stripe_event_id", f"evt_{next(events)}")
    fact: PaymentFact = kind(session_id="cs_1", details=DETAILS, **fields)
    return fact


def balance(ledger: Ledger) -> int:
    return ledger.get_balance("buyer", now=T0).balance_millicredits


def test_a_card_payment_grants_the_package_once(ledger: Ledger) -> None:
    completed = fact(SessionCompleted, paid=True, payment_intent_id="pi_1", payment_method="card")
    first = ledger.record_payment(completed, now=T0)
    again = ledger.record_payment(completed, now=T0)
    assert (first.status, first.granted_millicredits, first.balance_after_millicredits) == ("paid", 100_000, 100_000)
    assert again.replayed
    ledger.record_payment(fact(AsyncPaymentSucceeded, payment_intent_id="pi_1"), now=T0)
    assert balance(ledger) == 100_000


def test_pix_pending_then_paid(ledger: Ledger) -> None:
    pending = ledger.record_payment(fact(SessionCompleted, paid=False, payment_method="pix"), now=T0)
    assert (pending.status, balance(ledger)) == ("pending", 0)
    paid = ledger.record_payment(fact(AsyncPaymentSucceeded, payment_intent_id="pi_1"), now=T0)
    assert (paid.status, balance(ledger)) == ("paid", 100_000)


def test_payment_before_completion_is_not_undone_by_a_late_unpaid_completion(ledger: Ledger) -> None:
    ledger.record_payment(fact(AsyncPaymentSucceeded, payment_intent_id="pi_1"), now=T0)
    late = ledger.record_payment(fact(SessionCompleted, paid=False, payment_method="pix"), now=T0)
    assert (late.status, balance(ledger)) == ("paid", 100_000)


@pytest.mark.parametrize("outcome", [AsyncPaymentFailed, SessionExpired])
def test_failed_or_expired_grants_nothing(ledger: Ledger, outcome: type[Any]) -> None:
    if outcome is AsyncPaymentFailed:
        ledger.record_payment(fact(SessionCompleted, paid=False, payment_method="pix"), now=T0)
    receipt = ledger.record_payment(fact(outcome), now=T0)
    assert (receipt.status, balance(ledger)) == ("failed" if outcome is AsyncPaymentFailed else "expired", 0)


def test_partial_then_full_refund_claws_back_toward_a_target(ledger: Ledger) -> None:
    ledger.record_payment(fact(SessionCompleted, paid=True, payment_intent_id="pi_1"), now=T0)
    refund = {"charge_id": "ch_1", "charge_amount_minor": 3_000}
    ledger.record_payment(fact(ChargeRefunded, amount_refunded_minor=1_000, **refund), now=T0)
    assert balance(ledger) == 100_000 - 33_333
    ledger.record_payment(fact(ChargeRefunded, amount_refunded_minor=1_000, **refund), now=T0)  # Repeated news.
    assert balance(ledger) == 66_667
    ledger.record_payment(fact(ChargeRefunded, amount_refunded_minor=3_000, **refund), now=T0)
    ledger.record_payment(fact(ChargeRefunded, amount_refunded_minor=1_000, **refund), now=T0)  # Late, older news.
    assert balance(ledger) == 0


def test_a_refund_heard_before_the_payment_is_applied_when_it_is_paid(ledger: Ledger) -> None:
    ledger.record_payment(
        fact(ChargeRefunded, charge_id="ch_1", charge_amount_minor=3_000, amount_refunded_minor=3_000), now=T0
    )
    assert balance(ledger) == 0
    ledger.record_payment(fact(SessionCompleted, paid=True, payment_intent_id="pi_1"), now=T0)
    assert balance(ledger) == 0


def test_a_lost_dispute_keeps_the_clawback_and_may_leave_the_balance_below_zero(ledger: Ledger) -> None:
    ledger.record_payment(fact(SessionCompleted, paid=True, payment_intent_id="pi_1"), now=T0)
    ledger.debit_usage(DebitUsage(user_id="buyer", tokens=60_000), idempotency=None, now=T0)
    opened = ledger.record_payment(fact(DisputeChanged, dispute_id="dp_1", amount_minor=3_000, status="open"), now=T0)
    assert (opened.dispute_clawback_millicredits, balance(ledger)) == (100_000, -60_000)
    ledger.record_payment(fact(DisputeChanged, dispute_id="dp_1", amount_minor=3_000, status="lost"), now=T0)
    ledger.record_payment(fact(DisputeChanged, dispute_id="dp_1", amount_minor=3_000, status="open"), now=T0)
    assert balance(ledger) == -60_000


def test_a_won_dispute_gives_the_credits_back(ledger: Ledger) -> None:
    ledger.record_payment(fact(SessionCompleted, paid=True, payment_intent_id="pi_1"), now=T0)
    ledger.record_payment(fact(DisputeChanged, dispute_id="dp_1", amount_minor=3_000, status="open"), now=T0)
    assert balance(ledger) == 0
    won = ledger.record_payment(fact(DisputeChanged, dispute_id="dp_1", amount_minor=3_000, status="won"), now=T0)
    assert (won.dispute_clawback_millicredits, balance(ledger)) == (0, 100_000)


def test_a_fact_about_a_session_never_heard_of_and_without_details_is_not_found(ledger: Ledger) -> None:
    with pytest.raises(NotFoundError):
        ledger.record_payment(SessionExpired(stripe_event_id="evt_x", session_id="cs_unknown"), now=T0)


def test_the_payment_intent_leads_back_to_its_session(ledger: Ledger) -> None:
    assert ledger.session_for_payment_intent("pi_1") is None
    ledger.record_payment(fact(SessionCompleted, paid=True, payment_intent_id="pi_1"), now=T0)
    assert ledger.session_for_payment_intent("pi_1") == "cs_1"
