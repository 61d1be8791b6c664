"""The credit account: one event stream per user, and every rule about its balance.

Rules live in the public methods, which raise a ``LedgerError`` before any event exists. Each event's
``apply`` only assigns (the events are in ``ledger.account_events``), so replaying history never runs a
rule: rules change, history does not.
Time arrives with each command (``now``) and is stored as the event's timestamp; the aggregate never
reads the clock, so a replay rebuilds exactly the same state.

State is kept in JSON-native types (ints, strings, lists, string-keyed dicts) so that a snapshot
round-trips through the mapper without custom codecs.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from eventsourcing.domain import Aggregate

from ledger import account_events as events
from ledger.account_events import (
    ClosedReservation,
    Hold,
    from_us,
    to_us,
    upcast_account_v1_v2,
)
from ledger.amounts import MAX_AMOUNT, cost_millicredits, is_amount
from ledger.checks import check_labels, check_text, check_tokens, check_usage_split
from ledger.errors import (
    InsufficientCreditsError,
    InvalidCommandError,
    RemovalExceedsAvailableError,
)
from ledger.holding import Reservations
from ledger.ids import account_id
from ledger.lots import KIND_OF_SOURCE, Lot, LotKind, allocate, consumption_order, due, expired_millicredits
from ledger.quota import DAILY, HOURLY, UsageBucket

if TYPE_CHECKING:
    from ledger.config import BillingSettings


class CreditAccount(Reservations, Aggregate):
    TOPIC = "ledger.CreditAccount"

    class Opened(Aggregate.Created):
        TOPIC = "ledger.CreditAccount.Opened"
        user_id: str

    class Created(Aggregate.Created):
        """Required by the library once a class has explicit topics; this aggregate never triggers it."""

        TOPIC = "ledger.CreditAccount.Created"

    # The events, named here where the library looks for them (their topics are explicit).
    Initialized = events.Initialized
    CreditsGranted = events.CreditsGranted
    CreditsDebited = events.CreditsDebited
    CreditsReserved = events.CreditsReserved
    ReservationSettled = events.ReservationSettled
    ReservationReleased = events.ReservationReleased
    ReservationExpired = events.ReservationExpired
    CreditsRemoved = events.CreditsRemoved
    CreditsRevoked = events.CreditsRevoked
    LotExpired = events.LotExpired

    # Version 2 keeps grants as lots and names every field of its records; a snapshot of version 1 is upcast
    # (see ``upcast_v1_v2``).
    class_version = 2

    # Declared so that type checkers know the state; assigned in __init__ and the events' apply.
    user_id: str
    initialized: bool
    # Always the open lots' remaining credits less the debt; debt exists only while no lot is open.
    balance_millicredits: int
    lots: dict[str, Lot]
    debt_millicredits: int
    holds: dict[str, Hold]
    closed_reservations: dict[str, ClosedReservation]
    minute_usage: list[UsageBucket]
    hour_usage: list[UsageBucket]

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.initialized = False
        self.balance_millicredits = 0
        self.lots = {}
        self.debt_millicredits = 0
        self.holds = {}
        self.closed_reservations = {}
        self.minute_usage = []
        self.hour_usage = []

    upcast_v1_v2 = staticmethod(upcast_account_v1_v2)

    @classmethod
    def open(cls, user_id: str, now: datetime) -> CreditAccount:
        check_text("user_id", user_id, max_length=128, required=True)
        account: CreditAccount = cls._create(cls.Opened, id=account_id(user_id), user_id=user_id, timestamp=now)
        return account

    # Reading the state.

    def reserved_millicredits(self, now: datetime) -> int:
        """Credits held by open reservations; a hold past its expiry no longer counts, swept or not."""
        now_us = to_us(now)
        return sum(hold["held_millicredits"] for hold in self.holds.values() if hold["expires_at_us"] > now_us)

    def balance_at(self, now: datetime) -> int:
        """The balance at ``now``: a lot past its expiry no longer counts, whether or not its expiry is recorded."""
        return self.balance_millicredits - expired_millicredits(self.lots, to_us(now))

    def available_millicredits(self, now: datetime) -> int:
        return self.balance_at(now) - self.reserved_millicredits(now)

    def open_lots(self, now: datetime) -> list[tuple[str, Lot]]:
        """The lots that count at ``now``, in the order usage takes them."""
        return [(lot_id, self.lots[lot_id]) for lot_id in consumption_order(self.lots, to_us(now))]

    def tokens_used(self, now: datetime) -> tuple[int, int]:
        """Tokens counted against the quotas in the rolling hour and the rolling day."""
        now_us = to_us(now)
        return HOURLY.used(self.minute_usage, now_us), DAILY.used(self.hour_usage, now_us)

    # Commands.

    def initialize(self, welcome_millicredits: int, now: datetime, *, welcome_ttl_days: int = 0) -> bool:
        """Mark the account as set up, granting the welcome credits once. False if it already was.

        The welcome credits are a promo lot that expires ``welcome_ttl_days`` after the grant (0: never).
        """
        if self.initialized:
            return False
        self._expire_due(now)
        if welcome_millicredits:
            self.grant(
                grant_id=f"welcome:{self.user_id}",
                amount_millicredits=welcome_millicredits,
                source="welcome",
                reference=None,
                description="Welcome credits",
                granted_by=None,
                now=now,
                kind=LotKind.PROMO,
                expires_at=now + timedelta(days=welcome_ttl_days) if welcome_ttl_days else None,
            )
        self.trigger_event(self.Initialized, timestamp=now, welcome_millicredits=welcome_millicredits)
        return True

    def grant(
        self,
        *,
        grant_id: str,
        amount_millicredits: int,
        source: str,
        reference: str | None,
        description: str | None,
        granted_by: str | None,
        now: datetime,
        actor_role: str | None = None,
        request_id: str | None = None,
        kind: LotKind | None = None,
        expires_at: datetime | None = None,
    ) -> None:
        """Grant credits as a new lot: ``kind`` defaults to what the source makes of it; the lot counts
        until ``expires_at`` (never when None). The lot first pays back any debt."""
        if not is_amount(amount_millicredits):
            raise InvalidCommandError("amount_millicredits", f"must be an integer from 1 to {MAX_AMOUNT}")
        if source not in {"purchase", "welcome", "promotional", "admin", "dispute"}:
            # "dispute" gives back credits a dispute took, when the dispute is won.
            raise InvalidCommandError("source", "must be purchase, welcome, promotional, admin or dispute")
        check_text("reference", reference, max_length=255)
        check_text("description", description, max_length=500)
        if kind is not None and kind not in LotKind:
            raise InvalidCommandError("kind", "must be paid or promo")
        if expires_at is not None and expires_at <= now:
            raise InvalidCommandError("expires_at", "must be in the future")
        if grant_id in self.lots:
            raise InvalidCommandError("grant_id", "already names a lot")
        self._expire_due(now)
        if self.balance_millicredits + amount_millicredits > MAX_AMOUNT:
            raise InvalidCommandError("amount_millicredits", f"the balance would pass {MAX_AMOUNT}")
        self.trigger_event(
            self.CreditsGranted,
            timestamp=now,
            grant_id=grant_id,
            amount_millicredits=amount_millicredits,
            source=source,
            reference=reference,
            description=description,
            granted_by=granted_by,
            actor_role=actor_role,
            request_id=request_id,
            kind=str(kind or KIND_OF_SOURCE[source]),
            expires_at_us=None if expires_at is None else to_us(expires_at),
            debt_repaid_millicredits=min(self.debt_millicredits, amount_millicredits),
        )

    def debit(
        self,
        *,
        debit_id: str,
        tokens: int,
        input_tokens: int | None,
        output_tokens: int | None,
        model: str | None,
        agent_id: str | None,
        analysis_id: str | None,
        occurred_at: datetime | None,
        settings: BillingSettings,
        now: datetime,
    ) -> int:
        """Debit the cost of usage that has happened. Returns the amount debited."""
        check_tokens("tokens", tokens)
        check_usage_split(tokens, input_tokens, output_tokens)
        check_labels(model=model, agent_id=agent_id, analysis_id=analysis_id)
        cost = cost_millicredits(tokens, settings.tokens_per_credit)
        self._expire_due(now)
        self._require_available(cost, now)
        self._require_quota(tokens, settings, now)
        self.trigger_event(
            self.CreditsDebited,
            timestamp=now,
            debit_id=debit_id,
            tokens=tokens,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            amount_millicredits=cost,
            tokens_per_credit=settings.tokens_per_credit,
            model=model,
            agent_id=agent_id,
            analysis_id=analysis_id,
            occurred_at=occurred_at or now,
            lots=self._take(cost, now),
        )
        return cost

    def expire_due(self, now: datetime) -> int:
        """Record the expiry of every hold and lot past its time. Returns how many expired."""
        return self._expire_due(now)

    def remove(
        self,
        *,
        adjustment_id: str,
        amount_millicredits: int,
        reason: str,
        removed_by: str,
        now: datetime,
        actor_role: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """An admin's removal: it may not take more than the available balance."""
        if not is_amount(amount_millicredits):
            raise InvalidCommandError("amount_millicredits", f"must be an integer from 1 to {MAX_AMOUNT}")
        check_text("reason", reason, max_length=500, required=True)
        self._expire_due(now)
        available = self.available_millicredits(now)
        if amount_millicredits > available:
            raise RemovalExceedsAvailableError(
                available_millicredits=available, required_millicredits=amount_millicredits
            )
        self.trigger_event(
            self.CreditsRemoved,
            timestamp=now,
            adjustment_id=adjustment_id,
            amount_millicredits=amount_millicredits,
            reason=reason,
            removed_by=removed_by,
            actor_role=actor_role,
            request_id=request_id,
            lots=self._take(amount_millicredits, now),
        )

    def revoke(
        self, *, revocation_id: str, amount_millicredits: int, reason: str, reference: str, now: datetime
    ) -> None:
        """Claw back credits a refund or dispute took away, from the lots of the purchase named by ``reference``
        first, then from the other lots in their order; what they cannot cover becomes debt."""
        if not is_amount(amount_millicredits):
            raise InvalidCommandError("amount_millicredits", f"must be an integer from 1 to {MAX_AMOUNT}")
        if reason not in {"refund", "dispute"}:
            raise InvalidCommandError("reason", "must be refund or dispute")
        check_text("reference", reference, max_length=255, required=True)
        if self.balance_millicredits - amount_millicredits < -MAX_AMOUNT:
            raise InvalidCommandError("amount_millicredits", "the balance would pass its lower bound")
        self._expire_due(now)
        purchased = [lot_id for lot_id, lot in self.open_lots(now) if lot["reference"] == reference]
        self.trigger_event(
            self.CreditsRevoked,
            timestamp=now,
            revocation_id=revocation_id,
            amount_millicredits=amount_millicredits,
            reason=reason,
            reference=reference,
            lots=self._take(amount_millicredits, now, first=purchased),
        )

    # Rules shared by the commands.

    def _require_available(self, required: int, now: datetime) -> None:
        available = self.available_millicredits(now)
        if self.balance_millicredits <= 0 or available < required:
            raise InsufficientCreditsError(available_millicredits=available, required_millicredits=required)

    def _require_quota(self, tokens: int, settings: BillingSettings, now: datetime) -> None:
        now_us = to_us(now)
        for window, limit, usage in (
            (HOURLY, settings.hourly_token_limit, self.minute_usage),
            (DAILY, settings.daily_token_limit, self.hour_usage),
        ):
            refusal = window.refusal(limit, usage, tokens, now_us)
            if refusal is not None:
                raise refusal

    def _take(self, amount_millicredits: int, now: datetime, *, first: list[str] | None = None) -> dict[str, int]:
        """Which lots pay ``amount_millicredits``, in their order (``first`` before the rest)."""
        order = consumption_order(self.lots, to_us(now))
        return allocate(self.lots, [*(first or []), *order], amount_millicredits)

    def _expire_due(self, now: datetime) -> int:
        """Record the expiry of the lots and holds past their time, before any other event of a command.

        A lot's expiry is recorded at its ``expires_at`` (or at the account's last event, should a clock
        have run ahead), so history and statements place it when it stopped counting.
        """
        last_us = to_us(self.modified_on)
        lots_due = due(self.lots, to_us(now))
        for lot_id in lots_due:
            lot = self.lots[lot_id]
            self.trigger_event(
                self.LotExpired,
                timestamp=from_us(max(lot["expires_at_us"] or last_us, last_us)),
                lot_id=lot_id,
                kind=lot["kind"],
                amount_millicredits=lot["remaining_millicredits"],
            )
        return len(lots_due) + self._expire_due_holds(now)
