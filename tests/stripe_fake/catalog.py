"""Products and prices: ``/v1/products`` and ``/v1/prices``, with Stripe's lookup-key rules.

A price's amount and currency are immutable, so a price change is a new price that takes over the old one's
``lookup_key`` with ``transfer_lookup_key=true``; without it, reusing a lookup key is a 400.
"""

from __future__ import annotations

import re

from tests.stripe_fake import errors, objects
from tests.stripe_fake.call import Call
from tests.stripe_fake.forms import Params
from tests.stripe_fake.ids import new_id
from tests.stripe_fake.listing import PAGINATION, paginate
from tests.stripe_fake.samples import StripeObject
from tests.stripe_fake.store import Store

_PRODUCT_TEXT_FIELDS = ("description", "statement_descriptor", "tax_code", "unit_label", "url")
_CURRENCY = re.compile(r"^[a-z]{3}$")
_INTERVALS = ("day", "week", "month", "year")
_TAX_BEHAVIORS = ("exclusive", "inclusive", "unspecified")
_MAX_LOOKUP_KEYS = 10
_MAX_LOOKUP_KEY_LENGTH = 200


def create_product(store: Store, call: Call) -> StripeObject:
    params = call.params
    params.only("id", "name", "active", "images", "metadata", "shippable", *_PRODUCT_TEXT_FIELDS)
    return _new_product(store, params)


def _new_product(store: Store, params: Params) -> StripeObject:
    name = params.text("name", required=True)
    product_id = params.text("id") or new_id("prod_", 14)
    if product_id in store.objects.get("product", {}):
        raise errors.invalid("Product already exists.", param=params.name("id"), code="resource_already_exists")
    now = store.now()
    fields = {field: params.text(field) or None for field in _PRODUCT_TEXT_FIELDS}
    return store.add(
        objects.product(
            {
                **fields,
                "id": product_id,
                "name": name,
                "active": params.boolean("active") is not False,
                "images": params.strings("images") or [],
                "metadata": params.metadata() or {},
                "shippable": params.boolean("shippable"),
                "created": now,
                "updated": now,
            }
        )
    )


def retrieve_product(store: Store, call: Call) -> StripeObject:
    call.params.only()
    return store.get("product", call.path_id)


def update_product(store: Store, call: Call) -> StripeObject:
    params = call.params
    params.only("name", "active", "default_price", "images", "metadata", "shippable", *_PRODUCT_TEXT_FIELDS)
    product = store.get("product", call.path_id)
    changes: StripeObject = {}
    if params.has("name"):
        changes["name"] = params.text("name", required=True)
    for field in _PRODUCT_TEXT_FIELDS:
        if params.has(field):
            # An empty string unsets a nullable field in Stripe's form encoding.
            changes[field] = params.text(field) or None
    if params.has("active"):
        changes["active"] = params.boolean("active")
    if params.has("shippable"):
        changes["shippable"] = params.boolean("shippable")
    if params.has("images"):
        changes["images"] = params.strings("images") or []
    if params.has("metadata"):
        changes["metadata"] = params.metadata(product["metadata"])
    if params.has("default_price"):
        changes["default_price"] = _default_price(store, params, product["id"])
    product.update(changes, updated=store.now())
    return product


def _default_price(store: Store, params: Params, product_id: str) -> str | None:
    price_id = params.text("default_price")
    if not price_id:
        return None
    price = store.get("price", price_id, param="default_price", status=400)
    if price["product"] != product_id:
        raise errors.invalid("The default price must belong to this product.", param="default_price")
    return price_id


def list_products(store: Store, call: Call) -> StripeObject:
    params = call.params
    params.only("active", "ids", "shippable", *PAGINATION)
    active = params.boolean("active")
    ids = params.strings("ids")
    items = [
        product
        for product in store.newest_first("product")
        if (active is None or product["active"] == active) and (ids is None or product["id"] in ids)
    ]
    return paginate(items, params, "/v1/products", "product")


def create_price(store: Store, call: Call) -> StripeObject:
    params = call.params
    params.only(
        "product",
        "product_data",
        "currency",
        "unit_amount",
        "active",
        "lookup_key",
        "transfer_lookup_key",
        "metadata",
        "nickname",
        "recurring",
        "tax_behavior",
    )
    currency = _currency(params)
    unit_amount = params.integer("unit_amount", required=True, minimum=0)
    recurring = _recurring(params)
    tax_behavior = _tax_behavior(params) or "unspecified"
    lookup_key = _lookup_key(store, params)
    product_id = _price_product(store, params)
    _take_lookup_key(store, lookup_key)
    return store.add(
        objects.price(
            {
                "id": new_id("price_"),
                "active": params.boolean("active") is not False,
                "created": store.now(),
                "currency": currency,
                "lookup_key": lookup_key,
                "metadata": params.metadata() or {},
                "nickname": params.text("nickname"),
                "product": product_id,
                "recurring": recurring,
                "tax_behavior": tax_behavior,
                "type": "one_time" if recurring is None else "recurring",
                "unit_amount": unit_amount,
            }
        )
    )


def _currency(params: Params) -> str:
    currency = (params.text("currency", required=True) or "").lower()
    if not _CURRENCY.match(currency):
        raise errors.invalid(f"Invalid currency: {currency}.", param=params.name("currency"))
    return currency


def _recurring(params: Params) -> StripeObject | None:
    recurring = params.child("recurring")
    if recurring is None:
        return None
    recurring.only("interval", "interval_count")
    interval = recurring.text("interval", required=True)
    if interval not in _INTERVALS:
        raise errors.invalid(
            f"Invalid recurring[interval]: must be one of {', '.join(_INTERVALS)}", param=recurring.name("interval")
        )
    return {
        "interval": interval,
        "interval_count": recurring.integer("interval_count", minimum=1) or 1,
        "meter": None,
        "trial_period_days": None,
        "usage_type": "licensed",
    }


def _tax_behavior(params: Params) -> str | None:
    tax_behavior = params.text("tax_behavior")
    if tax_behavior is not None and tax_behavior not in _TAX_BEHAVIORS:
        raise errors.invalid(
            f"Invalid tax_behavior: must be one of {', '.join(_TAX_BEHAVIORS)}", param=params.name("tax_behavior")
        )
    return tax_behavior


def _price_product(store: Store, params: Params) -> str:
    product_data = params.child("product_data")
    if params.has("product") and product_data is not None:
        raise errors.invalid("You may only specify one of these parameters: product, product_data.", param="product")
    if product_data is not None:
        product_data.only("name", "active", "metadata", "statement_descriptor", "tax_code", "unit_label")
        product_id: str = _new_product(store, product_data)["id"]
        return product_id
    product_id = params.text("product", required=True) or ""
    store.get("product", product_id, param="product", status=400)
    return product_id


def _lookup_key(store: Store, params: Params) -> str | None:
    """Validate the requested lookup key; reusing one is allowed only with ``transfer_lookup_key=true``."""
    lookup_key = params.text("lookup_key") or None
    if lookup_key is None:
        return None
    if len(lookup_key) > _MAX_LOOKUP_KEY_LENGTH:
        raise errors.invalid(
            f"Lookup keys can have up to {_MAX_LOOKUP_KEY_LENGTH} characters.", param=params.name("lookup_key")
        )
    holder = _price_with_lookup_key(store, lookup_key)
    if holder is not None and not params.boolean("transfer_lookup_key"):
        raise errors.invalid(
            f"A price (`{holder['id']}`) already uses that lookup key.", param=params.name("lookup_key")
        )
    return lookup_key


def _take_lookup_key(store: Store, lookup_key: str | None) -> None:
    # Only called once the request is known to succeed, so a failed create never steals the key.
    holder = None if lookup_key is None else _price_with_lookup_key(store, lookup_key)
    if holder is not None:
        holder["lookup_key"] = None


def _price_with_lookup_key(store: Store, lookup_key: str) -> StripeObject | None:
    return next((price for price in store.newest_first("price") if price["lookup_key"] == lookup_key), None)


def retrieve_price(store: Store, call: Call) -> StripeObject:
    call.params.only()
    return store.get("price", call.path_id)


def update_price(store: Store, call: Call) -> StripeObject:
    params = call.params
    params.only("active", "lookup_key", "transfer_lookup_key", "metadata", "nickname", "tax_behavior")
    price = store.get("price", call.path_id)
    changes: StripeObject = {}
    if params.has("active"):
        changes["active"] = params.boolean("active")
    if params.has("nickname"):
        changes["nickname"] = params.text("nickname") or None
    if params.has("tax_behavior"):
        changes["tax_behavior"] = _tax_behavior(params)
    if params.has("metadata"):
        changes["metadata"] = params.metadata(price["metadata"])
    if params.has("lookup_key"):
        lookup_key = params.text("lookup_key") or None
        if lookup_key != price["lookup_key"]:
            lookup_key = _lookup_key(store, params)
            _take_lookup_key(store, lookup_key)
        changes["lookup_key"] = lookup_key
    price.update(changes)
    return price


def list_prices(store: Store, call: Call) -> StripeObject:
    params = call.params
    params.only("active", "currency", "lookup_keys", "product", "type", *PAGINATION)
    active = params.boolean("active")
    currency = params.text("currency")
    product = params.text("product")
    price_type = params.text("type")
    lookup_keys = params.strings("lookup_keys")
    if lookup_keys is not None and len(lookup_keys) > _MAX_LOOKUP_KEYS:
        raise errors.invalid(f"Array lookup_keys exceeded maximum {_MAX_LOOKUP_KEYS} values.", param="lookup_keys")
    items = [
        price
        for price in store.newest_first("price")
        if (active is None or price["active"] == active)
        and (currency is None or price["currency"] == currency)
        and (product is None or price["product"] == product)
        and (price_type is None or price["type"] == price_type)
        and (lookup_keys is None or price["lookup_key"] in lookup_keys)
    ]
    return paginate(items, params, "/v1/prices", "price")
