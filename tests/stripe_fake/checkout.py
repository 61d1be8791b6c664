"""Checkout Sessions in payment mode: ``/v1/checkout/sessions``, its ``/expire`` and ``/line_items``.

What happens after create (the customer paying by card or Pix) is not an API call; see lifecycle.py.
"""

from __future__ import annotations

import copy
import re

from tests.stripe_fake import errors, lifecycle, objects, payment_methods
from tests.stripe_fake.call import Call
from tests.stripe_fake.forms import Params
from tests.stripe_fake.ids import new_id, session_id
from tests.stripe_fake.listing import PAGINATION, paginate
from tests.stripe_fake.samples import StripeObject
from tests.stripe_fake.store import CheckoutExtras, Store

_CREATE_PARAMS = (
    "mode",
    "line_items",
    "currency",
    "client_reference_id",
    "customer_email",
    "metadata",
    "success_url",
    "cancel_url",
    "expires_at",
    "locale",
    "payment_intent_data",
    "payment_method_options",
    "excluded_payment_method_types",
    "payment_method_configuration",
)
_URL = re.compile(r"^https?://\S+$")
_MIN_LIFETIME = 30 * 60
_MAX_LIFETIME = 24 * 3600
_PIX_DEFAULT_EXPIRY = 14400
_PIX_MIN_EXPIRY = 60
_PIX_MAX_EXPIRY = 1209600
_MAX_QUANTITY = 999999
_MAX_REFERENCE_LENGTH = 200


def create_session(store: Store, call: Call) -> StripeObject:
    params = call.params
    params.only(*_CREATE_PARAMS, *_method_params(call))
    mode = params.text("mode", required=True)
    if mode not in {"payment", "setup", "subscription"}:
        raise errors.invalid("Invalid mode: must be one of payment, setup, or subscription", param="mode")
    if mode != "payment":
        raise errors.invalid("The fake Stripe implements only mode=payment.", param="mode")
    line_items = [_line_item(store, item) for item in _require_line_items(params)]
    currency = _currency(params, line_items)
    methods = payment_methods.choose(params, currency, store.enabled_payment_methods)
    options, pix_expiry = _payment_method_options(params)
    intent_metadata, intent_description = _payment_intent_data(params)
    now = store.now()
    new_id_ = session_id()
    subtotal = sum(item["amount_subtotal"] for item in line_items)
    session = objects.checkout_session(
        {
            "id": new_id_,
            "amount_subtotal": subtotal,
            "amount_total": subtotal,
            "cancel_url": _url(params, "cancel_url"),
            "client_reference_id": _client_reference_id(params),
            "created": now,
            "currency": currency,
            "customer_email": params.text("customer_email"),
            "expires_at": _expires_at(params, now),
            "locale": params.text("locale"),
            "metadata": params.metadata() or {},
            "mode": mode,
            "payment_method_options": options,
            "payment_method_types": methods,
            "success_url": _url(params, "success_url"),
            "url": f"https://checkout.stripe.com/c/pay/{new_id_}",
        }
    )
    store.checkout_extras[new_id_] = CheckoutExtras(line_items, intent_metadata, intent_description, pix_expiry)
    return store.add(session)


def _method_params(call: Call) -> tuple[str, ...]:
    # Which way of choosing payment methods exists depends on the API version the client pinned.
    names: tuple[str, ...] = ()
    if call.version_at_least(payment_methods.ALLOWED_TYPES_ADDED):
        names += ("allowed_payment_method_types",)
    if not call.version_at_least(payment_methods.STATIC_TYPES_REMOVED):
        names += ("payment_method_types",)
    return names


def _require_line_items(params: Params) -> list[Params]:
    items = params.children("line_items")
    if not items:
        raise errors.invalid("`line_items` is required in `payment` mode.", param="line_items")
    return items


def _line_item(store: Store, item: Params) -> StripeObject:
    item.only("price", "price_data", "quantity")
    quantity = item.integer("quantity", required=True, minimum=1, maximum=_MAX_QUANTITY) or 1
    price_data = item.child("price_data")
    if price_data is not None:
        if item.has("price"):
            raise errors.invalid(
                "You may only specify one of these parameters: price, price_data.", param=item.name("price")
            )
        price = _inline_price(store, price_data)
    else:
        param = item.name("price")
        price = store.get("price", item.text("price", required=True) or "", param=param, status=400)
        if not price["active"]:
            raise errors.invalid("The price specified is inactive. This field only accepts active prices.", param=param)
        if price["type"] == "recurring":
            raise errors.invalid(
                "You specified `payment` mode but passed a recurring price. Either switch to `subscription` mode "
                "or use only one-time prices.",
                param=param,
            )
    product = store.get("product", price["product"])
    return objects.line_item(copy.deepcopy(price), quantity, product["name"])


def _inline_price(store: Store, data: Params) -> StripeObject:
    # Stripe turns price_data into an inactive price, so it never shows up as a catalogue price.
    data.only("currency", "unit_amount", "product", "product_data")
    product_data = data.child("product_data")
    if product_data is not None:
        product_data.only("name", "description", "metadata")
        product = store.add(
            objects.product(
                {
                    "id": new_id("prod_", 14),
                    "name": product_data.text("name", required=True),
                    "description": product_data.text("description"),
                    "metadata": product_data.metadata() or {},
                    "created": store.now(),
                    "updated": store.now(),
                }
            )
        )
    else:
        product = store.get(
            "product", data.text("product", required=True) or "", param=data.name("product"), status=400
        )
    return store.add(
        objects.price(
            {
                "id": new_id("price_"),
                "active": False,
                "created": store.now(),
                "currency": (data.text("currency", required=True) or "").lower(),
                "product": product["id"],
                "unit_amount": data.integer("unit_amount", required=True, minimum=0),
            }
        )
    )


def _currency(params: Params, line_items: list[StripeObject]) -> str:
    currencies: set[str] = {item["currency"] for item in line_items}
    if len(currencies) > 1:
        raise errors.invalid("All line items must use the same currency.", param="line_items")
    (currency,) = currencies
    requested = params.text("currency")
    if requested is not None and requested.lower() != currency:
        raise errors.invalid(
            f"The currency `{requested}` does not match the currency of the line items (`{currency}`).",
            param="currency",
        )
    return currency


def _payment_method_options(params: Params) -> tuple[StripeObject, int]:
    options = params.child("payment_method_options")
    if options is None:
        return {}, _PIX_DEFAULT_EXPIRY
    options.only("card", "pix")
    result: StripeObject = {}
    card = options.child("card")
    if card is not None:
        # Card options are passed through as sent; nothing in the fake depends on them.
        result["card"] = dict(card.data)
    pix_expiry = _PIX_DEFAULT_EXPIRY
    pix = options.child("pix")
    if pix is not None:
        pix.only("expires_after_seconds", "amount_includes_iof")
        expiry = pix.integer("expires_after_seconds", minimum=_PIX_MIN_EXPIRY, maximum=_PIX_MAX_EXPIRY)
        pix_expiry = _PIX_DEFAULT_EXPIRY if expiry is None else expiry
        result["pix"] = {
            "amount_includes_iof": pix.text("amount_includes_iof") or "never",
            "expires_after_seconds": expiry,
        }
    return result, pix_expiry


def _payment_intent_data(params: Params) -> tuple[dict[str, str], str | None]:
    # Stripe copies these to the PaymentIntent it creates later; the session's own metadata is not copied.
    data = params.child("payment_intent_data")
    if data is None:
        return {}, None
    data.only("metadata", "description", "receipt_email", "statement_descriptor", "statement_descriptor_suffix")
    return data.metadata() or {}, data.text("description")


def _url(params: Params, key: str) -> str | None:
    url = params.text(key)
    if url is not None and not _URL.match(url):
        raise errors.invalid("Not a valid URL", param=key, code="url_invalid")
    return url


def _client_reference_id(params: Params) -> str | None:
    reference = params.text("client_reference_id")
    if reference is not None and len(reference) > _MAX_REFERENCE_LENGTH:
        raise errors.invalid(
            f"client_reference_id can have up to {_MAX_REFERENCE_LENGTH} characters.", param="client_reference_id"
        )
    return reference


def _expires_at(params: Params, now: int) -> int:
    expires_at = params.integer("expires_at")
    if expires_at is None:
        return now + _MAX_LIFETIME
    if expires_at < now + _MIN_LIFETIME:
        raise errors.invalid(
            "The `expires_at` timestamp must be at least 30 minutes from Checkout Session creation.", param="expires_at"
        )
    if expires_at > now + _MAX_LIFETIME:
        raise errors.invalid(
            "The `expires_at` timestamp must be less than 24 hours from Checkout Session creation.", param="expires_at"
        )
    return expires_at


def retrieve_session(store: Store, call: Call) -> StripeObject:
    call.params.only()
    return store.get("checkout.session", call.path_id)


def update_session(store: Store, call: Call) -> StripeObject:
    call.params.only("metadata")
    session = store.get("checkout.session", call.path_id)
    metadata = call.params.metadata(session["metadata"])
    if metadata is not None:
        session["metadata"] = metadata
    return session


def expire_session(store: Store, call: Call) -> StripeObject:
    call.params.only()
    lifecycle.expire(store, call.path_id, call.context)
    return store.get("checkout.session", call.path_id)


def list_sessions(store: Store, call: Call) -> StripeObject:
    params = call.params
    params.only("payment_intent", "status", *PAGINATION)
    intent = params.text("payment_intent")
    status = params.text("status")
    items = [
        session
        for session in store.newest_first("checkout.session")
        if (intent is None or session["payment_intent"] == intent) and (status is None or session["status"] == status)
    ]
    return paginate(items, params, "/v1/checkout/sessions", "checkout.session")


def list_line_items(store: Store, call: Call) -> StripeObject:
    call.params.only(*PAGINATION)
    store.get("checkout.session", call.path_id)
    items = store.checkout_extras[call.path_id].line_items
    return paginate(items, call.params, f"/v1/checkout/sessions/{call.path_id}/line_items", "item")
