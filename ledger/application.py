"""The ledger application: one method per use case, each returning a receipt.

Every account command follows the same path: load the account (from the aggregate cache, fast-forwarded
from the database), decide in memory (the aggregate's rules, no I/O), then save the account's new events
and the request's idempotency marker in one transaction. The deciding step is a plain function of the
account and the settings so that a later writer can apply many commands before one save.

Conflicts are resolved by the database. An ``IntegrityError`` on save means either the marker exists (a
duplicate request: replay its receipt, or refuse a different body) or another process changed the account
first (reload and decide again). Within one process, commands on the same account take a lock first, so
they do not conflict with each other at all.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Any, ClassVar, TypeVar
from uuid import UUID, uuid4

import msgspec
from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, StoredEvent

from ledger.account import CreditAccount
from ledger.as_of import AccountAsOf, AccountHistory, Statement
from ledger.commands import (
    AddPackage,
    AdjustCredits,
    ChangeBillingSettings,
    ChangePackage,
    Command,
    DebitUsage,
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
    DEFAULT_PACKAGES,
    PACKAGE_FIELDS,
    BillingConfig,
    BillingSettings,
    Package,
    PackageCatalogue,
    sale_allowed,
)
from ledger.errors import (
    ConcurrencyError,
    IdempotencyConflictError,
    InvalidCommandError,
    LedgerError,
    NotFoundError,
    SalesPausedError,
)
from ledger.group_commit import GroupCommitWriter, Plan
from ledger.idempotency import IdempotencyRecord
from ledger.ids import BILLING_CONFIG_ID, PACKAGE_CATALOGUE_ID, account_id, derived_id, request_id
from ledger.lots import LotKind, lot_view
from ledger.payments import (
    Checkout,
    Holding,
    PaymentFact,
    PaymentIntentIndex,
    SessionDetails,
    checkout_id,
    payment_intent_index_id,
)
from ledger.receipts import (
    AdjustmentReceipt,
    Balance,
    DebitReceipt,
    GrantReceipt,
    InitializeReceipt,
    PackageReceipt,
    PaymentReceipt,
    Receipt,
    ReleaseReceipt,
    ReservationReceipt,
    RevocationReceipt,
    SettingsReceipt,
    SettlementReceipt,
)
from ledger.reservations import ReservationIndex, reservation_index_id

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Receipt)
A = TypeVar("A", bound=Aggregate)
Decision = Callable[[CreditAccount, BillingSettings, UUID | None], Callable[[int], R]]

# Another process changing the same account is rare; a few quick retries resolve it.
MAX_ATTEMPTS = 25
# Settings are read from their own aggregate at most this often; a change made here applies at once.
SETTINGS_MAX_AGE_SECONDS = 1.0
LOCK_STRIPES = 1024
# A statement covers at most a year (and a day, for a leap year), so one request reads a bounded period.
MAX_STATEMENT_PERIOD = timedelta(days=366)


class Ledger(Application):  # type: ignore[type-arg]
    name = "Ledger"
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {CreditAccount: 200}

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        self._account_locks = [threading.Lock() for _ in range(LOCK_STRIPES)]
        self._settings: BillingSettings | None = None
        self._settings_read_at = 0.0
        self._settings_lock = threading.Lock()
        # The configuration and the catalogue are one aggregate each: their changes take turns.
        self._singleton_lock = threading.Lock()
        self._writer: GroupCommitWriter | None = None

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

        return self._run(command, "grant", idempotency, now, decide)

    def debit_usage(self, command: DebitUsage, *, idempotency: IdempotencyKey | None, now: datetime) -> DebitReceipt:
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

        return self._run(command, "debit", idempotency, now, decide)

    def reserve_credits(
        self, command: ReserveCredits, *, idempotency: IdempotencyKey | None, now: datetime
    ) -> ReservationReceipt:
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
        return self._run(command, "reserve", idempotency, now, decide, companions)

    def settle_reservation(
        self, command: SettleReservation, *, idempotency: IdempotencyKey | None, now: datetime
    ) -> SettlementReceipt:
        """Debit a reservation's actual usage. Without a user id, the reservation's own index names it."""
        if command.user_id is None:
            command = msgspec.structs.replace(command, user_id=self.reservation_owner(command.reservation_id))

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

        return self._run(command, "settle", idempotency, now, decide)

    def release_reservation(
        self, command: ReleaseReservation, *, idempotency: IdempotencyKey | None, now: datetime
    ) -> ReleaseReceipt:
        if command.user_id is None:
            command = msgspec.structs.replace(command, user_id=self.reservation_owner(command.reservation_id))

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

        return self._run(command, "release", idempotency, now, decide)

    def adjust_credits(
        self,
        command: AdjustCredits,
        *,
        idempotency: IdempotencyKey | None,
        now: datetime,
        origin: Origin | None = None,
    ) -> AdjustmentReceipt:
        """An admin's correction: grants a positive amount, removes a negative one (never past available)."""
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

        return self._run(command, "adjust", idempotency, now, decide)

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

    # Purchases.

    def start_checkout(self, session_id: str, details: SessionDetails, *, now: datetime) -> PaymentReceipt:
        """Record a Checkout Session just created for a purchase; starting it again changes nothing."""
        for _ in range(MAX_ATTEMPTS):
            existing = self._get_checkout(session_id)
            if existing is not None:
                return _payment_receipt(existing, None, self.recorder.max_notification_id() or 0)
            checkout = Checkout.start(session_id, details, now)
            try:
                recordings = self.save(checkout)
            except IntegrityError:
                continue
            return _payment_receipt(checkout, None, _position(recordings, self))
        raise ConcurrencyError(f"checkout {session_id} kept changing")

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

        return self._execute(
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

    def expire_due(self, user_id: str, *, now: datetime) -> int:
        """Write the expiry of every hold and lot past its time (the sweeper's command). Returns how many."""
        with self._account_lock(user_id):
            for _ in range(MAX_ATTEMPTS):
                account = self._load_account(user_id, now)
                if account is None:
                    return 0
                expired = account.expire_due(now)
                if not expired:
                    return 0
                try:
                    self.save(account)
                except IntegrityError:
                    _pause()
                    continue
                return expired
        raise ConcurrencyError(f"account {user_id} kept changing")

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

    def refresh_accounts(self, ids: list[UUID]) -> None:
        """Bring the cached copies of these accounts up to date, and load the missing ones: two queries in all.

        The group-commit writer calls this for a batch, holding the batch's account locks, before deciding
        it. One account at a time, a cold or stale cache costs a round trip or two per command on the
        writer's only thread (measured: most of its time), and a stale copy (another process wrote the
        account) fails the whole batch's save. Accounts that do not exist yet are left alone.
        """
        cache = self.repository.cache
        datastore = getattr(self.recorder, "datastore", None)
        if cache is None or datastore is None or self.snapshots is None or not ids:
            return
        accounts: dict[UUID, Any] = {}
        for aggregate_id in ids:
            with contextlib.suppress(KeyError):
                accounts[aggregate_id] = cache.get(aggregate_id)
        missing = [aggregate_id for aggregate_id in ids if aggregate_id not in accounts]
        snapshots_table = self.snapshots.recorder.events_table_name  # type: ignore[attr-defined]
        events_table = self.recorder.events_table_name  # type: ignore[attr-defined]
        with datastore.transaction(commit=False) as cursor:
            if missing:
                cursor.execute(
                    f"SELECT DISTINCT ON (originator_id) originator_id, originator_version, topic, state"  # noqa: S608
                    f" FROM {snapshots_table} WHERE originator_id = ANY(%b)"
                    " ORDER BY originator_id, originator_version DESC",
                    (missing,),
                )
                for row in cursor.fetchall():
                    snapshot: Any = self.mapper.to_domain_event(
                        StoredEvent(row["originator_id"], row["originator_version"], row["topic"], bytes(row["state"]))
                    )
                    accounts[row["originator_id"]] = snapshot.mutate(None)
            cursor.execute(
                # One index range scan per account: a plain join of the ids is planned as a scan of the whole
                # event table (measured: 36 ms against 0.7 ms for 32 accounts), and so is a LATERAL join once
                # the statement is prepared, unless OFFSET 0 keeps the subquery from being flattened.
                "SELECT e.originator_id, e.originator_version, e.topic, e.state"  # noqa: S608 - our table name.
                " FROM unnest(%b::uuid[], %b::bigint[]) WITH ORDINALITY AS s(id, version, n)"
                " CROSS JOIN LATERAL (SELECT originator_id, originator_version, topic, state"
                f" FROM {events_table} WHERE originator_id = s.id AND originator_version > s.version"
                " ORDER BY originator_version OFFSET 0) AS e"
                " ORDER BY s.n, e.originator_version",
                (ids, [accounts[i].version if i in accounts else 0 for i in ids]),
            )
            for row in cursor.fetchall():
                event: Any = self.mapper.to_domain_event(
                    StoredEvent(row["originator_id"], row["originator_version"], row["topic"], bytes(row["state"]))
                )
                accounts[row["originator_id"]] = event.mutate(accounts.get(row["originator_id"]))
        for aggregate_id, account in accounts.items():
            if isinstance(account, CreditAccount):
                cache.put(aggregate_id, account)

    def reservation_owner(self, reservation_id: str) -> str:
        """The user whose account holds a reservation."""
        try:
            entry: ReservationIndex = self.repository.get(reservation_index_id(reservation_id))
        except AggregateNotFoundError:
            raise NotFoundError("reservation", reservation_id) from None
        return entry.user_id

    def get_account(self, user_id: str) -> CreditAccount | None:
        try:
            account: CreditAccount = self.repository.get(account_id(user_id))
        except AggregateNotFoundError:
            return None
        return account

    # Billing configuration and packages.

    def billing_settings(self) -> BillingSettings:
        with self._settings_lock:
            if self._settings is None or time.monotonic() - self._settings_read_at > SETTINGS_MAX_AGE_SECONDS:
                try:
                    config: BillingConfig = self.repository.get(BILLING_CONFIG_ID)
                    self._settings = config.settings
                except AggregateNotFoundError:
                    self._settings = BillingSettings()
                self._settings_read_at = time.monotonic()
            return self._settings

    def change_billing_settings(
        self,
        command: ChangeBillingSettings,
        *,
        idempotency: IdempotencyKey | None = None,
        now: datetime,
        origin: Origin | None = None,
    ) -> SettingsReceipt:
        """Apply a partial update of the billing settings; it applies to the next command at once."""

        def load() -> BillingConfig:
            try:
                config: BillingConfig = self.repository.get(BILLING_CONFIG_ID)
            except AggregateNotFoundError:
                return BillingConfig.seed(BillingSettings(), now)
            return config

        def decide(config: BillingConfig, _: UUID | None) -> Callable[[int], SettingsReceipt]:
            changed = config.change(dict(command.changes), command.changed_by, now, **_who(origin))
            return lambda position: SettingsReceipt(position=position, settings=dict(config.values), changed=changed)

        def saved(config: BillingConfig) -> None:
            with self._settings_lock:
                self._settings = config.settings
                self._settings_read_at = time.monotonic()

        return self._execute(
            lock=self._singleton_lock,
            load=load,
            decide=decide,
            command=command,
            operation="billing-config",
            idempotency=idempotency,
            now=now,
            what="billing configuration",
            saved=saved,
        )

    def prepare_purchase(self, package_id: str, *, potential_tokens: int) -> Package:
        """Check that a package may be bought now: it exists, is on sale, and passes the oversell guard.

        ``potential_tokens`` is what the credits in circulation could buy, from the read side. A refusal
        writes nothing: whether sales are paused is a state of the system (``evaluate_sales``), not the
        answer to one attempt.
        """
        package = self.get_package(package_id)
        if not package.active:
            raise NotFoundError("package", package_id)
        settings = self.billing_settings()
        package_tokens = package.credits * settings.tokens_per_credit
        if not sale_allowed(settings, potential_tokens=potential_tokens, package_tokens=package_tokens):
            raise SalesPausedError(
                potential_tokens=potential_tokens,
                package_tokens=package_tokens,
                allowed_tokens=settings.api_monthly_limit_tokens * settings.alert_threshold_percent // 100,
            )
        return package

    def evaluate_sales(self, *, circulation_millicredits: int, smallest_package_credits: int, now: datetime) -> bool:
        """Record whether sales are paused and the API-usage alert raised, for these figures of the read
        side; True if that changed anything."""
        for _ in range(MAX_ATTEMPTS):
            with self._singleton_lock:
                config = self._billing_config(now)
                config.evaluate_sales(
                    circulation_millicredits=circulation_millicredits,
                    smallest_package_credits=smallest_package_credits,
                    now=now,
                )
                if not config.pending_events:
                    return False
                try:
                    self.save(config)
                except IntegrityError:
                    _pause()
                    continue
                return True
        raise ConcurrencyError("billing configuration kept changing")

    def _billing_config(self, now: datetime) -> BillingConfig:
        try:
            config: BillingConfig = self.repository.get(BILLING_CONFIG_ID)
        except AggregateNotFoundError:
            return BillingConfig.seed(BillingSettings(), now)
        return config

    def list_packages(self) -> list[Package]:
        try:
            catalogue: PackageCatalogue = self.repository.get(PACKAGE_CATALOGUE_ID)
        except AggregateNotFoundError:
            return []
        return catalogue.all_packages()

    def get_package(self, package_id: str) -> Package:
        try:
            catalogue: PackageCatalogue = self.repository.get(PACKAGE_CATALOGUE_ID)
        except AggregateNotFoundError:
            raise NotFoundError("package", package_id) from None
        return catalogue.get(package_id)

    def add_package(
        self,
        command: AddPackage,
        *,
        idempotency: IdempotencyKey | None = None,
        now: datetime,
        origin: Origin | None = None,
    ) -> PackageReceipt:
        package = Package(
            id=command.package_id,
            name=command.name,
            credits=command.credits,
            price_amount_minor=command.price_amount_minor,
            currency=command.currency,
            active=command.active,
            stripe_price_id=command.stripe_price_id,
        )

        def decide(catalogue: PackageCatalogue, _: UUID | None) -> Callable[[int], PackageReceipt]:
            catalogue.add(package, command.added_by, now, **_who(origin))
            return lambda position: _package_receipt(position, catalogue.get(package.id), list(PACKAGE_FIELDS))

        return self._change_catalogue(command, "add-package", idempotency, now, decide)

    def change_package(
        self,
        command: ChangePackage,
        *,
        idempotency: IdempotencyKey | None = None,
        now: datetime,
        origin: Origin | None = None,
    ) -> PackageReceipt:
        def decide(catalogue: PackageCatalogue, _: UUID | None) -> Callable[[int], PackageReceipt]:
            changed = catalogue.change(
                command.package_id, dict(command.changes), command.changed_by, now, **_who(origin)
            )
            return lambda position: _package_receipt(position, catalogue.get(command.package_id), changed)

        return self._change_catalogue(command, "change-package", idempotency, now, decide)

    def seed(self, *, now: datetime) -> bool:
        """Create the default billing configuration and packages unless they exist. True if it did."""
        seeded = False
        if BILLING_CONFIG_ID not in self.repository:
            try:
                self.save(BillingConfig.seed(BillingSettings(), now))
                seeded = True
            except IntegrityError:
                pass  # Another process seeded it first.
        if PACKAGE_CATALOGUE_ID not in self.repository:
            catalogue = PackageCatalogue.open(now)
            for package in DEFAULT_PACKAGES:
                catalogue.add(package, "seed", now, actor_role="system")
            try:
                self.save(catalogue)
                seeded = True
            except IntegrityError:
                pass
        return seeded

    # The shared path of every account command.

    def _run(
        self,
        command: Command,
        operation: str,
        idempotency: IdempotencyKey | None,
        now: datetime,
        decide: Callable[[CreditAccount, BillingSettings, UUID | None], Callable[[int], R]],
        companions: list[Any] | None = None,
    ) -> R:
        """Run an account command; ``companions`` are aggregates ``decide`` creates to be saved with it.

        With group commit on, the command joins the writer's next batch and this thread waits for the
        batch's transaction; otherwise it runs here, in a transaction of its own.
        """
        user_id: str = command.user_id  # type: ignore[attr-defined]
        plan = Plan(
            aggregate_id=account_id(user_id),
            lock=self._account_lock(user_id),
            load=lambda: self._load_account(user_id, now) or CreditAccount.open(user_id, now),
            decide=lambda account, marker: decide(account, self.billing_settings(), marker),
            command=command,
            operation=operation,
            idempotency=idempotency,
            now=now,
            what=f"account {user_id}",
            companions=companions if companions is not None else [],
        )
        if self._writer is not None and not self._writer.in_writer:
            future = self._writer.submit(plan)
            if _SUBMITTING.get():
                raise _Submitted(future)
            return future.result()  # type: ignore[return-value]
        return self.execute_plan(plan)  # type: ignore[return-value]

    def submit(self, method: Callable[..., R], *args: Any, **kwargs: Any) -> Future[R]:
        """Hand an account command to the group-commit writer without waiting for it.

        For callers on an event loop: the future resolves when the command's batch has committed (or with
        its refusal). ``method`` must be an account use case that reads nothing before deciding (a debit,
        a reservation, a grant, an adjustment); without the writer, it runs here and now.
        """
        if self._writer is None:
            done: Future[R] = Future()
            try:
                done.set_result(method(*args, **kwargs))
            except BaseException as error:  # noqa: BLE001 - handed to the caller through the future.
                done.set_exception(error)
            return done
        token = _SUBMITTING.set(True)
        try:
            method(*args, **kwargs)
        except _Submitted as submitted:
            return submitted.future
        finally:
            _SUBMITTING.reset(token)
        raise RuntimeError(f"{method.__name__} did not reach the writer")

    def execute_plan(self, plan: Plan) -> Receipt:
        """Run one planned account command in a transaction of its own."""
        return self._execute(
            lock=plan.lock,
            load=plan.load,
            decide=plan.decide,
            command=plan.command,
            operation=plan.operation,
            idempotency=plan.idempotency,
            now=plan.now,
            what=plan.what,
            companions=plan.companions,
        )

    def discard_broken_connections(self) -> None:
        """Test every idle pooled connection and replace the dead ones, after one was found dead.

        Connections are not tested before each use (a round trip on every command); after a database
        restart every one in the pool is dead, and without this each would fail a command in turn.
        """
        datastore = getattr(self.recorder, "datastore", None)
        if datastore is not None:
            datastore.pool.check()

    @property
    def group_commit(self) -> bool:
        """True when account commands go through the group-commit writer."""
        return self._writer is not None

    def enable_group_commit(self, *, max_batch: int = 256, max_wait_seconds: float = 0.0) -> None:
        """Commit account commands that arrive together in one transaction (see ``ledger.group_commit``)."""
        if self._writer is None:
            self._writer = GroupCommitWriter(self, max_batch=max_batch, max_wait_seconds=max_wait_seconds).start()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        super().close()

    def _execute(
        self,
        *,
        lock: threading.Lock,
        load: Callable[[], A],
        decide: Callable[[A, UUID | None], Callable[[int], R]],
        command: Command,
        operation: str,
        idempotency: IdempotencyKey | None,
        now: datetime,
        what: str,
        saved: Callable[[A], None] | None = None,
        companions: list[Any] | None = None,
    ) -> R:
        """Load, decide in memory, then save the aggregate and the request's marker in one transaction."""
        fingerprint = command.fingerprint() if idempotency else ""
        marker_id = request_id(idempotency.principal, operation, idempotency.key) if idempotency else None
        with lock:
            for _ in range(MAX_ATTEMPTS):
                aggregate = load()
                if companions is not None:
                    companions.clear()
                try:
                    make_receipt = decide(aggregate, marker_id)
                except LedgerError:
                    # A retried request must get its first answer even if the aggregate has moved on since.
                    replay = self.replay(marker_id, idempotency, fingerprint, operation)
                    if replay is not None:
                        return replay  # type: ignore[return-value]
                    raise
                receipt = make_receipt(0)
                to_save: list[Any] = [aggregate, *(companions or ())]
                if idempotency is not None:
                    to_save.append(
                        IdempotencyRecord.record(
                            principal=idempotency.principal,
                            operation=operation,
                            key=idempotency.key,
                            fingerprint=fingerprint,
                            receipt_type=type(receipt).__name__,
                            receipt=msgspec.to_builtins(receipt),
                            now=now,
                        )
                    )
                try:
                    recordings = self.save(*to_save)
                except IntegrityError:
                    replay = self.replay(marker_id, idempotency, fingerprint, operation)
                    if replay is not None:
                        return replay  # type: ignore[return-value]
                    _pause()
                    continue
                if saved is not None:
                    saved(aggregate)
                return msgspec.structs.replace(receipt, position=_position(recordings, self))
        raise ConcurrencyError(f"{what} kept changing")

    def replay(
        self, marker_id: UUID | None, idempotency: IdempotencyKey | None, fingerprint: str, operation: str
    ) -> Receipt | None:
        """The first receipt of a request already committed, or None; a different request is a conflict."""
        if marker_id is None or idempotency is None:
            return None
        try:
            marker: IdempotencyRecord = self.repository.get(marker_id)
        except AggregateNotFoundError:
            return None
        if marker.fingerprint != fingerprint or marker.operation != operation:
            raise IdempotencyConflictError(idempotency.key)
        receipt_type = RECEIPT_TYPES[marker.receipt_type]
        # The original position is at most the log's head now, which is enough to read one's own write.
        position = self.recorder.max_notification_id() or 0
        return msgspec.convert({**marker.receipt, "position": position, "replayed": True}, receipt_type)

    def _load_account(self, user_id: str, now: datetime) -> CreditAccount | None:
        del now  # Loading does not depend on time; it is here so callers read alike.
        return self.get_account(user_id)

    def _account_lock(self, user_id: str) -> threading.Lock:
        return self._account_locks[hash(user_id) % LOCK_STRIPES]

    def _change_catalogue(
        self,
        command: Command,
        operation: str,
        idempotency: IdempotencyKey | None,
        now: datetime,
        decide: Callable[[PackageCatalogue, UUID | None], Callable[[int], PackageReceipt]],
    ) -> PackageReceipt:
        def load() -> PackageCatalogue:
            try:
                catalogue: PackageCatalogue = self.repository.get(PACKAGE_CATALOGUE_ID)
            except AggregateNotFoundError:
                return PackageCatalogue.open(now)
            return catalogue

        return self._execute(
            lock=self._singleton_lock,
            load=load,
            decide=decide,
            command=command,
            operation=operation,
            idempotency=idempotency,
            now=now,
            what="package catalogue",
        )

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        """The library's ``save``, for this ledger's own aggregates only.

        The library's version asks of each object whether it is an event or an aggregate with runtime
        protocol checks, which cost about 3% of a debit's CPU in the benchmark's profile; everything
        this ledger saves is an aggregate.
        """
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        for aggregate in objs:
            if not isinstance(aggregate, Aggregate):
                raise TypeError(f"not an aggregate: {aggregate!r}")
            processing_event.events.extend(aggregate.collect_events())
            processing_event.aggregates[aggregate.id] = aggregate
        processing_event.saved_kwargs.update(kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        return recordings

    def _record(self, processing_event: Any) -> Any:
        """Record, then keep the saved accounts in the cache.

        With fast-forward on, the library caches an aggregate only when it is read, so an account written
        once and read again later is rebuilt from the database. The saved object is exactly the
        committed state, so it goes into the cache as it is.
        """
        recordings = super()._record(processing_event)
        cache = self.repository.cache
        if cache is not None:
            for aggregate_id, aggregate in processing_event.aggregates.items():
                if isinstance(aggregate, CreditAccount):
                    cache.put(aggregate_id, aggregate)
        return recordings

    def _take_snapshots(self, processing_event: Any) -> None:
        """Snapshot from the aggregate in memory, which is exactly the saved state.

        The library's version rebuilds the aggregate from the database first, a second read on the
        write path. A failure here must not fail the command: its events are already committed.
        """
        if self.snapshots is None:
            return
        for aggregate in processing_event.aggregates.values():
            interval = self.snapshotting_intervals.get(type(aggregate))
            if interval is None:
                continue
            versions = range(
                aggregate.version - len(_new_events(processing_event, aggregate.id)) + 1,
                aggregate.version + 1,
            )
            if any(version % interval == 0 for version in versions):
                try:
                    self.snapshots.put([type(aggregate).Snapshot.take(aggregate)])
                except Exception:
                    log.exception("snapshot of %s at version %s failed", aggregate.id, aggregate.version)


_SUBMITTING: ContextVar[bool] = ContextVar("ledger_submitting", default=False)


class _Submitted(Exception):  # noqa: N818 - a signal, not an error.
    """Carries a queued command's future out of the use-case method that queued it."""

    def __init__(self, future: Future[Any]) -> None:
        super().__init__("submitted")
        self.future = future


RECEIPT_TYPES: dict[str, type[Receipt]] = {
    cls.__name__: cls
    for cls in (
        InitializeReceipt,
        GrantReceipt,
        DebitReceipt,
        ReservationReceipt,
        SettlementReceipt,
        ReleaseReceipt,
        AdjustmentReceipt,
        RevocationReceipt,
        SettingsReceipt,
        PackageReceipt,
        PaymentReceipt,
    )
}


def _who(origin: Origin | None) -> dict[str, str | None]:
    """The audit fields an audited change's events carry."""
    if origin is None:
        return {}
    return {"actor_role": origin.actor_role, "request_id": origin.request_id}


def _package_receipt(position: int, package: Package, changed: list[str]) -> PackageReceipt:
    return PackageReceipt(
        position=position,
        package_id=package.id,
        name=package.name,
        credits=package.credits,
        price_amount_minor=package.price_amount_minor,
        currency=package.currency,
        active=package.active,
        stripe_price_id=package.stripe_price_id,
        changed=changed,
    )


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
        granted_millicredits=checkout.holding[0],
        refund_clawback_millicredits=checkout.holding[1],
        dispute_clawback_millicredits=checkout.holding[2],
        balance_after_millicredits=balance,
    )


def _new_events(processing_event: Any, aggregate_id: UUID) -> list[Any]:
    return [event for event in processing_event.events if event.originator_id == aggregate_id]


def _position(recordings: list[Any], app: Application) -> int:  # type: ignore[type-arg]
    positions = [r.notification.id for r in recordings if r.notification is not None]
    return max(positions) if positions else (app.recorder.max_notification_id() or 0)


def _pause() -> None:
    """A short random wait before retrying a conflict, so racing processes do not collide again."""
    time.sleep(random.uniform(0.0005, 0.005))  # noqa: S311 - jitter, not security
