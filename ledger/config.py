"""Billing configuration and the package catalogue, each an event-sourced aggregate.

Every change is an event that records who made it, when, and the old and new values, so the history
of a price or a quota is never lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import msgspec
from eventsourcing.domain import Aggregate

from ledger.amounts import MAX_AMOUNT, MILLICREDITS_PER_CREDIT
from ledger.checks import check_storable
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
    # Welcome credits are a promo lot that expires this many days after the grant (0: never).
    welcome_credits_ttl_days: int = 0
    # Notifications: a user is told once when their available balance falls below this, and again only
    # after it has risen to it; an hour's usage is unusual at this many times the user's hourly average
    # over the seven days before, and at least this many tokens.
    low_balance_threshold_millicredits: int = 200 * MILLICREDITS_PER_CREDIT
    unusual_consumption_factor: int = 5
    unusual_consumption_min_tokens: int = 100_000

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> BillingSettings:
        """The settings named among ``values`` (other keys, such as a view's ``sales_paused``, are left out);
        defaults for the rest, such as a setting added after the values were stored."""
        return cls(**{key: value for key, value in values.items() if key in cls.__struct_fields__})

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
    "welcome_credits_ttl_days": (0, 3_650),
    "low_balance_threshold_millicredits": (0, MAX_AMOUNT),
    "unusual_consumption_factor": (2, 1_000),
    "unusual_consumption_min_tokens": (1, MAX_AMOUNT),
}


class SalesJudgement(msgspec.Struct, frozen=True, kw_only=True):
    potential_tokens: int
    package_tokens: int
    api_monthly_limit_tokens: int
    alert_threshold_percent: int
    sales_paused: bool
    api_usage_reached: bool


def sale_allowed(settings: BillingSettings, *, potential_tokens: int, package_tokens: int) -> bool:
    """The oversell guard: False while the tokens that credits in circulation could buy, plus the package's
    own, would pass ``alert_threshold_percent`` of the upstream API's monthly limit."""
    # Exact in integers: (potential + package) / limit > threshold / 100.
    allowed = settings.alert_threshold_percent * settings.api_monthly_limit_tokens
    return (potential_tokens + package_tokens) * 100 <= allowed


def judge_sales(
    settings: BillingSettings, *, circulation_millicredits: int, smallest_package_credits: int
) -> SalesJudgement:
    """Where the system stands against the API limit: sales pause when the smallest package on sale would
    pass the oversell guard, and the API-usage alert is raised when the credits in circulation reach the
    threshold on their own (potential tokens at ``alert_threshold_percent`` of the monthly limit)."""
    potential = circulation_millicredits * settings.tokens_per_credit // MILLICREDITS_PER_CREDIT
    package_tokens = smallest_package_credits * settings.tokens_per_credit
    allowed = settings.alert_threshold_percent * settings.api_monthly_limit_tokens
    return SalesJudgement(
        potential_tokens=potential,
        package_tokens=package_tokens,
        api_monthly_limit_tokens=settings.api_monthly_limit_tokens,
        alert_threshold_percent=settings.alert_threshold_percent,
        sales_paused=not sale_allowed(settings, potential_tokens=potential, package_tokens=package_tokens),
        api_usage_reached=potential * 100 >= allowed,
    )


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
    # A class default, so snapshots taken before the alert existed load with it lowered.
    api_usage_alerted: bool = False

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

    def evaluate_sales(self, *, circulation_millicredits: int, smallest_package_credits: int, now: datetime) -> None:
        """Record the system's state against the API limit (see ``judge_sales``). Each change is one
        event; figures that change nothing record nothing."""
        judgement = judge_sales(
            self.settings,
            circulation_millicredits=circulation_millicredits,
            smallest_package_credits=smallest_package_credits,
        )
        figures = {
            "potential_tokens": judgement.potential_tokens,
            "package_tokens": judgement.package_tokens,
            "api_monthly_limit_tokens": judgement.api_monthly_limit_tokens,
            "alert_threshold_percent": judgement.alert_threshold_percent,
        }
        if judgement.sales_paused != self.sales_paused:
            event = self.SalesPaused if judgement.sales_paused else self.SalesResumed
            self.trigger_event(event, timestamp=now, **figures)
        if judgement.api_usage_reached != self.api_usage_alerted:
            del figures["package_tokens"]
            alert = self.ApiUsageReachedThreshold if judgement.api_usage_reached else self.ApiUsageBelowThreshold
            self.trigger_event(alert, timestamp=now, **figures)

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
        # The figures it was judged on; absent from events stored before they were recorded.
        package_tokens: int | None = None
        api_monthly_limit_tokens: int | None = None
        alert_threshold_percent: int | None = None

        def apply(self, config: BillingConfig) -> None:
            config.sales_paused = False

    class ApiUsageReachedThreshold(Aggregate.Event):
        """The admin alert: the tokens that credits in circulation could buy reached the alert threshold."""

        TOPIC = "ledger.BillingConfig.ApiUsageReachedThreshold"
        potential_tokens: int
        api_monthly_limit_tokens: int
        alert_threshold_percent: int

        def apply(self, config: BillingConfig) -> None:
            config.api_usage_alerted = True

    class ApiUsageBelowThreshold(Aggregate.Event):
        TOPIC = "ledger.BillingConfig.ApiUsageBelowThreshold"
        potential_tokens: int
        api_monthly_limit_tokens: int
        alert_threshold_percent: int

        def apply(self, config: BillingConfig) -> None:
            config.api_usage_alerted = False

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
    if isinstance(value, str):
        check_storable(field, value)


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
