"""``ledger stripe sync-products``: one Stripe product and price per package, found again by a stable id.

A product's id is ``credits_<package>`` and its price's lookup key ``credits_<package>_<currency>``, so a
second run finds what the first made and creates nothing. Stripe prices cannot change their amount:
a new amount is a new price that takes the lookup key over, and the old price is deactivated. The
price ids are stored in the catalogue, which the purchase endpoint uses.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import stripe

from ledger.application import Ledger
from ledger.commands import ChangePackage
from ledger.config import Package


def sync_products(client: Any, ledger: Ledger, *, dry_run: bool, now: datetime) -> list[str]:
    """Bring Stripe in line with the catalogue. Returns one line for each thing done (or that would be)."""
    done: list[str] = []
    would = "would " if dry_run else ""
    for package in ledger.list_packages():
        product_id = f"credits_{package.id}"
        done.append(_product(client, package, product_id, dry_run=dry_run, would=would))
        price_id, line = _price(client, package, product_id, dry_run=dry_run)
        done.append(line)
        if price_id is not None and price_id != package.stripe_price_id:
            if not dry_run:
                ledger.change_package(
                    ChangePackage(
                        package_id=package.id, changes={"stripe_price_id": price_id}, changed_by="stripe-sync"
                    ),
                    now=now,
                )
            done.append(f"{would}store price {price_id} in package {package.id}")
    return done


def _product(client: Any, package: Package, product_id: str, *, dry_run: bool, would: str) -> str:
    fields = {"name": f"{package.name} ({package.credits} credits)", "active": package.active}
    try:
        product = client.v1.products.retrieve(product_id)
    except stripe.InvalidRequestError as error:
        if error.code != "resource_missing":
            raise
        if not dry_run:
            client.v1.products.create(
                {"id": product_id, **fields, "metadata": {"package_id": package.id}},
                {"idempotency_key": f"sync-product:{product_id}"},
            )
        return f"{would}create product {product_id}"
    if product.name == fields["name"] and product.active == fields["active"]:
        return f"product {product_id} is up to date"
    if not dry_run:
        client.v1.products.update(product_id, fields)
    return f"{would}update product {product_id}"


def _price(client: Any, package: Package, product_id: str, *, dry_run: bool) -> tuple[str | None, str]:
    currency = package.currency.lower()
    lookup_key = f"credits_{package.id}_{currency}"
    found = client.v1.prices.list({"lookup_keys": [lookup_key], "active": True, "limit": 1}).data
    current = found[0] if found else None
    if current is not None and current.unit_amount == package.price_amount_minor and current.currency == currency:
        return current.id, f"price {current.id} ({lookup_key}) is up to date"
    if dry_run:
        return None, f"would create price {lookup_key} for {package.price_amount_minor} {currency}"
    price = client.v1.prices.create(
        {
            "product": product_id,
            "currency": currency,
            "unit_amount": package.price_amount_minor,
            "lookup_key": lookup_key,
            "transfer_lookup_key": True,
            "metadata": {"package_id": package.id, "credits": str(package.credits)},
        },
        {"idempotency_key": f"sync-price:{lookup_key}:{package.price_amount_minor}"},
    )
    if current is not None:
        client.v1.prices.update(current.id, {"active": False})
    return price.id, f"create price {price.id} ({lookup_key}) for {package.price_amount_minor} {currency}"
