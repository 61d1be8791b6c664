"""Stripe's ``expand[]``: replace an id with the object it names, along a dotted path such as
``payment_intent.latest_charge``, or ``data.product`` inside a list.

Some properties are not ids at all but "includable" lists that exist only when asked for: a Checkout Session's
``line_items`` and (since API version 2022-11-15) a charge's ``refunds``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from tests.stripe_fake import errors, objects
from tests.stripe_fake.samples import StripeObject
from tests.stripe_fake.store import Store


def _session_line_items(store: Store, session: StripeObject) -> StripeObject:
    items = store.checkout_extras[session["id"]].line_items
    return objects.list_object(copy.deepcopy(items), f"/v1/checkout/sessions/{session['id']}/line_items")


def _charge_refunds(store: Store, charge: StripeObject) -> StripeObject:
    refunds = [refund for refund in store.newest_first("refund") if refund["charge"] == charge["id"]]
    return objects.list_object(copy.deepcopy(refunds), f"/v1/charges/{charge['id']}/refunds")


_INCLUDABLE: dict[tuple[str, str], Callable[[Store, StripeObject], StripeObject]] = {
    ("checkout.session", "line_items"): _session_line_items,
    ("charge", "refunds"): _charge_refunds,
}


def expand(store: Store, obj: StripeObject, paths: list[str]) -> StripeObject:
    """Expand ``paths`` in ``obj`` in place; ``obj`` must be the caller's own copy."""
    for path in paths:
        _expand(store, obj, path.split("."), path)
    return obj


def _expand(store: Store, node: StripeObject, parts: list[str], path: str) -> None:
    head, rest = parts[0], parts[1:]
    if node.get("object") == "list" and head == "data":
        for item in node["data"]:
            if rest:
                _expand(store, item, rest, path)
        return
    includable = _INCLUDABLE.get((node.get("object", ""), head))
    if includable is not None:
        node[head] = includable(store, node)
    elif isinstance(node.get(head), str):
        target = store.find(node[head])
        if target is None:
            raise errors.invalid(f"The fake Stripe does not store {node[head]}, so it cannot expand {path}.")
        node[head] = copy.deepcopy(target)
    elif head not in node or not (node[head] is None or isinstance(node[head], dict)):
        raise errors.invalid(f"This property cannot be expanded ({path}).")
    child = node[head]
    if rest and isinstance(child, dict):
        _expand(store, child, rest, path)
