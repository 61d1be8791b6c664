"""The account's reservations: a hold on credits for usage still to come, then settled, released or expired.

These are the credit account's commands about holds, kept apart from its grants and debits; they are
mixed into ``CreditAccount`` and follow its rules (checks first, events only assign).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from ledger.account_events import CLOSED_RESERVATION_MEMORY_US, ClosedReservation, Hold, from_us, to_us
from ledger.amounts import MAX_AMOUNT, cost_millicredits
from ledger.checks import check_labels, check_tokens, check_usage_split
from ledger.errors import InvalidCommandError, NotFoundError, ReservationNotOpenError
from ledger.quota import US_PER_SECOND

if TYPE_CHECKING:
    from ledger.config import BillingSettings

MAX_TTL_SECONDS = 86_400


class _Account(Protocol):
    """What the reservation commands use of the account they are mixed into."""

    balance_millicredits: int
    holds: dict[str, Hold]
    closed_reservations: dict[str, ClosedReservation]
    CreditsReserved: Any
    ReservationSettled: Any
    ReservationReleased: Any
    ReservationExpired: Any

    def trigger_event(self, event_class: Any, **kwargs: Any) -> None: ...
    def _expire_due(self, now: datetime) -> int: ...
    def _require_available(self, required: int, now: datetime) -> None: ...
    def _require_quota(self, tokens: int, settings: BillingSettings, now: datetime) -> None: ...
    def _take(self, amount_millicredits: int, now: datetime, *, first: list[str] | None = None) -> dict[str, int]: ...
    def _open_hold(self, reservation_id: str, now: datetime) -> Hold: ...
    def _closed_status(self, reservation_id: str, now: datetime) -> str | None: ...


class Reservations:
    """The reservation commands of ``CreditAccount``."""

    def reserve(
        self: _Account,
        *,
        reservation_id: str,
        estimated_tokens: int,
        ttl_seconds: int,
        analysis_id: str | None,
        settings: BillingSettings,
        now: datetime,
    ) -> tuple[int, datetime]:
        """Hold the estimated cost. Returns the amount held and when the hold expires.

        The account needs at least the larger of the estimate's cost and the minimum balance for an
        analysis. The estimate must also fit in the remaining token quota, but it is not counted against
        the quota: only the settled usage is, so a hold never uses up quota it does not consume.
        """
        check_tokens("estimated_tokens", estimated_tokens)
        if type(ttl_seconds) is not int or not 1 <= ttl_seconds <= MAX_TTL_SECONDS:
            raise InvalidCommandError("ttl_seconds", f"must be an integer from 1 to {MAX_TTL_SECONDS}")
        check_labels(model=None, agent_id=None, analysis_id=analysis_id)
        if reservation_id in self.holds or self._closed_status(reservation_id, now) is not None:
            raise InvalidCommandError("reservation_id", "already exists")
        cost = cost_millicredits(estimated_tokens, settings.tokens_per_credit)
        self._expire_due(now)
        self._require_available(max(cost, settings.min_balance_for_analysis_millicredits), now)
        self._require_quota(estimated_tokens, settings, now)
        expires_at_us = to_us(now) + ttl_seconds * US_PER_SECOND
        self.trigger_event(
            self.CreditsReserved,
            timestamp=now,
            reservation_id=reservation_id,
            amount_millicredits=cost,
            estimated_tokens=estimated_tokens,
            expires_at_us=expires_at_us,
            tokens_per_credit=settings.tokens_per_credit,
            analysis_id=analysis_id,
        )
        return cost, from_us(expires_at_us)

    def settle(
        self: _Account,
        *,
        reservation_id: str,
        tokens: int,
        input_tokens: int | None,
        output_tokens: int | None,
        model: str | None,
        settings: BillingSettings,
        now: datetime,
    ) -> tuple[int, int]:
        """Debit the actual usage of a reservation, even past its hold: the work has happened.

        Returns the amounts debited and released. The balance may go below zero; the account then takes
        no new debit or reservation until it is positive again. Quotas never refuse a settlement, but
        its tokens count against them.
        """
        check_tokens("tokens", tokens, allow_zero=True)
        check_usage_split(tokens, input_tokens, output_tokens)
        check_labels(model=model, agent_id=None, analysis_id=None)
        self._expire_due(now)
        hold = self._open_hold(reservation_id, now)
        cost = cost_millicredits(tokens, settings.tokens_per_credit)
        if self.balance_millicredits - cost < -MAX_AMOUNT:
            raise InvalidCommandError("tokens", "the balance would pass its lower bound")
        released = max(hold["held_millicredits"] - cost, 0)
        self.trigger_event(
            self.ReservationSettled,
            timestamp=now,
            reservation_id=reservation_id,
            tokens=tokens,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            amount_millicredits=cost,
            released_millicredits=released,
            tokens_per_credit=settings.tokens_per_credit,
            model=model,
            lots=self._take(cost, now),
        )
        return cost, released

    def release(self: _Account, *, reservation_id: str, now: datetime) -> int:
        """Give back a reservation's whole hold. Returns the amount released."""
        self._expire_due(now)
        hold = self._open_hold(reservation_id, now)
        self.trigger_event(
            self.ReservationReleased,
            timestamp=now,
            reservation_id=reservation_id,
            released_millicredits=hold["held_millicredits"],
        )
        return hold["held_millicredits"]

    def _open_hold(self: _Account, reservation_id: str, now: datetime) -> Hold:
        hold = self.holds.get(reservation_id)
        if hold is not None:
            return hold
        status = self._closed_status(reservation_id, now)
        if status is not None:
            raise ReservationNotOpenError(reservation_id, status)
        raise NotFoundError("reservation", reservation_id)

    def _closed_status(self: _Account, reservation_id: str, now: datetime) -> str | None:
        """How a reservation closed, if it closed within the memory period (pruning is lazy, time is not)."""
        closed = self.closed_reservations.get(reservation_id)
        if closed is None or closed["closed_at_us"] <= to_us(now) - CLOSED_RESERVATION_MEMORY_US:
            return None
        return closed["status"]

    def _expire_due_holds(self: _Account, now: datetime) -> int:
        now_us = to_us(now)
        due = [rid for rid, hold in self.holds.items() if hold["expires_at_us"] <= now_us]
        for rid in due:
            self.trigger_event(
                self.ReservationExpired,
                timestamp=now,
                reservation_id=rid,
                released_millicredits=self.holds[rid]["held_millicredits"],
            )
        return len(due)
