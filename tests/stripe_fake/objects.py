"""Builders for the Stripe objects the fake serves, each one Stripe's sample overlaid with coherent values.

The samples are valid one by one but describe unrelated, partly absurd objects (a USD T-shirt with shipping costs
in the billions). Each builder first resets the fields the fake does not model to what a plain one-time payment
would show, then applies the caller's fields, so that what stays from the sample is only neutral structure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.stripe_fake.ids import new_id
from tests.stripe_fake.samples import StripeObject, sample


def list_object(data: list[StripeObject], url: str, *, has_more: bool = False) -> StripeObject:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def product(fields: Mapping[str, Any]) -> StripeObject:
    neutral: StripeObject = {
        "active": True,
        "default_price": None,
        "description": None,
        "images": [],
        "marketing_features": [],
        "metadata": {},
        "package_dimensions": None,
        "shippable": None,
        "statement_descriptor": None,
        "tax_code": None,
        "type": "service",
        "unit_label": None,
        "url": None,
    }
    return sample("product") | neutral | dict(fields)


def price(fields: Mapping[str, Any]) -> StripeObject:
    neutral: StripeObject = {
        "active": True,
        "billing_scheme": "per_unit",
        "custom_unit_amount": None,
        "lookup_key": None,
        "metadata": {},
        "nickname": None,
        "recurring": None,
        "tax_behavior": "unspecified",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "one_time",
    }
    built = sample("price") | neutral | dict(fields)
    built["unit_amount_decimal"] = None if built["unit_amount"] is None else str(built["unit_amount"])
    return built


def line_item(price_object: StripeObject, quantity: int, description: str | None) -> StripeObject:
    amount = (price_object["unit_amount"] or 0) * quantity
    return sample("item") | {
        "id": new_id("li_"),
        "adjustable_quantity": None,
        "amount_discount": 0,
        "amount_subtotal": amount,
        "amount_tax": 0,
        "amount_total": amount,
        "currency": price_object["currency"],
        "description": description,
        "metadata": {},
        "price": price_object,
        "quantity": quantity,
    }


def checkout_session(fields: Mapping[str, Any]) -> StripeObject:
    neutral: StripeObject = {
        "after_expiration": None,
        "allow_promotion_codes": None,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "collected_information": None,
        "consent": None,
        "consent_collection": None,
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer_creation": "if_required",
        "customer_details": None,
        "discounts": [],
        "invoice_creation": {
            "enabled": False,
            "invoice_data": {
                "account_tax_ids": None,
                "custom_fields": None,
                "description": None,
                "footer": None,
                "issuer": None,
                "metadata": {},
                "rendering_options": None,
            },
        },
        "adaptive_pricing": {"enabled": False},
        "managed_payments": {"enabled": False},
        "payment_intent": None,
        "payment_method_collection": "if_required",
        "payment_method_configuration_details": None,
        "payment_status": "unpaid",
        "permissions": None,
        "saved_payment_method_options": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "status": "open",
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted_page",
        "wallet_options": None,
    }
    return sample("checkout_session") | neutral | dict(fields)


def payment_intent(fields: Mapping[str, Any]) -> StripeObject:
    neutral: StripeObject = {
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "automatic_payment_methods": None,
        "canceled_at": None,
        "cancellation_reason": None,
        "customer": None,
        "description": None,
        "excluded_payment_method_types": None,
        "last_payment_error": None,
        "latest_charge": None,
        "managed_payments": None,
        "metadata": {},
        "next_action": None,
        "payment_method": None,
        "payment_method_configuration_details": None,
        "payment_method_options": {},
        "processing": None,
        "shipping": None,
        "transfer_data": None,
    }
    built = sample("payment_intent") | neutral | dict(fields)
    built["client_secret"] = f"{built['id']}_secret_{new_id('', 25)}"
    return built


def charge(fields: Mapping[str, Any]) -> StripeObject:
    neutral: StripeObject = {
        "amount_refunded": 0,
        "balance_transaction": new_id("txn_"),
        "calculated_statement_descriptor": "FAKE STRIPE",
        "captured": True,
        "description": None,
        "disputed": False,
        "metadata": {},
        "outcome": {
            "advice_code": None,
            "network_advice_code": None,
            "network_decline_code": None,
            "network_status": "approved_by_network",
            "reason": None,
            "seller_message": "Payment complete.",
            "type": "authorized",
        },
        "paid": True,
        "refunded": False,
        "shipping": None,
        "source": None,
        "status": "succeeded",
        "transfer_data": None,
    }
    built = sample("charge") | neutral | dict(fields)
    built["amount_captured"] = built["amount"]
    built["billing_details"]["name"] = None
    built["receipt_url"] = f"https://pay.stripe.com/receipts/payment/{new_id('', 48)}"
    # Since API version 2022-11-15 a charge no longer embeds its refunds; they are only returned when expanded.
    built.pop("refunds", None)
    return built


def card_details() -> StripeObject:
    details: StripeObject = sample("charge")["payment_method_details"]
    details["card"]["wallet"] = None
    return details


def pix_details() -> StripeObject:
    # Stripe publishes no sample of a Pix charge; these are the fields stripe-python 16 declares for it.
    return {"type": "pix", "pix": {"bank_transaction_id": new_id("E", 31), "fingerprint": None, "mandate": None}}


def refund(fields: Mapping[str, Any]) -> StripeObject:
    neutral: StripeObject = {
        "balance_transaction": new_id("txn_"),
        "metadata": {},
        "reason": None,
        "receipt_number": None,
        "status": "succeeded",
    }
    return sample("refund") | neutral | dict(fields)


def dispute(fields: Mapping[str, Any]) -> StripeObject:
    neutral: StripeObject = {
        "balance_transactions": [],
        "enhanced_eligibility_types": [],
        "is_charge_refundable": False,
        "metadata": {},
    }
    return sample("dispute") | neutral | dict(fields)


def event(fields: Mapping[str, Any]) -> StripeObject:
    return sample("event") | {"livemode": False, "pending_webhooks": 1} | dict(fields)


def customer_details(email: str) -> StripeObject:
    address = dict.fromkeys(("city", "line1", "line2", "postal_code", "state")) | {"country": "BR"}
    return {
        "address": address,
        "business_name": None,
        "email": email,
        "individual_name": None,
        "name": "Fake Customer",
        "phone": None,
        "tax_exempt": "none",
        "tax_ids": [],
    }


def card_refund_destination() -> StripeObject:
    destination: StripeObject = sample("refund")["destination_details"]
    return destination


def pix_refund_destination() -> StripeObject:
    return {"type": "pix", "pix": {}}


def card_dispute_details() -> StripeObject:
    details: StripeObject = sample("dispute")["payment_method_details"]
    details["card"]["case_type"] = "chargeback"
    return details
