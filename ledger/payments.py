"""Purchases: one ``Checkout`` aggregate per Stripe Checkout Session, and the facts Stripe reports about it.

Stripe delivers events more than once and in any order, so a fact never says "add" or "take away": it
records what Stripe now says (the session is paid; the charge has had this much refunded in total; this
dispute is open, won or lost), and the checkout then works out what the buyer should hold from this
purchase (the credits, less the refunded share, less the share under an open or lost dispute). The
difference from what was already granted and clawed back becomes the account's movement, in the same
transaction. A repeated or late fact therefore changes nothing, and any order of facts ends in the same
place.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID, uuid5

import msgspec
from eventsourcing.domain import Aggregate

from ledger.amounts import MAX_AMOUNT, MILLICREDITS_PER_CREDIT
from ledger.commands import Command
from ledger.errors import InvalidCommandError
from ledger.ids import NAMESPACE

CheckoutStatus = Literal["open", "pending", "paid", "failed", "expired"]
DisputeStatus = Literal["open", "won", "lost"]


def checkout_id(session_id: str) -> UUID:
    return uuid5(NAMESPACE, "checkout:" + session_id)


def payment_intent_index_id(payment_intent_id: str) -> UUID:
    return uuid5(NAMESPACE, "payment-intent:" + payment_intent_id)


# Facts: what a Stripe event says, translated by the gateway. Every fact names its Stripe event and its
# Checkout Session, and carries the session's own details when the gateway has them, so a checkout first
# heard of through a webhook can still be opened.


class SessionDetails(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    package_id: str
    credits: int
    amount_minor: int
    currency: str


class Fact(Command, frozen=True, kw_only=True):
    stripe_event_id: str
    session_id: str
    details: SessionDetails | None = None


class SessionCompleted(Fact, frozen=True, kw_only=True):
    """``checkout.session.completed``: paid now (card) or later (PIX: ``payment_status`` unpaid)."""

    paid: bool
    payment_intent_id: str | None = None
    payment_method: str | None = None


class AsyncPaymentSucceeded(Fact, frozen=True, kw_only=True):
    payment_intent_id: str | None = None
    payment_method: str | None = None


class AsyncPaymentFailed(Fact, frozen=True, kw_only=True):
    pass


class SessionExpired(Fact, frozen=True, kw_only=True):
    pass


class ChargeRefunded(Fact, frozen=True, kw_only=True):
    """``charge.refunded``: ``amount_refunded_minor`` is the charge's refunded total so far, not a delta."""

    charge_id: str
    charge_amount_minor: int
    amount_refunded_minor: int


class DisputeChanged(Fact, frozen=True, kw_only=True):
    """``charge.dispute.created`` (open) and ``charge.dispute.closed`` (won or lost)."""

    dispute_id: str
    amount_minor: int
    status: DisputeStatus


PaymentFact = (
    SessionCompleted | AsyncPaymentSucceeded | AsyncPaymentFailed | SessionExpired | ChargeRefunded | DisputeChanged
)


class Holding(msgspec.Struct, frozen=True):
    """What the buyer holds from a purchase: granted, and clawed back for refunds and for disputes."""

    granted: int = 0
    refund_clawback: int = 0
    dispute_clawback: int = 0


class Checkout(Aggregate):
    TOPIC = "ledger.Checkout"

    class Started(Aggregate.Created):
        TOPIC = "ledger.Checkout.Started"
        session_id: str
        user_id: str
        package_id: str
        credits_millicredits: int
        amount_minor: int
        currency: str

    class Created(Aggregate.Created):
        """Required by the library once a class has explicit topics; this aggregate never triggers it."""

        TOPIC = "ledger.Checkout.Created"

    session_id: str
    user_id: str
    package_id: str
    credits_millicredits: int
    amount_minor: int
    currency: str
    status: str
    payment_intent_id: str | None
    payment_method: str | None
    charge_id: str | None
    refunded_minor: int
    charge_amount_minor: int
    disputes: dict[str, list[int | str]]
    holding: Holding

    def __init__(
        self,
        session_id: str,
        user_id: str,
        package_id: str,
        credits_millicredits: int,
        amount_minor: int,
        currency: str,
    ) -> None:
        self.session_id = session_id
        self.user_id = user_id
        self.package_id = package_id
        self.credits_millicredits = credits_millicredits
        self.amount_minor = amount_minor
        self.currency = currency
        self.status = "open"
        self.payment_intent_id = None
        self.payment_method = None
        self.charge_id = None
        self.refunded_minor = 0
        self.charge_amount_minor = amount_minor
        self.disputes = {}
        self.holding = Holding()

    @classmethod
    def start(cls, session_id: str, details: SessionDetails, now: datetime) -> Checkout:
        for name, value in (("credits", details.credits), ("amount_minor", details.amount_minor)):
            if type(value) is not int or not 1 <= value <= MAX_AMOUNT // MILLICREDITS_PER_CREDIT:
                raise InvalidCommandError(name, "must be a positive integer")
        checkout: Checkout = cls._create(
            cls.Started,
            id=checkout_id(session_id),
            session_id=session_id,
            user_id=details.user_id,
            package_id=details.package_id,
            credits_millicredits=details.credits * MILLICREDITS_PER_CREDIT,
            amount_minor=details.amount_minor,
            currency=details.currency.upper(),
            timestamp=now,
        )
        return checkout

    # Rules: record what Stripe says, then work out what the buyer should hold.

    def record(self, fact: PaymentFact, now: datetime) -> tuple[Holding, Holding]:
        """Record a fact. Returns what the buyer held from this purchase before, and should hold now."""
        before = self.holding
        if isinstance(fact, SessionCompleted):
            self._payment(paid=fact.paid, intent=fact.payment_intent_id, method=fact.payment_method, now=now)
        elif isinstance(fact, AsyncPaymentSucceeded):
            self._payment(paid=True, intent=fact.payment_intent_id, method=fact.payment_method, now=now)
        elif isinstance(fact, AsyncPaymentFailed):
            if self.status in {"open", "pending"}:
                self.trigger_event(self.PaymentFailed, timestamp=now)
        elif isinstance(fact, SessionExpired):
            if self.status == "open":
                self.trigger_event(self.Expired, timestamp=now)
        elif isinstance(fact, ChargeRefunded):
            self._refund(fact, now)
        else:
            self._dispute(fact, now)
        target = self._target()
        if target != before:
            self.trigger_event(
                self.HoldingChanged,
                timestamp=now,
                granted=target.granted,
                refund_clawback=target.refund_clawback,
                dispute_clawback=target.dispute_clawback,
            )
        return before, target

    def _payment(self, *, paid: bool, intent: str | None, method: str | None, now: datetime) -> None:
        # Paid is final: a late "completed, unpaid" (PIX) after the payment changes nothing.
        if self.status == "paid":
            return
        if paid:
            self.trigger_event(self.Paid, timestamp=now, payment_intent_id=intent, payment_method=method)
        elif self.status == "open":
            self.trigger_event(self.PaymentPending, timestamp=now, payment_intent_id=intent, payment_method=method)

    def _refund(self, fact: ChargeRefunded, now: datetime) -> None:
        if fact.amount_refunded_minor <= self.refunded_minor:
            return  # Repeated or older news: the total refunded only grows.
        if not 0 < fact.amount_refunded_minor <= fact.charge_amount_minor:
            raise InvalidCommandError("amount_refunded", "must be within the charge's amount")
        self.trigger_event(
            self.RefundRecorded,
            timestamp=now,
            charge_id=fact.charge_id,
            charge_amount_minor=fact.charge_amount_minor,
            amount_refunded_minor=fact.amount_refunded_minor,
        )

    def _dispute(self, fact: DisputeChanged, now: datetime) -> None:
        known = self.disputes.get(fact.dispute_id)
        # A closed dispute stays closed: a late "created" must not reopen it.
        if known is None or (known[1] == "open" and fact.status != "open"):
            self.trigger_event(
                self.DisputeRecorded,
                timestamp=now,
                dispute_id=fact.dispute_id,
                amount_minor=min(fact.amount_minor, self.amount_minor),
                status=fact.status,
            )

    def _target(self) -> Holding:
        if self.status != "paid":
            return Holding()
        granted = self.credits_millicredits
        refund = granted * self.refunded_minor // max(self.charge_amount_minor, 1)
        disputed = sum(int(amount) for amount, status in self.disputes.values() if status != "won")
        dispute = min(granted * disputed // self.amount_minor, granted - refund)
        return Holding(granted, refund, dispute)

    # Events: assignments only.

    class Paid(Aggregate.Event):
        TOPIC = "ledger.Checkout.Paid"
        payment_intent_id: str | None
        payment_method: str | None

        def apply(self, checkout: Checkout) -> None:
            checkout.status = "paid"
            checkout.payment_intent_id = self.payment_intent_id or checkout.payment_intent_id
            checkout.payment_method = self.payment_method or checkout.payment_method

    class PaymentPending(Aggregate.Event):
        TOPIC = "ledger.Checkout.PaymentPending"
        payment_intent_id: str | None
        payment_method: str | None

        def apply(self, checkout: Checkout) -> None:
            checkout.status = "pending"
            checkout.payment_intent_id = self.payment_intent_id or checkout.payment_intent_id
            checkout.payment_method = self.payment_method or checkout.payment_method

    class PaymentFailed(Aggregate.Event):
        TOPIC = "ledger.Checkout.PaymentFailed"

        def apply(self, checkout: Checkout) -> None:
            checkout.status = "failed"

    class Expired(Aggregate.Event):
        TOPIC = "ledger.Checkout.Expired"

        def apply(self, checkout: Checkout) -> None:
            checkout.status = "expired"

    class RefundRecorded(Aggregate.Event):
        TOPIC = "ledger.Checkout.RefundRecorded"
        charge_id: str
        charge_amount_minor: int
        amount_refunded_minor: int

        def apply(self, checkout: Checkout) -> None:
            checkout.charge_id = self.charge_id
            checkout.charge_amount_minor = self.charge_amount_minor
            checkout.refunded_minor = self.amount_refunded_minor

    class DisputeRecorded(Aggregate.Event):
        TOPIC = "ledger.Checkout.DisputeRecorded"
        dispute_id: str
        amount_minor: int
        status: str

        def apply(self, checkout: Checkout) -> None:
            checkout.disputes[self.dispute_id] = [self.amount_minor, self.status]

    class HoldingChanged(Aggregate.Event):
        """What the buyer holds from this purchase now; the account moved by the difference."""

        TOPIC = "ledger.Checkout.HoldingChanged"
        granted: int
        refund_clawback: int
        dispute_clawback: int

        def apply(self, checkout: Checkout) -> None:
            checkout.holding = Holding(self.granted, self.refund_clawback, self.dispute_clawback)


class PaymentIntentIndex(Aggregate):
    """Which checkout a PaymentIntent paid: refunds and disputes name only the PaymentIntent."""

    TOPIC = "ledger.PaymentIntentIndex"

    class Indexed(Aggregate.Created):
        TOPIC = "ledger.PaymentIntentIndex.Indexed"
        payment_intent_id: str
        session_id: str

    class Created(Aggregate.Created):
        TOPIC = "ledger.PaymentIntentIndex.Created"

    payment_intent_id: str
    session_id: str

    def __init__(self, payment_intent_id: str, session_id: str) -> None:
        self.payment_intent_id = payment_intent_id
        self.session_id = session_id

    @classmethod
    def index(cls, payment_intent_id: str, session_id: str, now: datetime) -> PaymentIntentIndex:
        entry: PaymentIntentIndex = cls._create(
            cls.Indexed,
            id=payment_intent_index_id(payment_intent_id),
            payment_intent_id=payment_intent_id,
            session_id=session_id,
            timestamp=now,
        )
        return entry
