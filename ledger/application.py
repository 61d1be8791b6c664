"""The ledger application: one method per use case, each returning a receipt.

The account use cases live here; the settings and catalogue ones in ``ledger.settings_cases``, the
purchases in ``ledger.purchases``. Each plans its command for the one write pipeline
(``ledger.pipeline``), which loads the account, decides in memory (the aggregate's rules, no I/O), and
saves its new events with the request's idempotency marker in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID, uuid4

import msgspec

from ledger.account import CreditAccount
from ledger.as_of import AccountAsOf, AccountHistory, Statement
from ledger.commands import (
    AdjustCredits,
    DebitUsage,
    ExpireDue,
    GrantCredits,
    IdempotencyKey,
    InitializeAccount,
    Origin,
    ReleaseReservation,
    ReserveCredits,
    RevokeCredits,
    SettleReservation,
)
from ledger.config import (
    BillingSettings,
)
from ledger.errors import (
    InvalidCommandError,
)
from ledger.ids import derived_id
from ledger.lots import LotKind, lot_view
from ledger.pipeline import _who
from ledger.plan import Plan
from ledger.purchases import PurchaseUseCases
from ledger.receipts import (
    AdjustmentReceipt,
    Balance,
    DebitReceipt,
    ExpiryReceipt,
    GrantReceipt,
    InitializeReceipt,
    ReleaseReceipt,
    ReservationReceipt,
    RevocationReceipt,
    SettlementReceipt,
)
from ledger.reservations import ReservationIndex

log = logging.getLogger(__name__)

Owned = TypeVar("Owned", SettleReservation, ReleaseReservation)
# A statement covers at most a year (and a day, for a leap year), so one request reads a bounded period.
MAX_STATEMENT_PERIOD = timedelta(days=366)


class Ledger(PurchaseUseCases):
    name = "Ledger"

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        self._planners.update(
            {
                DebitUsage: self._plan_debit,
                ReserveCredits: self._plan_reserve,
                GrantCredits: self._plan_grant,
                AdjustCredits: self._plan_adjust,
                SettleReservation: self._plan_settle,
                ReleaseReservation: self._plan_release,
            }
        )

    def submittable(self, command: object) -> bool:
        """A settlement or release reads nothing before deciding when it names its owner or the owner is
        known in memory; otherwise finding the owner is a read, done on the caller's thread."""
        if isinstance(command, SettleReservation | ReleaseReservation) and command.user_id is None:
            return self.reservation_owners.get(command.reservation_id) is not None
        return super().submittable(command)

    # Account use cases.

    def initialize_account(
        self, command: InitializeAccount, *, idempotency: IdempotencyKey | None = None, now: datetime
    ) -> InitializeReceipt:
        """Set an account up, granting the welcome credits exactly once; repeat calls change nothing.

        The same idempotency key gets the first answer again (``created`` included), as every write does.
        """

        def decide(
            account: CreditAccount, settings: BillingSettings, _: UUID | None
        ) -> Callable[[int], InitializeReceipt]:
            created = account.initialize(
                settings.welcome_millicredits, now, welcome_ttl_days=settings.welcome_credits_ttl_days
            )
            welcome = settings.welcome_millicredits if created else 0
            return lambda position: InitializeReceipt(
                position=position,
                user_id=account.user_id,
                created=created,
                welcome_millicredits=welcome,
                balance_after_millicredits=account.balance_millicredits,
            )

        return self._run(command, "initialize", idempotency, now, decide)

    def grant_credits(
        self, command: GrantCredits, *, idempotency: IdempotencyKey | None, now: datetime
    ) -> GrantReceipt:
        return self._run_plan(self._plan_grant(command, idempotency, now, None))

    def _plan_grant(
        self, command: GrantCredits, idempotency: IdempotencyKey | None, now: datetime, _: Origin | None
    ) -> Plan[GrantReceipt]:
        def decide(account: CreditAccount, _: BillingSettings, marker: UUID | None) -> Callable[[int], GrantReceipt]:
            grant_id = str(derived_id(marker, "grant") if marker else uuid4())
            account.grant(
                grant_id=grant_id,
                amount_millicredits=command.amount_millicredits,
                source=command.source,
                reference=command.reference,
                description=command.description,
                granted_by=command.granted_by,
                now=now,
            )
            return lambda position: GrantReceipt(
                position=position,
                grant_id=grant_id,
                user_id=account.user_id,
                amount_millicredits=command.amount_millicredits,
                balance_after_millicredits=account.balance_millicredits,
                available_after_millicredits=account.available_millicredits(now),
            )

        return self._plan(command, "grant", idempotency, now, decide)

    def debit_usage(self, command: DebitUsage, *, idempotency: IdempotencyKey | None, now: datetime) -> DebitReceipt:
        return self._run_plan(self._plan_debit(command, idempotency, now, None))

    def _plan_debit(
        self, command: DebitUsage, idempotency: IdempotencyKey | None, now: datetime, _: Origin | None
    ) -> Plan[DebitReceipt]:
        def decide(
            account: CreditAccount, settings: BillingSettings, marker: UUID | None
        ) -> Callable[[int], DebitReceipt]:
            debit_id = str(derived_id(marker, "debit") if marker else uuid4())
            cost = account.debit(
                debit_id=debit_id,
                tokens=command.tokens,
                input_tokens=command.input_tokens,
                output_tokens=command.output_tokens,
                model=command.model,
                agent_id=command.agent_id,
                analysis_id=command.analysis_id,
                occurred_at=command.occurred_at,
                settings=settings,
                now=now,
            )
            return lambda position: DebitReceipt(
                position=position,
                debit_id=debit_id,
                user_id=account.user_id,
                tokens=command.tokens,
                amount_millicredits=cost,
                balance_after_millicredits=account.balance_millicredits,
                available_after_millicredits=account.available_millicredits(now),
            )

        return self._plan(command, "debit", idempotency, now, decide)

    def reserve_credits(
        self, command: ReserveCredits, *, idempotency: IdempotencyKey | None, now: datetime
    ) -> ReservationReceipt:
        return self._run_plan(self._plan_reserve(command, idempotency, now, None))

    def _plan_reserve(
        self, command: ReserveCredits, idempotency: IdempotencyKey | None, now: datetime, _: Origin | None
    ) -> Plan[ReservationReceipt]:
        def decide(
            account: CreditAccount, settings: BillingSettings, marker: UUID | None
        ) -> Callable[[int], ReservationReceipt]:
            reservation_id = str(derived_id(marker, "reservation") if marker else uuid4())
            companions.append(ReservationIndex.index(reservation_id, account.user_id, now))
            held, expires_at = account.reserve(
                reservation_id=reservation_id,
                estimated_tokens=command.estimated_tokens,
                ttl_seconds=command.ttl_seconds,
                analysis_id=command.analysis_id,
                settings=settings,
                now=now,
            )
            return lambda position: ReservationReceipt(
                position=position,
                reservation_id=reservation_id,
                user_id=account.user_id,
                held_millicredits=held,
                expires_at=expires_at,
                available_after_millicredits=account.available_millicredits(now),
            )

        companions: list[Any] = []
        return self._plan(command, "reserve", idempotency, now, decide, companions)

    def settle_reservation(
        self, command: SettleReservation, *, idempotency: IdempotencyKey | None, now: datetime
    ) -> SettlementReceipt:
        """Debit a reservation's actual usage. Without a user id, the reservation's own index names it."""
        return self._run_plan(self._plan_settle(command, idempotency, now, None))

    def _plan_settle(
        self, command: SettleReservation, idempotency: IdempotencyKey | None, now: datetime, _: Origin | None
    ) -> Plan[SettlementReceipt]:
        command = self._owned(command)

        def decide(
            account: CreditAccount, settings: BillingSettings, _: UUID | None
        ) -> Callable[[int], SettlementReceipt]:
            debited, released = account.settle(
                reservation_id=command.reservation_id,
                tokens=command.tokens,
                input_tokens=command.input_tokens,
                output_tokens=command.output_tokens,
                model=command.model,
                settings=settings,
                now=now,
            )
            return lambda position: SettlementReceipt(
                position=position,
                reservation_id=command.reservation_id,
                user_id=account.user_id,
                tokens=command.tokens,
                debited_millicredits=debited,
                released_millicredits=released,
                balance_after_millicredits=account.balance_millicredits,
                available_after_millicredits=account.available_millicredits(now),
            )

        return self._plan(command, "settle", idempotency, now, decide)

    def release_reservation(
        self, command: ReleaseReservation, *, idempotency: IdempotencyKey | None, now: datetime
    ) -> ReleaseReceipt:
        return self._run_plan(self._plan_release(command, idempotency, now, None))

    def _plan_release(
        self, command: ReleaseReservation, idempotency: IdempotencyKey | None, now: datetime, _: Origin | None
    ) -> Plan[ReleaseReceipt]:
        command = self._owned(command)

        def decide(account: CreditAccount, _: BillingSettings, __: UUID | None) -> Callable[[int], ReleaseReceipt]:
            released = account.release(reservation_id=command.reservation_id, now=now)
            return lambda position: ReleaseReceipt(
                position=position,
                reservation_id=command.reservation_id,
                user_id=account.user_id,
                released_millicredits=released,
                balance_after_millicredits=account.balance_millicredits,
                available_after_millicredits=account.available_millicredits(now),
            )

        return self._plan(command, "release", idempotency, now, decide)

    def _owned(self, command: Owned) -> Owned:
        """The command naming its reservation's owner. Read from the index only on a caller's thread: a
        command ``submittable`` lets through names it or has it in memory, which nothing drops before its
        plan but 100,000 other reservations learnt in between."""
        if command.user_id is not None:
            return command
        return msgspec.structs.replace(command, user_id=self.reservation_owner(command.reservation_id))

    def adjust_credits(
        self,
        command: AdjustCredits,
        *,
        idempotency: IdempotencyKey | None,
        now: datetime,
        origin: Origin | None = None,
    ) -> AdjustmentReceipt:
        """An admin's correction: grants a positive amount, removes a negative one (never past available)."""
        return self._run_plan(self._plan_adjust(command, idempotency, now, origin))

    def _plan_adjust(
        self, command: AdjustCredits, idempotency: IdempotencyKey | None, now: datetime, origin: Origin | None
    ) -> Plan[AdjustmentReceipt]:
        who = _who(origin)

        def decide(
            account: CreditAccount, _: BillingSettings, marker: UUID | None
        ) -> Callable[[int], AdjustmentReceipt]:
            adjustment_id = str(derived_id(marker, "adjustment") if marker else uuid4())
            amount = command.amount_millicredits
            if type(amount) is not int or amount == 0:
                raise InvalidCommandError("amount_millicredits", "must be a non-zero integer")
            if amount < 0 and command.kind is not None:
                raise InvalidCommandError("kind", "applies to a grant (a positive amount) only")
            if amount < 0 and command.expires_at is not None:
                raise InvalidCommandError("expires_at", "applies to a grant (a positive amount) only")
            if amount > 0:
                account.grant(
                    grant_id=adjustment_id,
                    amount_millicredits=amount,
                    source="admin",
                    reference=None,
                    description=command.reason,
                    granted_by=command.admin_id,
                    now=now,
                    kind=LotKind(command.kind or LotKind.PROMO),
                    expires_at=command.expires_at,
                    **who,
                )
            else:
                account.remove(
                    adjustment_id=adjustment_id,
                    amount_millicredits=-amount,
                    reason=command.reason,
                    removed_by=command.admin_id,
                    now=now,
                    **who,
                )
            return lambda position: AdjustmentReceipt(
                position=position,
                adjustment_id=adjustment_id,
                user_id=account.user_id,
                amount_millicredits=amount,
                balance_after_millicredits=account.balance_millicredits,
            )

        return self._plan(command, "adjust", idempotency, now, decide)

    def revoke_credits(
        self, command: RevokeCredits, *, idempotency: IdempotencyKey | None, now: datetime
    ) -> RevocationReceipt:
        def decide(
            account: CreditAccount, _: BillingSettings, marker: UUID | None
        ) -> Callable[[int], RevocationReceipt]:
            revocation_id = str(derived_id(marker, "revocation") if marker else uuid4())
            account.revoke(
                revocation_id=revocation_id,
                amount_millicredits=command.amount_millicredits,
                reason=command.reason,
                reference=command.reference,
                now=now,
            )
            return lambda position: RevocationReceipt(
                position=position,
                revocation_id=revocation_id,
                user_id=account.user_id,
                amount_millicredits=command.amount_millicredits,
                balance_after_millicredits=account.balance_millicredits,
            )

        return self._run(command, "revoke", idempotency, now, decide)

    def expire_due(self, user_id: str, *, now: datetime) -> int:
        """Write the expiry of every hold and lot past its time (the sweeper's command). Returns how many."""
        if self.get_account(user_id) is None:
            return 0  # Nothing to expire, and no account to open for it.

        def decide(account: CreditAccount, _: BillingSettings, __: UUID | None) -> Callable[[int], ExpiryReceipt]:
            expired = account.expire_due(now)
            return lambda position: ExpiryReceipt(position=position, expired=expired)

        return self._run(ExpireDue(user_id=user_id), "expire", None, now, decide).expired

    def get_balance(self, user_id: str, *, now: datetime) -> Balance:
        """The balance straight from the account's events (the views serve the same from tables)."""
        account = self._load_account(user_id, now)
        if account is None:
            return Balance(
                user_id=user_id,
                balance_millicredits=0,
                reserved_millicredits=0,
                available_millicredits=0,
                updated_at=None,
            )
        reserved = account.reserved_millicredits(now)
        balance = account.balance_at(now)
        return Balance(
            user_id=user_id,
            balance_millicredits=balance,
            reserved_millicredits=reserved,
            available_millicredits=balance - reserved,
            updated_at=account.modified_on,
            lots=[lot_view(lot_id, lot) for lot_id, lot in account.open_lots(now)],
        )

    def balance_as_of(self, user_id: str, *, at: datetime, now: datetime) -> AccountAsOf:
        """The balance, holds and available credits exactly as they were at ``at``, from the events."""
        if at > now:
            raise InvalidCommandError("at", "must not be in the future")
        return AccountHistory(self, user_id).as_of(at)

    def statement(self, user_id: str, *, start: datetime, end: datetime, now: datetime) -> Statement:
        """The movements from ``start`` (included) to ``end`` (excluded), with the balances at both ends."""
        if start > end:
            raise InvalidCommandError("from", "must not be after to")
        if end > now:
            raise InvalidCommandError("to", "must not be in the future")
        if end - start > MAX_STATEMENT_PERIOD:
            raise InvalidCommandError("to", f"must be at most {MAX_STATEMENT_PERIOD.days} days after from")
        return AccountHistory(self, user_id).statement(start, end)
