"""The payments view: one exact row per checkout, whatever Stripe said and in whatever order."""

from __future__ import annotations

from ledger.application import Ledger
from ledger.payments import ChargeRefunded, DisputeChanged, SessionCompleted, SessionDetails
from projections.payments import PaymentsProjection
from projections.runner import ProjectionRunner
from tests.conftest import T0
from tests.projections.test_accounts_projection import rows

DETAILS = SessionDetails(user_id="buyer", package_id="starter", credits=100, amount_minor=3_000, currency="BRL")


def test_a_paid_partly_refunded_and_disputed_checkout_gives_one_exact_row(
    pg_ledger: Ledger, clean_database: str
) -> None:
    pg_ledger.start_checkout("cs_1", DETAILS, now=T0)
    pg_ledger.record_payment(
        SessionCompleted(
            stripe_event_id="evt_1", session_id="cs_1", paid=True, payment_intent_id="pi_1", payment_method="card"
        ),
        now=T0,
    )
    pg_ledger.record_payment(
        ChargeRefunded(
            stripe_event_id="evt_2",
            session_id="cs_1",
            charge_id="ch_1",
            charge_amount_minor=3_000,
            amount_refunded_minor=1_500,
        ),
        now=T0,
    )
    pg_ledger.record_payment(
        DisputeChanged(
            stripe_event_id="evt_3", session_id="cs_1", dispute_id="dp_1", amount_minor=1_500, status="open"
        ),
        now=T0,
    )
    ProjectionRunner(clean_database, PaymentsProjection(), batch_size=2).catch_up()
    assert rows(
        clean_database,
        "SELECT checkout_session_id, user_id, package_id, amount_minor, currency, payment_method, status,"
        " payment_intent_id, charge_id, credits_millicredits, credits_granted_millicredits,"
        " credits_refunded_millicredits, credits_disputed_millicredits, refunded_amount_minor, disputes"
        " FROM stripe_payments",
    ) == [
        (
            "cs_1",
            "buyer",
            "starter",
            3_000,
            "BRL",
            "card",
            "paid",
            "pi_1",
            "ch_1",
            100_000,
            100_000,
            50_000,
            50_000,
            1_500,
            {"dp_1": {"amount_minor": 1_500, "status": "open"}},
        )
    ]
