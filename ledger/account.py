"""The credit account: one event stream per user, and every rule about its balance.

Rules live in the public methods, which raise a ``LedgerError`` before any event exists. Each event's
``apply`` only assigns, so replaying history never runs a rule: rules change, history does not.
Time arrives with each command (``now``) and is stored as the event's timestamp; the aggregate never
reads the clock, so a replay rebuilds exactly the same state.

State is kept in JSON-native types (ints, strings, lists, string-keyed dicts) so that a snapshot
round-trips through the mapper without custom codecs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypedDict

from eventsourcing.domain import Aggregate

from ledger.amounts import MAX_AMOUNT, cost_millicredits, is_amount
from ledger.errors import (
    InsufficientCreditsError,
    InvalidCommandError,
    NotFoundError,
    RemovalExceedsAvailableError,
    ReservationNotOpenError,
)
from ledger.ids import account_id
from ledger.lots import KIND_OF_SOURCE, Lot, LotKind, allocate, consumption_order, due, expired_millicredits
from ledger.quota import DAILY, HOUR_US, HOURLY, US_PER_SECOND, UsageBucket, upcast_buckets

if TYPE_CHECKING:
    from ledger.config import BillingSettings

# A closed reservation is remembered this long, so a late settle or release gets 409 rather than 404.
CLOSED_RESERVATION_MEMORY_US = 30 * 24 * HOUR_US
MAX_TTL_SECONDS = 86_400


class Hold(TypedDict):
    """An open reservation's hold."""

    held_millicredits: int
    expires_at_us: int
    estimated_tokens: int


class ClosedReservation(TypedDict):
    status: str  # settled, released or expired
    closed_at_us: int


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch, exact (no float)."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * US_PER_SECOND + delta.microseconds


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _check_tokens(field: str, value: int, *, allow_zero: bool = False) -> None:
    if not is_amount(value, allow_zero=allow_zero):
        floor = 0 if allow_zero else 1
        raise InvalidCommandError(field, f"must be an integer from {floor} to {MAX_AMOUNT}")


def _check_text(field: str, value: str | None, *, max_length: int, required: bool = False) -> None:
    if value is None:
        if required:
            raise InvalidCommandError(field, "is required")
        return
    if not 1 <= len(value) <= max_length:
        raise InvalidCommandError(field, f"must be 1 to {max_length} characters")


class CreditAccount(Aggregate):
    TOPIC = "ledger.CreditAccount"

    class Opened(Aggregate.Created):
        TOPIC = "ledger.CreditAccount.Opened"
        user_id: str

    class Created(Aggregate.Created):
        """Required by the library once a class has explicit topics; this aggregate never triggers it."""

        TOPIC = "ledger.CreditAccount.Created"

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

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """A snapshot from before lots knows only the balance: it becomes one paid lot, or debt. Its records
        were positional lists; they become named ones.

        ``ledger migrate`` drops such snapshots (accounts then load from their events, one lot per past
        grant); this keeps one that was left loadable, with the balance exact and only its split unknown.
        """
        state["holds"] = {
            rid: Hold(held_millicredits=held, expires_at_us=expires_at_us, estimated_tokens=estimated)
            for rid, (held, expires_at_us, estimated) in state["holds"].items()
        }
        state["closed_reservations"] = {
            rid: ClosedReservation(status=status, closed_at_us=closed_at_us)
            for rid, (status, closed_at_us) in state["closed_reservations"].items()
        }
        state["minute_usage"] = upcast_buckets(state["minute_usage"])
        state["hour_usage"] = upcast_buckets(state["hour_usage"])
        balance = state["balance_millicredits"]
        state["debt_millicredits"] = max(-balance, 0)
        state["lots"] = {}
        if balance > 0:
            state["lots"]["legacy"] = Lot(
                kind=LotKind.PAID,
                granted_millicredits=balance,
                remaining_millicredits=balance,
                expires_at_us=None,
                granted_at_us=0,
                reference=None,
            )

    @classmethod
    def open(cls, user_id: str, now: datetime) -> CreditAccount:
        _check_text("user_id", user_id, max_length=128, required=True)
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
        _check_text("reference", reference, max_length=255)
        _check_text("description", description, max_length=500)
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
        _check_tokens("tokens", tokens)
        _check_usage_split(tokens, input_tokens, output_tokens)
        _check_labels(model=model, agent_id=agent_id, analysis_id=analysis_id)
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

    def reserve(
        self,
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
        _check_tokens("estimated_tokens", estimated_tokens)
        if type(ttl_seconds) is not int or not 1 <= ttl_seconds <= MAX_TTL_SECONDS:
            raise InvalidCommandError("ttl_seconds", f"must be an integer from 1 to {MAX_TTL_SECONDS}")
        _check_labels(model=None, agent_id=None, analysis_id=analysis_id)
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
        self,
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
        _check_tokens("tokens", tokens, allow_zero=True)
        _check_usage_split(tokens, input_tokens, output_tokens)
        _check_labels(model=model, agent_id=None, analysis_id=None)
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

    def release(self, *, reservation_id: str, now: datetime) -> int:
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
        _check_text("reason", reason, max_length=500, required=True)
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
        _check_text("reference", reference, max_length=255, required=True)
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

    def _open_hold(self, reservation_id: str, now: datetime) -> Hold:
        hold = self.holds.get(reservation_id)
        if hold is not None:
            return hold
        status = self._closed_status(reservation_id, now)
        if status is not None:
            raise ReservationNotOpenError(reservation_id, status)
        raise NotFoundError("reservation", reservation_id)

    def _closed_status(self, reservation_id: str, now: datetime) -> str | None:
        """How a reservation closed, if it closed within the memory period (pruning is lazy, time is not)."""
        closed = self.closed_reservations.get(reservation_id)
        if closed is None or closed["closed_at_us"] <= to_us(now) - CLOSED_RESERVATION_MEMORY_US:
            return None
        return closed["status"]

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

    def _expire_due_holds(self, now: datetime) -> int:
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

    # Events: each apply only assigns.

    class Initialized(Aggregate.Event):
        TOPIC = "ledger.CreditAccount.Initialized"
        welcome_millicredits: int

        def apply(self, account: CreditAccount) -> None:
            account.initialized = True

    class CreditsGranted(Aggregate.Event):
        TOPIC = "ledger.CreditAccount.CreditsGranted"
        grant_id: str
        amount_millicredits: int
        source: str
        reference: str | None
        description: str | None
        granted_by: str | None
        # Who asked and in which request, for the audit trail; absent from events stored before it was.
        actor_role: str | None = None
        request_id: str | None = None
        # The lot: absent from grants recorded before lots, which ``upcast_v1_v2`` completes.
        kind: str = LotKind.PROMO
        expires_at_us: int | None = None
        # None on grants recorded before lots: they paid back debt as far as they could.
        debt_repaid_millicredits: int | None = None
        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["kind"] = KIND_OF_SOURCE[state["source"]]

        def apply(self, account: CreditAccount) -> None:
            repaid = self.debt_repaid_millicredits
            if repaid is None:
                repaid = min(account.debt_millicredits, self.amount_millicredits)
            account.balance_millicredits += self.amount_millicredits
            account.debt_millicredits -= repaid
            if self.amount_millicredits > repaid:
                account.lots[self.grant_id] = Lot(
                    kind=self.kind,
                    granted_millicredits=self.amount_millicredits,
                    remaining_millicredits=self.amount_millicredits - repaid,
                    expires_at_us=self.expires_at_us,
                    granted_at_us=to_us(self.timestamp),
                    reference=self.reference,
                )

    class CreditsDebited(Aggregate.Event):
        TOPIC = "ledger.CreditAccount.CreditsDebited"
        debit_id: str
        tokens: int
        input_tokens: int | None
        output_tokens: int | None
        amount_millicredits: int
        tokens_per_credit: int
        model: str | None
        agent_id: str | None
        analysis_id: str | None
        occurred_at: datetime
        # Lot id to the amount taken from it; None on debits recorded before lots.
        lots: dict[str, int] | None = None

        def apply(self, account: CreditAccount) -> None:
            _consume(account, self.amount_millicredits, self.lots)
            _count_usage(account, self.tokens, to_us(self.timestamp))

    class CreditsReserved(Aggregate.Event):
        TOPIC = "ledger.CreditAccount.CreditsReserved"
        reservation_id: str
        amount_millicredits: int
        estimated_tokens: int
        expires_at_us: int
        tokens_per_credit: int
        analysis_id: str | None

        def apply(self, account: CreditAccount) -> None:
            account.holds[self.reservation_id] = Hold(
                held_millicredits=self.amount_millicredits,
                expires_at_us=self.expires_at_us,
                estimated_tokens=self.estimated_tokens,
            )

    class ReservationSettled(Aggregate.Event):
        TOPIC = "ledger.CreditAccount.ReservationSettled"
        reservation_id: str
        tokens: int
        input_tokens: int | None
        output_tokens: int | None
        amount_millicredits: int
        released_millicredits: int
        tokens_per_credit: int
        model: str | None
        lots: dict[str, int] | None = None

        def apply(self, account: CreditAccount) -> None:
            _consume(account, self.amount_millicredits, self.lots)
            _close_hold(account, self.reservation_id, "settled", to_us(self.timestamp))
            _count_usage(account, self.tokens, to_us(self.timestamp))

    class ReservationReleased(Aggregate.Event):
        TOPIC = "ledger.CreditAccount.ReservationReleased"
        reservation_id: str
        released_millicredits: int

        def apply(self, account: CreditAccount) -> None:
            _close_hold(account, self.reservation_id, "released", to_us(self.timestamp))

    class ReservationExpired(Aggregate.Event):
        TOPIC = "ledger.CreditAccount.ReservationExpired"
        reservation_id: str
        released_millicredits: int

        def apply(self, account: CreditAccount) -> None:
            _close_hold(account, self.reservation_id, "expired", to_us(self.timestamp))

    class CreditsRemoved(Aggregate.Event):
        TOPIC = "ledger.CreditAccount.CreditsRemoved"
        adjustment_id: str
        amount_millicredits: int
        reason: str
        removed_by: str
        actor_role: str | None = None
        request_id: str | None = None
        lots: dict[str, int] | None = None

        def apply(self, account: CreditAccount) -> None:
            _consume(account, self.amount_millicredits, self.lots)

    class CreditsRevoked(Aggregate.Event):
        TOPIC = "ledger.CreditAccount.CreditsRevoked"
        revocation_id: str
        amount_millicredits: int
        reason: str
        reference: str
        lots: dict[str, int] | None = None

        def apply(self, account: CreditAccount) -> None:
            _consume(account, self.amount_millicredits, self.lots)

    class LotExpired(Aggregate.Event):
        """A lot's remaining credits stopped counting at its expiry; quotas are untouched."""

        TOPIC = "ledger.CreditAccount.LotExpired"
        lot_id: str
        kind: str
        amount_millicredits: int

        def apply(self, account: CreditAccount) -> None:
            del account.lots[self.lot_id]
            account.balance_millicredits -= self.amount_millicredits


def from_us(moment_us: int) -> datetime:
    seconds, micros = divmod(moment_us, US_PER_SECOND)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)


def _check_usage_split(tokens: int, input_tokens: int | None, output_tokens: int | None) -> None:
    if input_tokens is None and output_tokens is None:
        return
    if input_tokens is None or output_tokens is None:
        raise InvalidCommandError("input_tokens", "input_tokens and output_tokens go together")
    _check_tokens("input_tokens", input_tokens, allow_zero=True)
    _check_tokens("output_tokens", output_tokens, allow_zero=True)
    if input_tokens + output_tokens != tokens:
        raise InvalidCommandError("tokens", "must equal input_tokens + output_tokens")


def _check_labels(*, model: str | None, agent_id: str | None, analysis_id: str | None) -> None:
    _check_text("model", model, max_length=128)
    _check_text("agent_id", agent_id, max_length=128)
    _check_text("analysis_id", analysis_id, max_length=128)


def _count_usage(account: CreditAccount, tokens: int, at_us: int) -> None:
    HOURLY.count(account.minute_usage, tokens, at_us)
    DAILY.count(account.hour_usage, tokens, at_us)


def _consume(account: CreditAccount, amount_millicredits: int, taken: dict[str, int] | None) -> None:
    """Take credits from the named lots; what they did not cover is debt."""
    if taken is None:
        # Recorded before lots, when nothing expired: the lots in their order, as a frozen rule.
        taken = allocate(account.lots, consumption_order(account.lots), amount_millicredits)
    for lot_id, amount in taken.items():
        lot = account.lots[lot_id]
        lot["remaining_millicredits"] -= amount
        if not lot["remaining_millicredits"]:
            del account.lots[lot_id]
    account.debt_millicredits += amount_millicredits - sum(taken.values())
    account.balance_millicredits -= amount_millicredits


def _close_hold(account: CreditAccount, reservation_id: str, status: str, at_us: int) -> None:
    del account.holds[reservation_id]
    closed = account.closed_reservations
    while closed:
        oldest = next(iter(closed))
        if closed[oldest]["closed_at_us"] > at_us - CLOSED_RESERVATION_MEMORY_US:
            break
        del closed[oldest]
    closed[reservation_id] = ClosedReservation(status=status, closed_at_us=at_us)
