"""Which payment methods a Checkout Session offers, under the rules of the API version in use.

From ``2026-09-30.endive`` (stripe-python 16 pins ``2026-10-28.endive``) Checkout no longer takes the static
``payment_method_types`` list; ``allowed_payment_method_types`` (since ``2026-07-29.dahlia``) instead filters the
methods Stripe finds eligible, silently dropping any that are not enabled on the account ("in the Dashboard") or do
not fit the currency, such as Pix on anything but BRL. The computed list comes back in ``payment_method_types``.
"""

from __future__ import annotations

from collections.abc import Sequence

from tests.stripe_fake import errors
from tests.stripe_fake.forms import Params

# The first API version without ``payment_method_types`` on Checkout Session create.
STATIC_TYPES_REMOVED = "2026-09-30.endive"
# The first API version with ``allowed_payment_method_types``.
ALLOWED_TYPES_ADDED = "2026-07-29.dahlia"

# The methods the fake knows, with the currencies each accepts (None: any). Any other method is never eligible.
_CURRENCIES: dict[str, frozenset[str] | None] = {
    "card": None,
    "link": None,
    "pix": frozenset({"brl"}),
    "boleto": frozenset({"brl"}),
}
DEFAULT_ENABLED = ("card", "pix")

_NONE_ELIGIBLE = (
    "No valid payment method types for this Checkout Session. Please ensure that you have activated payment methods "
    "compatible with your chosen currency in your dashboard (https://dashboard.stripe.com/settings/payment_methods)."
)


def choose(params: Params, currency: str, enabled: Sequence[str]) -> list[str]:
    allowed = params.strings("allowed_payment_method_types")
    excluded = params.strings("excluded_payment_method_types")
    static = params.strings("payment_method_types")
    if allowed is not None and (excluded is not None or params.has("payment_method_configuration")):
        raise errors.invalid(
            "You may only specify one of these parameters: allowed_payment_method_types, "
            "excluded_payment_method_types, payment_method_configuration.",
            param="allowed_payment_method_types",
        )
    if static is not None:
        return _static(static, currency, enabled)
    eligible = [method for method in enabled if _accepts(method, currency)]
    if allowed is not None:
        chosen = [method for method in dict.fromkeys(allowed) if method in eligible]
    else:
        chosen = [method for method in eligible if method not in (excluded or [])]
    if not chosen:
        raise errors.invalid(_NONE_ELIGIBLE, param="allowed_payment_method_types" if allowed is not None else None)
    return chosen


def _static(types: list[str], currency: str, enabled: Sequence[str]) -> list[str]:
    # The pre-endive static list is not a filter: a method that cannot be offered is an error, not dropped.
    for index, method in enumerate(types):
        param = f"payment_method_types[{index}]"
        if method not in enabled:
            raise errors.invalid(
                f"The payment method type provided: {method} is invalid. Please ensure the provided type is activated "
                "in your dashboard (https://dashboard.stripe.com/account/payments/settings).",
                param=param,
            )
        if not _accepts(method, currency):
            supported = ", ".join(sorted(_CURRENCIES[method] or ()))
            raise errors.invalid(
                f"The currency provided ({currency}) is invalid for one or more payment method types you provided. "
                f"Payment method {method} only supports: {supported}.",
                param=param,
            )
    return list(dict.fromkeys(types))


def _accepts(method: str, currency: str) -> bool:
    if method not in _CURRENCIES:
        return False
    currencies = _CURRENCIES[method]
    return currencies is None or currency in currencies
