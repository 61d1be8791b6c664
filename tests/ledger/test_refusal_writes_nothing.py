"""A refused command writes nothing of its own, even when its refusal comes after it changed an aggregate
in memory: given a purchase whose credits the account cannot take (its balance would pass the bound), when
Stripe says it was paid, then the ledger refuses, the checkout is as it was, and the same Stripe event,
sent again once the account has room, grants the credits exactly once. Run alone (no writer) and through
the group-commit writer, where the checkout is the one the cache holds."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ledger.amounts import MAX_AMOUNT
from ledger.application import Ledger
from ledger.commands import AdjustCredits, GrantCredits
from ledger.errors import InvalidCommandError
from ledger.payments import Holding, SessionCompleted, SessionDetails
from tests.conftest import T0

PURCHASE_MILLICREDITS = 100 * 1_000
DETAILS = SessionDetails(user_id="full", package_id="starter", credits=100, amount_minor=3_000, currency="BRL")
PAID = SessionCompleted(stripe_event_id="evt_paid", session_id="cs_full", paid=True)


def with_writer(ledger: Ledger) -> Ledger:
    ledger.enable_group_commit(max_batch=64, max_wait_seconds=0.0)
    return ledger


@pytest.mark.parametrize("mode", [lambda ledger: ledger, with_writer], ids=["alone", "group-commit"])
def test_a_payment_whose_credits_the_account_refuses_writes_nothing_and_a_later_retry_grants_once(
    ledger: Ledger, mode: Callable[[Ledger], Ledger]
) -> None:
    # Given an account one credit short of the bound, and a purchase started
    ledger = mode(ledger)
    ledger.grant_credits(
        GrantCredits(user_id="full", amount_millicredits=MAX_AMOUNT - 1_000, source="admin"), idempotency=None, now=T0
    )
    ledger.start_checkout("cs_full", DETAILS, now=T0)
    ledger._get_checkout("cs_full")  # In the cache, as a webhook's first read leaves it.
    # When Stripe says it was paid, the grant would pass the bound: the ledger refuses
    with pytest.raises(InvalidCommandError):
        ledger.record_payment(PAID, now=T0)
    # Then the checkout recorded nothing: it still holds nothing, in memory and in the store
    checkout = ledger._get_checkout("cs_full")
    assert checkout is not None
    assert checkout.holding == Holding()
    account = ledger.get_account("full")
    assert account is not None
    assert account.balance_millicredits == MAX_AMOUNT - 1_000
    # and once the account has room, the same Stripe event grants the credits, once
    ledger.adjust_credits(
        AdjustCredits(user_id="full", amount_millicredits=-PURCHASE_MILLICREDITS, reason="room", admin_id="ops"),
        idempotency=None,
        now=T0,
    )
    receipt = ledger.record_payment(PAID, now=T0)
    assert receipt.replayed is False
    again = ledger.record_payment(PAID, now=T0)
    assert again.replayed is True
    account = ledger.get_account("full")
    assert account is not None
    assert account.balance_millicredits == MAX_AMOUNT - 1_000
    assert ledger._get_checkout("cs_full").holding.granted == PURCHASE_MILLICREDITS  # type: ignore[union-attr]
