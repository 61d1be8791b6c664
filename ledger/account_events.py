"""The credit account's events, and the records of its state they assign.

Each event's ``apply`` only assigns, so replaying history never runs a rule. The events live here, apart
from the rules (``ledger.account``), and each is named on the aggregate (``CreditAccount.CreditsGranted``),
which is where the event store library finds them; their topics are explicit, so where a class is written
does not change what is stored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol, TypedDict

from eventsourcing.domain import Aggregate

from ledger.lots import KIND_OF_SOURCE, Lot, LotKind, allocate, consumption_order
from ledger.quota import DAILY, HOUR_US, HOURLY, US_PER_SECOND, UsageBucket, upcast_buckets

# A closed reservation is remembered this long, so a late settle or release gets 409 rather than 404.
CLOSED_RESERVATION_MEMORY_US = 30 * 24 * HOUR_US
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Hold(TypedDict):
    """An open reservation's hold."""

    held_millicredits: int
    expires_at_us: int
    estimated_tokens: int


class ClosedReservation(TypedDict):
    status: str  # settled, released or expired
    closed_at_us: int


class AccountState(Protocol):
    """What the events assign: the account's state, without its rules."""

    initialized: bool
    balance_millicredits: int
    lots: dict[str, Lot]
    debt_millicredits: int
    holds: dict[str, Hold]
    closed_reservations: dict[str, ClosedReservation]
    minute_usage: list[UsageBucket]
    hour_usage: list[UsageBucket]


def upcast_account_v1_v2(state: dict[str, Any]) -> None:
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


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch, exact (no float)."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * US_PER_SECOND + delta.microseconds


def from_us(moment_us: int) -> datetime:
    seconds, micros = divmod(moment_us, US_PER_SECOND)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)


class Initialized(Aggregate.Event):
    TOPIC = "ledger.CreditAccount.Initialized"
    welcome_millicredits: int

    def apply(self, account: AccountState) -> None:
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

    def apply(self, account: AccountState) -> None:
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

    def apply(self, account: AccountState) -> None:
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

    def apply(self, account: AccountState) -> None:
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

    def apply(self, account: AccountState) -> None:
        _consume(account, self.amount_millicredits, self.lots)
        _close_hold(account, self.reservation_id, "settled", to_us(self.timestamp))
        _count_usage(account, self.tokens, to_us(self.timestamp))


class ReservationReleased(Aggregate.Event):
    TOPIC = "ledger.CreditAccount.ReservationReleased"
    reservation_id: str
    released_millicredits: int

    def apply(self, account: AccountState) -> None:
        _close_hold(account, self.reservation_id, "released", to_us(self.timestamp))


class ReservationExpired(Aggregate.Event):
    TOPIC = "ledger.CreditAccount.ReservationExpired"
    reservation_id: str
    released_millicredits: int

    def apply(self, account: AccountState) -> None:
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

    def apply(self, account: AccountState) -> None:
        _consume(account, self.amount_millicredits, self.lots)


class CreditsRevoked(Aggregate.Event):
    TOPIC = "ledger.CreditAccount.CreditsRevoked"
    revocation_id: str
    amount_millicredits: int
    reason: str
    reference: str
    lots: dict[str, int] | None = None

    def apply(self, account: AccountState) -> None:
        _consume(account, self.amount_millicredits, self.lots)


class LotExpired(Aggregate.Event):
    """A lot's remaining credits stopped counting at its expiry; quotas are untouched."""

    TOPIC = "ledger.CreditAccount.LotExpired"
    lot_id: str
    kind: str
    amount_millicredits: int

    def apply(self, account: AccountState) -> None:
        del account.lots[self.lot_id]
        account.balance_millicredits -= self.amount_millicredits


def _count_usage(account: AccountState, tokens: int, at_us: int) -> None:
    HOURLY.count(account.minute_usage, tokens, at_us)
    DAILY.count(account.hour_usage, tokens, at_us)


def _consume(account: AccountState, amount_millicredits: int, taken: dict[str, int] | None) -> None:
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


def _close_hold(account: AccountState, reservation_id: str, status: str, at_us: int) -> None:
    del account.holds[reservation_id]
    closed = account.closed_reservations
    while closed:
        oldest = next(iter(closed))
        if closed[oldest]["closed_at_us"] > at_us - CLOSED_RESERVATION_MEMORY_US:
            break
        del closed[oldest]
    closed[reservation_id] = ClosedReservation(status=status, closed_at_us=at_us)


# What a command records because time has passed, before its own rules: kept even when the command is refused.
FALLEN_DUE = (ReservationExpired, LotExpired)
