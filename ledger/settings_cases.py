"""Use cases of the billing settings and the package catalogue, one aggregate each."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from ledger.commands import (
    AddPackage,
    ChangeBillingSettings,
    ChangePackage,
    Command,
    EvaluateSales,
    IdempotencyKey,
    Origin,
    SeedDefaults,
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
    NotFoundError,
    SalesPausedError,
)
from ledger.ids import BILLING_CONFIG_ID, PACKAGE_CATALOGUE_ID
from ledger.pipeline import Pipeline, _who
from ledger.plan import Plan
from ledger.receipts import (
    ChangeReceipt,
    PackageReceipt,
    Receipt,
    SettingsReceipt,
)

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Receipt)


class SettingsUseCases(Pipeline):
    """The billing settings and the package catalogue."""

    def change_billing_settings(
        self,
        command: ChangeBillingSettings,
        *,
        idempotency: IdempotencyKey | None = None,
        now: datetime,
        origin: Origin | None = None,
    ) -> SettingsReceipt:
        """Apply a partial update of the billing settings; it applies to the next command at once."""

        def decide(config: BillingConfig, _: UUID | None) -> Callable[[int], SettingsReceipt]:
            changed = config.change(dict(command.changes), command.changed_by, now, **_who(origin))
            return lambda position: SettingsReceipt(position=position, settings=dict(config.values), changed=changed)

        def saved(config: BillingConfig) -> None:
            with self._settings_lock:
                self._settings = config.settings
                self._settings_read_at = time.monotonic()

        return self._run_plan(
            self._plan_singleton(
                BILLING_CONFIG_ID,
                command,
                now,
                lambda: self._billing_config(now),
                decide,
                operation="billing-config",
                idempotency=idempotency,
                saved=saved,
            )
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
        command = EvaluateSales(
            circulation_millicredits=circulation_millicredits, smallest_package_credits=smallest_package_credits
        )

        def decide(config: BillingConfig, _: UUID | None) -> Callable[[int], ChangeReceipt]:
            config.evaluate_sales(
                circulation_millicredits=command.circulation_millicredits,
                smallest_package_credits=command.smallest_package_credits,
                now=now,
            )
            changed = bool(config.pending_events)
            return lambda position: ChangeReceipt(position=position, changed=changed)

        plan = self._plan_singleton(BILLING_CONFIG_ID, command, now, lambda: self._billing_config(now), decide)
        return self._run_plan(plan).changed

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
        command = SeedDefaults()

        def opened(aggregate: BillingConfig | PackageCatalogue, _: UUID | None) -> Callable[[int], ChangeReceipt]:
            # Loading made a new aggregate only if none was recorded: seeding is saving what loading made.
            changed = bool(aggregate.pending_events)
            return lambda position: ChangeReceipt(position=position, changed=changed)

        def seed_catalogue(catalogue: PackageCatalogue, marker: UUID | None) -> Callable[[int], ChangeReceipt]:
            if not catalogue.all_packages():
                for package in DEFAULT_PACKAGES:
                    catalogue.add(package, "seed", now, actor_role="system")
            return opened(catalogue, marker)

        config = self._run_plan(
            self._plan_singleton(BILLING_CONFIG_ID, command, now, lambda: self._billing_config(now), opened)
        )
        catalogue = self._run_plan(
            self._plan_singleton(PACKAGE_CATALOGUE_ID, command, now, lambda: self._catalogue(now), seed_catalogue)
        )
        return config.changed or catalogue.changed

    def _plan_singleton(
        self,
        aggregate_id: UUID,
        command: Command,
        now: datetime,
        load: Callable[[], Any],
        decide: Callable[[Any, UUID | None], Callable[[int], R]],
        *,
        operation: str = "",
        idempotency: IdempotencyKey | None = None,
        saved: Callable[[Any], None] | None = None,
    ) -> Plan[R]:
        """A command on the configuration or the catalogue: one aggregate each, whose changes take turns."""
        return Plan(
            aggregate_id=aggregate_id,
            lock=self._singleton_lock,
            load=load,
            decide=decide,
            command=command,
            operation=operation,
            idempotency=idempotency,
            now=now,
            what="billing configuration" if aggregate_id == BILLING_CONFIG_ID else "package catalogue",
            saved=saved,
        )

    def _catalogue(self, now: datetime) -> PackageCatalogue:
        try:
            catalogue: PackageCatalogue = self.repository.get(PACKAGE_CATALOGUE_ID)
        except AggregateNotFoundError:
            return PackageCatalogue.open(now)
        return catalogue

    def _change_catalogue(
        self,
        command: Command,
        operation: str,
        idempotency: IdempotencyKey | None,
        now: datetime,
        decide: Callable[[PackageCatalogue, UUID | None], Callable[[int], PackageReceipt]],
    ) -> PackageReceipt:
        return self._run_plan(
            self._plan_singleton(
                PACKAGE_CATALOGUE_ID,
                command,
                now,
                lambda: self._catalogue(now),
                decide,
                operation=operation,
                idempotency=idempotency,
            )
        )


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
