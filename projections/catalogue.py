"""The catalogue projection: billing settings and credit packages as readable tables."""

from __future__ import annotations

from typing import Any

import psycopg

from ledger.config import BillingConfig, PackageCatalogue
from projections.accounts import ProjectionError


class CatalogueProjection:
    name = "catalogue"
    tables: tuple[str, ...] = ("billing_config", "credit_packages")
    topic_prefix: str | tuple[str, ...] = ("ledger.BillingConfig.", "ledger.PackageCatalogue.")

    def apply(self, conn: psycopg.Connection[Any], events: list[tuple[int, Any]]) -> None:
        for position, event in events:
            at = event.timestamp
            if isinstance(event, BillingConfig.Seeded):
                conn.cursor().executemany(
                    "INSERT INTO billing_config (key, value, updated_by, updated_at) VALUES (%s, %s, 'seed', %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_by = 'seed',"
                    " updated_at = EXCLUDED.updated_at",
                    [(key, value, at) for key, value in event.values.items()],
                )
            elif isinstance(event, BillingConfig.SettingChanged):
                conn.execute(
                    "INSERT INTO billing_config (key, value, updated_by, updated_at) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_by = EXCLUDED.updated_by,"
                    " updated_at = EXCLUDED.updated_at",
                    (event.key, event.new_value, event.changed_by, at),
                )
            elif isinstance(event, BillingConfig.SalesPaused | BillingConfig.SalesResumed):
                conn.execute(
                    "INSERT INTO billing_config (key, value, updated_by, updated_at) VALUES ('sales_paused', %s,"
                    " 'oversell-guard', %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value,"
                    " updated_by = EXCLUDED.updated_by, updated_at = EXCLUDED.updated_at",
                    (int(isinstance(event, BillingConfig.SalesPaused)), at),
                )
            elif isinstance(event, PackageCatalogue.PackageAdded):
                f = event.fields
                conn.execute(
                    "INSERT INTO credit_packages (id, name, credits, price_amount_minor, currency, active,"
                    " stripe_price_id, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        event.package_id,
                        f["name"],
                        f["credits"],
                        f["price_amount_minor"],
                        f["currency"],
                        f["active"],
                        f["stripe_price_id"],
                        at,
                    ),
                )
            elif isinstance(event, PackageCatalogue.PackageChanged):
                for column, (_old, new) in event.changes.items():
                    if column not in {
                        "name",
                        "credits",
                        "price_amount_minor",
                        "currency",
                        "active",
                        "stripe_price_id",
                    }:
                        raise ProjectionError(f"unknown package field {column} at position {position}")
                    updated = conn.execute(
                        f"UPDATE credit_packages SET {column} = %s, updated_at = %s WHERE id = %s",  # noqa: S608 - column checked above.
                        (new, at, event.package_id),
                    ).rowcount
                    if updated != 1:
                        raise ProjectionError(f"package {event.package_id} changed but never added")
