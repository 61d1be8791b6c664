"""The payments projection: one row per Checkout Session, from started to paid, refunded and disputed."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from ledger.payments import Checkout
from projections.accounts import ProjectionError


class PaymentsProjection:
    name = "payments"
    tables: tuple[str, ...] = ("stripe_payments",)
    topic_prefix: str | tuple[str, ...] = "ledger.Checkout."

    def apply(self, conn: psycopg.Connection[Any], events: list[tuple[int, Any]]) -> None:
        for position, event in events:
            self._apply_one(conn, position, event)

    def _apply_one(self, conn: psycopg.Connection[Any], position: int, event: Any) -> None:  # noqa: C901
        at = event.timestamp
        if isinstance(event, Checkout.Started):
            conn.execute(
                "INSERT INTO stripe_payments (checkout_session_id, checkout_id, user_id, package_id, amount_minor,"
                " currency, status, credits_millicredits, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, 'open', %s, %s, %s)",
                (
                    event.session_id,
                    event.originator_id,
                    event.user_id,
                    event.package_id,
                    event.amount_minor,
                    event.currency,
                    event.credits_millicredits,
                    at,
                    at,
                ),
            )
            return
        sets: dict[str, Any]
        if isinstance(event, Checkout.Paid | Checkout.PaymentPending):
            sets = {"status": "paid" if isinstance(event, Checkout.Paid) else "pending"}
            if event.payment_intent_id:
                sets["payment_intent_id"] = event.payment_intent_id
            if event.payment_method:
                sets["payment_method"] = event.payment_method
        elif isinstance(event, Checkout.PaymentFailed):
            sets = {"status": "failed"}
        elif isinstance(event, Checkout.Expired):
            sets = {"status": "expired"}
        elif isinstance(event, Checkout.RefundRecorded):
            sets = {"charge_id": event.charge_id, "refunded_amount_minor": event.amount_refunded_minor}
        elif isinstance(event, Checkout.DisputeRecorded):
            dispute = {"amount_minor": event.amount_minor, "status": event.status}
            sets = {"disputes": _Merge({event.dispute_id: dispute})}
        elif isinstance(event, Checkout.HoldingChanged):
            sets = {
                "credits_granted_millicredits": event.granted,
                "credits_refunded_millicredits": event.refund_clawback,
                "credits_disputed_millicredits": event.dispute_clawback,
            }
        else:
            raise ProjectionError(f"unknown checkout event {type(event).__name__} at position {position}")
        columns = ", ".join(
            f"{column} = disputes || %s::jsonb" if isinstance(value, _Merge) else f"{column} = %s"
            for column, value in sets.items()
        )
        values = [json.dumps(value.value) if isinstance(value, _Merge) else value for value in sets.values()]
        updated = conn.execute(
            f"UPDATE stripe_payments SET {columns}, updated_at = %s WHERE checkout_id = %s",  # noqa: S608 - our columns.
            (*values, at, event.originator_id),
        ).rowcount
        if updated != 1:
            raise ProjectionError(f"checkout event at position {position} for a checkout never started")


class _Merge:
    """A JSON object to merge into a jsonb column rather than replace it."""

    def __init__(self, value: dict[str, Any]) -> None:
        self.value = value
