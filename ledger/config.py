"""Billing configuration and the package catalogue, each an event-sourced aggregate.

Every change is an event that records who made it, when, and the old and new values, so the history
of a price or a quota is never lost.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import msgspec
from eventsourcing.domain import Aggregate

from ledger.amounts import MAX_AMOUNT, MILLICREDITS_PER_CREDIT
from ledger.errors import InvalidCommandError, NotFoundError, StateConflictError
from ledger.ids import BILLING_CONFIG_ID, PACKAGE_CATALOGUE_ID


class BillingSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The values the rules read. Defaults are the guide's."""

    api_monthly_limit_tokens: int = 100_000_000
    alert_threshold_percent: int = 80
    hourly_token_limit: int = 500_000
    daily_token_limit: int = 2_000_000
    min_balance_for_analysis_millicredits: int = 100 * MILLICREDITS_PER_CREDIT
    tokens_per_credit: int = 1_000
    welcome_credits: int = 0

    @property
    def welcome_millicredits(self) -> int:
        return self.welcome_credits * MILLICREDITS_PER_CREDIT


# The lowest and highest value each setting may take.
SETTING_BOUNDS: Final[dict[str, tuple[int, int]]] = {
    "api_monthly_limit_tokens": (1, MAX_AMOUNT),
    "alert_threshold_percent": (1, 100),
    "hourly_token_limit": (1, MAX_AMOUNT),
    "daily_token_limit": (1, MAX_AMOUNT),
    "min_balance_for_analysis_millicredits": (0, MAX_AMOUNT),
    "tokens_per_credit": (1, 1_000_000_000),
    "welcome_credits": (0, 1_000_000_000),
}


class BillingConfig(Aggregate):
    TOPIC = "ledger.BillingConfig"

    class Seeded(Aggregate.Created):
        TOPIC = "ledger.BillingConfig.Seeded"
        values: dict[str, int]

    class Created(Aggregate.Created):
        """Required by the library once a class has explicit topics; this aggregate never triggers it."""

        TOPIC = "ledger.BillingConfig.Created"

    values: dict[str, int]
    sales_paused: bool

    def __init__(self, values: dict[str, int]) -> None:
        self.values = dict(values)
        self.sales_paused = False

    @classmethod
    def seed(cls, settings: BillingSettings, now: datetime) -> BillingConfig:
        config: BillingConfig = cls._create(
            cls.Seeded, id=BILLING_CONFIG_ID, values=msgspec.structs.asdict(settings), timestamp=now
        )
        return config

    @property
    def settings(self) -> BillingSettings:
        return BillingSettings(**self.values)

    def change(
        self,
        changes: dict[str, int],
        changed_by: str,
        now: datetime,
        *,
        actor_role: str | None = None,
        request_id: str | None = None,
    ) -> list[str]:
        """Apply a partial update. Returns the names of the settings whose value changed."""
        for key, value in changes.items():
            bounds = SETTING_BOUNDS.get(key)
            if bounds is None:
                raise InvalidCommandError(key, "is not a billing setting")
            if type(value) is not int or not bounds[0] <= value <= bounds[1]:
                raise InvalidCommandError(key, f"must be an integer from {bounds[0]} to {bounds[1]}")
        merged = {**self.values, **changes}
        if merged["hourly_token_limit"] > merged["daily_token_limit"]:
            raise StateConflictError("hourly_token_limit", "must not exceed daily_token_limit")
        changed = [key for key, value in changes.items() if self.values.get(key) != value]
        for key in changed:
            self.trigger_event(
                self.SettingChanged,
                timestamp=now,
                key=key,
                old_value=self.values.get(key),
                new_value=changes[key],
                changed_by=changed_by,
                actor_role=actor_role,
                request_id=request_id,
            )
        return changed

    def guard_sale(self, *, potential_tokens: int, package_tokens: int, now: datetime) -> bool:
        """The oversell guard. True if a package may be sold now.

        A sale is refused while the tokens that credits in circulation could buy, plus the package's own,
        would pass ``alert_threshold_percent`` of the upstream API's monthly limit. Pausing and resuming
        are events, so admins see when sales stopped and started again.
        """
        settings = self.settings
        # Exact in integers: (potential + package) / limit > threshold / 100.
        passes = (potential_tokens + package_tokens) * 100 > settings.alert_threshold_percent * (
            settings.api_monthly_limit_tokens
        )
        if passes and not self.sales_paused:
            self.trigger_event(
                self.SalesPaused,
                timestamp=now,
                potential_tokens=potential_tokens,
                package_tokens=package_tokens,
                api_monthly_limit_tokens=settings.api_monthly_limit_tokens,
                alert_threshold_percent=settings.alert_threshold_percent,
            )
        elif not passes and self.sales_paused:
            self.trigger_event(self.SalesResumed, timestamp=now, potential_tokens=potential_tokens)
        return not passes

    class SalesPaused(Aggregate.Event):
        """The admin alert: selling one more package would promise more tokens than the API allows."""

        TOPIC = "ledger.BillingConfig.SalesPaused"
        potential_tokens: int
        package_tokens: int
        api_monthly_limit_tokens: int
        alert_threshold_percent: int

        def apply(self, config: BillingConfig) -> None:
            config.sales_paused = True

    class SalesResumed(Aggregate.Event):
        TOPIC = "ledger.BillingConfig.SalesResumed"
        potential_tokens: int

        def apply(self, config: BillingConfig) -> None:
            config.sales_paused = False

    class SettingChanged(Aggregate.Event):
        TOPIC = "ledger.BillingConfig.SettingChanged"
        key: str
        old_value: int | None
        new_value: int
        changed_by: str
        # Who asked and in which request, for the audit trail; absent from events stored before it was.
        actor_role: str | None = None
        request_id: str | None = None

        def apply(self, config: BillingConfig) -> None:
            config.values[self.key] = self.new_value


class Package(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    credits: int
    price_amount_minor: int
    currency: str
    active: bool = True
    stripe_price_id: str | None = None


DEFAULT_PACKAGES: Final = (
    Package(id="starter", name="Starter", credits=100, price_amount_minor=3_000, currency="BRL"),
    Package(id="professional", name="Professional", credits=500, price_amount_minor=20_000, currency="BRL"),
    Package(id="enterprise", name="Enterprise", credits=2_000, price_amount_minor=70_000, currency="BRL"),
)

MAX_NAME_LENGTH: Final = 100
MAX_ID_LENGTH: Final = 64
MAX_STRIPE_ID_LENGTH: Final = 255
CURRENCY_CODE_LENGTH: Final = 3

PACKAGE_FIELDS: Final = ("name", "credits", "price_amount_minor", "currency", "active", "stripe_price_id")


def _check_package_field(field: str, value: Any) -> None:
    if field == "name":
        ok = isinstance(value, str) and 1 <= len(value) <= MAX_NAME_LENGTH
    elif field in {"credits", "price_amount_minor"}:
        ok = type(value) is int and 1 <= value <= MAX_AMOUNT // MILLICREDITS_PER_CREDIT
    elif field == "currency":
        ok = isinstance(value, str) and len(value) == CURRENCY_CODE_LENGTH and value.isalpha() and value.isupper()
    elif field == "active":
        ok = type(value) is bool
    elif field == "stripe_price_id":
        ok = value is None or (isinstance(value, str) and 1 <= len(value) <= MAX_STRIPE_ID_LENGTH)
    else:
        raise InvalidCommandError(field, "is not a package field")
    if not ok:
        raise InvalidCommandError(field, "has an invalid value")


class PackageCatalogue(Aggregate):
    TOPIC = "ledger.PackageCatalogue"

    class Opened(Aggregate.Created):
        TOPIC = "ledger.PackageCatalogue.Opened"

    class Created(Aggregate.Created):
        """Required by the library once a class has explicit topics; this aggregate never triggers it."""

        TOPIC = "ledger.PackageCatalogue.Created"

    packages: dict[str, dict[str, Any]]

    def __init__(self) -> None:
        self.packages = {}

    @classmethod
    def open(cls, now: datetime) -> PackageCatalogue:
        catalogue: PackageCatalogue = cls._create(cls.Opened, id=PACKAGE_CATALOGUE_ID, timestamp=now)
        return catalogue

    def get(self, package_id: str) -> Package:
        fields = self.packages.get(package_id)
        if fields is None:
            raise NotFoundError("package", package_id)
        return Package(id=package_id, **fields)

    def all_packages(self) -> list[Package]:
        return [Package(id=package_id, **fields) for package_id, fields in self.packages.items()]

    def add(
        self,
        package: Package,
        added_by: str,
        now: datetime,
        *,
        actor_role: str | None = None,
        request_id: str | None = None,
    ) -> None:
        if not (1 <= len(package.id) <= MAX_ID_LENGTH and package.id.replace("-", "").replace("_", "").isalnum()):
            raise InvalidCommandError("id", "must be 1 to 64 letters, digits, '-' or '_'")
        if package.id in self.packages:
            raise StateConflictError("id", "a package with this id exists")
        fields = {field: getattr(package, field) for field in PACKAGE_FIELDS}
        for field, value in fields.items():
            _check_package_field(field, value)
        self.trigger_event(
            self.PackageAdded,
            timestamp=now,
            package_id=package.id,
            fields=fields,
            added_by=added_by,
            actor_role=actor_role,
            request_id=request_id,
        )

    def change(
        self,
        package_id: str,
        changes: dict[str, Any],
        changed_by: str,
        now: datetime,
        *,
        actor_role: str | None = None,
        request_id: str | None = None,
    ) -> list[str]:
        current = self.get(package_id)
        for field, value in changes.items():
            _check_package_field(field, value)
        diff = {
            field: [getattr(current, field), value]
            for field, value in changes.items()
            if getattr(current, field) != value
        }
        if diff:
            self.trigger_event(
                self.PackageChanged,
                timestamp=now,
                package_id=package_id,
                changes=diff,
                changed_by=changed_by,
                actor_role=actor_role,
                request_id=request_id,
            )
        return list(diff)

    class PackageAdded(Aggregate.Event):
        TOPIC = "ledger.PackageCatalogue.PackageAdded"
        package_id: str
        fields: dict[str, Any]
        added_by: str
        actor_role: str | None = None
        request_id: str | None = None

        def apply(self, catalogue: PackageCatalogue) -> None:
            catalogue.packages[self.package_id] = dict(self.fields)

    class PackageChanged(Aggregate.Event):
        """``changes`` maps each changed field to ``[old, new]``."""

        TOPIC = "ledger.PackageCatalogue.PackageChanged"
        package_id: str
        changes: dict[str, list[Any]]
        changed_by: str
        actor_role: str | None = None
        request_id: str | None = None

        def apply(self, catalogue: PackageCatalogue) -> None:
            for field, (_old, new) in self.changes.items():
                catalogue.packages[self.package_id][field] = new
