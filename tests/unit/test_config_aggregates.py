"""Billing configuration and package catalogue as specifications: given, when, then events or an error.

``given_config`` / ``given_catalogue`` build the aggregate and clear its pending events; each test calls one
public command and asserts on the new events (``collect_events``) or on the refusal, with no event left.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from ledger.config import DEFAULT_PACKAGES, BillingConfig, BillingSettings, Package, PackageCatalogue
from ledger.errors import InvalidCommandError, NotFoundError, StateConflictError
from ledger.ids import BILLING_CONFIG_ID, PACKAGE_CATALOGUE_ID

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
STARTER = DEFAULT_PACKAGES[0]


def given_config(*changes: dict[str, int]) -> BillingConfig:
    config = BillingConfig.seed(BillingSettings(), T0)
    for change in changes:
        config.change(change, "admin", T0)
    config.collect_events()
    return config


def given_catalogue(*packages: Package) -> PackageCatalogue:
    catalogue = PackageCatalogue.open(T0)
    for package in packages:
        catalogue.add(package, "admin", T0)
    catalogue.collect_events()
    return catalogue


def refused(aggregate: Any, command: Any, *args: Any, error: type[Exception] = InvalidCommandError) -> Any:
    with pytest.raises(error) as caught:
        command(*args)
    assert aggregate.collect_events() == []
    return caught.value


def replay(events: list[Any]) -> Any:
    aggregate = None
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


class TestBillingConfig:
    def test_seed_records_the_default_settings(self):
        config = BillingConfig.seed(BillingSettings(), T0)
        [event] = config.collect_events()
        assert type(event) is BillingConfig.Seeded
        assert event.values == msgspec.structs.asdict(BillingSettings())
        assert (config.id, config.settings) == (BILLING_CONFIG_ID, BillingSettings())
        settings = config.settings
        assert (settings.hourly_token_limit, settings.daily_token_limit) == (500_000, 2_000_000)
        assert (settings.min_balance_for_analysis_millicredits, settings.tokens_per_credit) == (
            100_000,
            1_000,
        )

    def test_change_records_the_old_and_new_value_and_who_changed_it(self):
        config = given_config()
        changed = config.change({"alert_threshold_percent": 90, "tokens_per_credit": 500}, "ana", T1)
        assert changed == ["alert_threshold_percent", "tokens_per_credit"]
        events = config.collect_events()
        assert [type(e) for e in events] == [BillingConfig.SettingChanged] * 2
        assert [(e.key, e.old_value, e.new_value, e.changed_by) for e in events] == [
            ("alert_threshold_percent", 80, 90, "ana"),
            ("tokens_per_credit", 1_000, 500, "ana"),
        ]
        assert events[0].timestamp == T1
        assert (config.settings.alert_threshold_percent, config.settings.tokens_per_credit) == (90, 500)

    def test_change_rejects_an_unknown_setting(self):
        config = given_config()
        assert refused(config, config.change, {"monthly_price": 10}, "ana", T1).field == "monthly_price"

    @pytest.mark.parametrize(
        ("key", "value"),
        [
            ("alert_threshold_percent", 101),
            ("alert_threshold_percent", 0),
            ("tokens_per_credit", 0),
            ("tokens_per_credit", 1_000_000_001),
            ("hourly_token_limit", 0),
            ("daily_token_limit", 2**53),
            ("min_balance_for_analysis_millicredits", -1),
            ("welcome_credits", -1),
        ],
    )
    def test_change_rejects_a_value_out_of_range(self, key, value):
        config = given_config()
        assert refused(config, config.change, {key: value}, "ana", T1).field == key

    @pytest.mark.parametrize("value", [True, False, 90.0, "90", None])
    def test_change_rejects_a_value_that_is_not_an_integer(self, value):
        config = given_config()
        error = refused(config, config.change, {"alert_threshold_percent": value}, "ana", T1)
        assert error.field == "alert_threshold_percent"

    @pytest.mark.parametrize("change", [{"hourly_token_limit": 2_000_001}, {"daily_token_limit": 499_999}])
    def test_change_rejects_an_hourly_limit_above_the_daily_limit(self, change):
        config = given_config()
        # Each value is valid alone; together with the stored limits they conflict.
        assert refused(config, config.change, change, "ana", T1, error=StateConflictError).field == "hourly_token_limit"
        assert config.settings == BillingSettings()

    def test_change_may_raise_both_limits_together(self):
        config = given_config()
        changes = {"hourly_token_limit": 3_000_000, "daily_token_limit": 4_000_000}
        assert config.change(changes, "ana", T1) == ["hourly_token_limit", "daily_token_limit"]
        assert [e.new_value for e in config.collect_events()] == [3_000_000, 4_000_000]

    def test_one_bad_value_rejects_the_whole_change(self):
        config = given_config()
        refused(config, config.change, {"alert_threshold_percent": 90, "tokens_per_credit": 0}, "ana", T1)
        assert config.settings.alert_threshold_percent == 80

    def test_an_unchanged_value_records_nothing(self):
        config = given_config({"alert_threshold_percent": 90})
        assert config.change({"alert_threshold_percent": 90}, "ana", T1) == []
        assert config.collect_events() == []

    def test_replaying_the_config_history_rebuilds_the_same_settings(self):
        config = BillingConfig.seed(BillingSettings(), T0)
        config.change({"alert_threshold_percent": 90}, "ana", T1)
        config.change({"hourly_token_limit": 1_000, "welcome_credits": 5}, "bia", T1)
        replayed = replay(config.collect_events())
        assert replayed == config
        assert replayed.settings == msgspec.structs.replace(
            BillingSettings(), alert_threshold_percent=90, hourly_token_limit=1_000, welcome_credits=5
        )
        assert replayed.settings.welcome_millicredits == 5_000


class TestPackageCatalogue:
    def test_open_records_an_empty_catalogue(self):
        catalogue = PackageCatalogue.open(T0)
        assert [type(e) for e in catalogue.collect_events()] == [PackageCatalogue.Opened]
        assert (catalogue.id, catalogue.all_packages()) == (PACKAGE_CATALOGUE_ID, [])

    def test_add_records_each_default_package(self):
        catalogue = given_catalogue()
        for package in DEFAULT_PACKAGES:
            catalogue.add(package, "admin", T1)
        events = catalogue.collect_events()
        assert [type(e) for e in events] == [PackageCatalogue.PackageAdded] * 3
        assert [e.package_id for e in events] == ["starter", "professional", "enterprise"]
        assert events[0].fields == {
            "name": "Starter",
            "credits": 100,
            "price_amount_minor": 3_000,
            "currency": "BRL",
            "active": True,
            "stripe_price_id": None,
        }
        assert catalogue.all_packages() == list(DEFAULT_PACKAGES)
        assert catalogue.get("professional") == DEFAULT_PACKAGES[1]

    def test_add_rejects_a_package_id_already_used(self):
        catalogue = given_catalogue(STARTER)
        duplicate = msgspec.structs.replace(STARTER, name="Another starter")
        assert refused(catalogue, catalogue.add, duplicate, "admin", T1, error=StateConflictError).field == "id"

    @pytest.mark.parametrize("package_id", ["", "has space", "x" * 65, "-_"])
    def test_add_rejects_a_malformed_package_id(self, package_id):
        catalogue = given_catalogue()
        package = msgspec.structs.replace(STARTER, id=package_id)
        assert refused(catalogue, catalogue.add, package, "admin", T1).field == "id"

    @pytest.mark.parametrize(
        ("field", "value"),
        [("currency", "brl"), ("currency", "R$"), ("currency", "BRLX"), ("credits", 0), ("name", "")],
    )
    def test_add_rejects_a_package_with_an_invalid_field(self, field, value):
        catalogue = given_catalogue()
        package = msgspec.structs.replace(STARTER, **{field: value})
        assert refused(catalogue, catalogue.add, package, "admin", T1).field == field

    def test_change_records_old_and_new_values_of_the_changed_fields_only(self):
        catalogue = given_catalogue(STARTER)
        changes = {"name": "Starter", "price_amount_minor": 3_500, "active": False}
        assert catalogue.change("starter", changes, "ana", T1) == ["price_amount_minor", "active"]
        [event] = catalogue.collect_events()
        assert type(event) is PackageCatalogue.PackageChanged
        assert (event.package_id, event.changed_by) == ("starter", "ana")
        assert event.changes == {"price_amount_minor": [3_000, 3_500], "active": [True, False]}
        assert catalogue.get("starter") == msgspec.structs.replace(STARTER, price_amount_minor=3_500, active=False)

    def test_a_change_to_the_same_values_records_nothing(self):
        catalogue = given_catalogue(STARTER)
        assert catalogue.change("starter", {"name": "Starter", "currency": "BRL"}, "ana", T1) == []
        assert catalogue.collect_events() == []

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("currency", "brl"),
            ("currency", "R$"),
            ("credits", 0),
            ("credits", True),
            ("price_amount_minor", 2**53),
            ("active", 1),
            ("name", "x" * 101),
            ("stripe_price_id", ""),
            ("id", "other"),
        ],
    )
    def test_change_rejects_an_invalid_field_value(self, field, value):
        catalogue = given_catalogue(STARTER)
        assert refused(catalogue, catalogue.change, "starter", {field: value}, "ana", T1).field == field
        assert catalogue.get("starter") == STARTER

    def test_get_of_an_unknown_package_is_not_found(self):
        with pytest.raises(NotFoundError) as caught:
            given_catalogue(*DEFAULT_PACKAGES).get("platinum")
        assert (caught.value.what, caught.value.identifier) == ("package", "platinum")

    def test_change_of_an_unknown_package_is_not_found(self):
        catalogue = given_catalogue(STARTER)
        with pytest.raises(NotFoundError):
            catalogue.change("platinum", {"credits": 5}, "ana", T1)
        assert catalogue.collect_events() == []

    def test_replaying_the_catalogue_history_rebuilds_the_same_packages(self):
        catalogue = PackageCatalogue.open(T0)
        for package in DEFAULT_PACKAGES:
            catalogue.add(package, "admin", T0)
        catalogue.change("enterprise", {"credits": 2_500, "stripe_price_id": "price_1"}, "ana", T1)
        replayed = replay(catalogue.collect_events())
        assert replayed == catalogue
        assert replayed.get("enterprise").credits == 2_500
        assert replayed.all_packages() == catalogue.all_packages()
