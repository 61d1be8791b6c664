"""Use cases of purchases: a Checkout Session started, and what Stripe says of its payment.

Each fact from Stripe is applied to the purchase's ``Checkout``, and what the buyer holds from it changes
the account by the difference, in the same transaction: a grant, or a clawback for a refund or dispute.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from ledger.account import CreditAccount
from ledger.commands import (
    IdempotencyKey,
    StartCheckout,
)
from ledger.errors import (
    NotFoundError,
)
from ledger.payments import (
    Checkout,
    Holding,
    PaymentFact,
    PaymentIntentIndex,
    SessionDetails,
    checkout_id,
    payment_intent_index_id,
)
from ledger.plan import Plan
from ledger.receipts import (
    PaymentReceipt,
)
from ledger.settings_cases import SettingsUseCases

log = logging.getLogger(__name__)


class PurchaseUseCases(SettingsUseCases):
    """Purchases through Stripe Checkout."""

    def start_checkout(self, session_id: str, details: SessionDetails, *, now: datetime) -> PaymentReceipt:
        """Record a Checkout Session just created for a purchase; starting it again changes nothing."""

        def load() -> Checkout:
            return self._get_checkout(session_id) or Checkout.start(session_id, details, now)

        def decide(checkout: Checkout, _: UUID | None) -> Callable[[int], PaymentReceipt]:
            return lambda position: _payment_receipt(checkout, None, position)

        return self._run_plan(
            Plan(
                aggregate_id=checkout_id(session_id),
                lock=self._account_lock(details.user_id),
                load=load,
                decide=decide,
                command=StartCheckout(session_id=session_id),
                operation="start-checkout",
                idempotency=None,
                now=now,
                what=f"checkout {session_id}",
            )
        )

    def record_payment(self, fact: PaymentFact, *, now: datetime) -> PaymentReceipt:
        """Record what a Stripe event says about a purchase, and move the buyer's credits to match.

        Each Stripe event is applied once (its id is the idempotency key). The checkout, the account's
        grant or clawback and the event's marker are saved in one transaction.
        """
        known = self._get_checkout(fact.session_id)
        if known is None and fact.details is None:
            raise NotFoundError("checkout session", fact.session_id)
        user_id = known.user_id if known is not None else fact.details.user_id  # type: ignore[union-attr]
        companions: list[Any] = []

        def load() -> Checkout:
            checkout = self._get_checkout(fact.session_id)
            if checkout is None:
                assert fact.details is not None  # noqa: S101 - checked above; a checkout is never deleted.
                checkout = Checkout.start(fact.session_id, fact.details, now)
            return checkout

        def decide(checkout: Checkout, marker: UUID | None) -> Callable[[int], PaymentReceipt]:
            known_intent = checkout.payment_intent_id
            before, after = checkout.record(fact, now)
            account = None
            if before != after:
                account = self._load_account(user_id, now) or CreditAccount.open(user_id, now)
                _move_credits(account, checkout, before, after, str(marker), now)
                companions.append(account)
            intent = checkout.payment_intent_id
            if intent is not None and intent != known_intent and not self._payment_intent_indexed(intent):
                companions.append(PaymentIntentIndex.index(intent, checkout.session_id, now))
            balance = account.balance_millicredits if account is not None else None
            return lambda position: _payment_receipt(checkout, balance, position)

        return self._run_plan(
            Plan(
                aggregate_id=checkout_id(fact.session_id),
                lock=self._account_lock(user_id),
                load=load,
                decide=decide,
                command=fact,
                operation="stripe-event",
                idempotency=IdempotencyKey("stripe", fact.stripe_event_id),
                now=now,
                what=f"checkout {fact.session_id}",
                companions=companions,
            )
        )

    def session_for_payment_intent(self, payment_intent_id: str) -> str | None:
        try:
            entry: PaymentIntentIndex = self.repository.get(payment_intent_index_id(payment_intent_id))
        except AggregateNotFoundError:
            return None
        return entry.session_id

    def _payment_intent_indexed(self, payment_intent_id: str) -> bool:
        return payment_intent_index_id(payment_intent_id) in self.repository

    def _get_checkout(self, session_id: str) -> Checkout | None:
        try:
            checkout: Checkout = self.repository.get(checkout_id(session_id))
        except AggregateNotFoundError:
            return None
        return checkout


def _move_credits(
    account: CreditAccount, checkout: Checkout, before: Holding, after: Holding, marker: str, now: datetime
) -> None:
    """Move the account by the change in what the buyer holds from one purchase."""
    reference = checkout.session_id
    granted = after.granted - before.granted
    if granted > 0:
        account.grant(
            grant_id=f"{marker}:purchase",
            amount_millicredits=granted,
            source="purchase",
            reference=reference,
            description=f"package {checkout.package_id}",
            granted_by=None,
            now=now,
        )
    refund = after.refund_clawback - before.refund_clawback
    if refund > 0:
        account.revoke(
            revocation_id=f"{marker}:refund", amount_millicredits=refund, reason="refund", reference=reference, now=now
        )
    dispute = after.dispute_clawback - before.dispute_clawback
    if dispute > 0:
        account.revoke(
            revocation_id=f"{marker}:dispute",
            amount_millicredits=dispute,
            reason="dispute",
            reference=reference,
            now=now,
        )
    elif dispute < 0:
        account.grant(
            grant_id=f"{marker}:dispute-won",
            amount_millicredits=-dispute,
            source="dispute",
            reference=reference,
            description="dispute won",
            granted_by=None,
            now=now,
        )


def _payment_receipt(checkout: Checkout, balance: int | None, position: int) -> PaymentReceipt:
    return PaymentReceipt(
        position=position,
        session_id=checkout.session_id,
        user_id=checkout.user_id,
        status=checkout.status,
        granted_millicredits=checkout.holding.granted,
        refund_clawback_millicredits=checkout.holding.refund_clawback,
        dispute_clawback_millicredits=checkout.holding.dispute_clawback,
        balance_after_millicredits=balance,
    )
