"""Buying credits end to end: the gateway against a fake Stripe that speaks Stripe's wire format, and
webhooks signed exactly as Stripe signs them. After each flow the balance, the history and the payment row
are exact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.server import SECRET, Api, Gateway, running
from tests.stripe_fake import FakeStripe

STARTER_MILLICREDITS = 100_000


@pytest.fixture
def gateway(clean_database: str, fake_stripe: FakeStripe) -> Iterator[Gateway]:
    yield from running(
        clean_database,
        STRIPE_SECRET_KEY="sk_test_ledger",
        STRIPE_WEBHOOK_SECRET=fake_stripe.webhook_secret,
        STRIPE_API_BASE=fake_stripe.api_base,
    )


@pytest.fixture
def buyer(gateway: Gateway) -> Api:
    return gateway.client("user", "buyer")


def buy(buyer: Api, package_id: str = "starter", key: str | None = None) -> str:
    headers = {"Idempotency-Key": key} if key else {}
    response = buyer.post("/api/credits/purchase", json={"package_id": package_id}, headers=headers)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["checkout_url"].startswith("https://checkout.stripe.com/")
    session_id: str = body["checkout_session_id"]
    return session_id


def deliver(gateway: Gateway, fake: FakeStripe, event: Any, *, times: int = 1) -> httpx.Response:
    signed = fake.sign(event)
    response = None
    for _ in range(times):
        response = gateway.client().post("/api/webhooks/stripe", content=signed.payload, headers=signed.headers)
        assert response.status_code == 200, response.text
    assert response is not None
    return response


def state(gateway: Gateway, session_id: str) -> dict[str, Any]:
    """Balance, history kinds and the payment row, once the views have caught up with the log."""
    head = gateway.rows("SELECT coalesce(max(notification_id), 0) FROM ledger_events")[0][0]
    deadline = time.monotonic() + 10
    while gateway.rows(f"SELECT min(position) FROM projection_positions")[0][0] < head:  # noqa: F541
        assert time.monotonic() < deadline
        time.sleep(0.01)
    payment = gateway.rows(
        "SELECT status, payment_method, credits_granted_millicredits, credits_refunded_millicredits,"
        f" credits_disputed_millicredits FROM stripe_payments WHERE checkout_session_id = '{session_id}'"
    )
    return {
        "balance": gateway.ledger.get_balance("buyer", now=gateway.clock()).balance_millicredits,
        "history": gateway.rows(
            "SELECT kind, amount_millicredits FROM credit_transactions WHERE user_id = 'buyer' ORDER BY position, seq"
        ),
        "payment": payment[0] if payment else None,
    }


def test_a_card_payment_grants_the_package_once(gateway: Gateway, fake_stripe: FakeStripe, buyer: Api) -> None:
    session_id = buy(buyer)
    created = fake_stripe.get(session_id)
    assert created["payment_method_types"] == ["card", "pix"]
    assert created["currency"] == "brl"
    assert created["metadata"]["user_id"] == "buyer"
    deliver(gateway, fake_stripe, fake_stripe.complete_with_card(session_id), times=3)
    assert state(gateway, session_id) == {
        "balance": STARTER_MILLICREDITS,
        "history": [("purchase", STARTER_MILLICREDITS)],
        "payment": ("paid", "card", STARTER_MILLICREDITS, 0, 0),
    }


def test_pix_pending_then_paid(gateway: Gateway, fake_stripe: FakeStripe, buyer: Api) -> None:
    session_id = buy(buyer)
    deliver(gateway, fake_stripe, fake_stripe.complete_with_pix(session_id), times=3)
    assert state(gateway, session_id) == {"balance": 0, "history": [], "payment": ("pending", "pix", 0, 0, 0)}
    deliver(gateway, fake_stripe, fake_stripe.pix_paid(session_id), times=3)
    assert state(gateway, session_id) == {
        "balance": STARTER_MILLICREDITS,
        "history": [("purchase", STARTER_MILLICREDITS)],
        "payment": ("paid", "pix", STARTER_MILLICREDITS, 0, 0),
    }


def test_pix_paid_reported_before_the_checkout_completed(gateway: Gateway, fake_stripe: FakeStripe, buyer: Api) -> None:
    session_id = buy(buyer)
    completed = fake_stripe.complete_with_pix(session_id)
    succeeded = fake_stripe.pix_paid(session_id)
    deliver(gateway, fake_stripe, succeeded)
    deliver(gateway, fake_stripe, completed)
    assert state(gateway, session_id)["payment"][:3] == ("paid", "pix", STARTER_MILLICREDITS)
    assert state(gateway, session_id)["balance"] == STARTER_MILLICREDITS


def test_pix_failed_and_an_expired_checkout_grant_nothing(
    gateway: Gateway, fake_stripe: FakeStripe, buyer: Api
) -> None:
    failed = buy(buyer, key="first")
    deliver(gateway, fake_stripe, fake_stripe.complete_with_pix(failed))
    deliver(gateway, fake_stripe, fake_stripe.pix_failed(failed), times=3)
    expired = buy(buyer, key="second")
    deliver(gateway, fake_stripe, fake_stripe.expire_session(expired), times=3)
    assert state(gateway, failed) == {"balance": 0, "history": [], "payment": ("failed", "pix", 0, 0, 0)}
    assert state(gateway, expired)["payment"] == ("expired", None, 0, 0, 0)


def test_the_same_key_opens_the_same_checkout(gateway: Gateway, buyer: Api) -> None:
    assert buy(buyer, key="k") == buy(buyer, key="k")
    assert buy(buyer, key="k") != buy(buyer, key="other")


def test_partial_then_full_refund_claws_back_exactly(gateway: Gateway, fake_stripe: FakeStripe, buyer: Api) -> None:
    session_id = buy(buyer)
    deliver(gateway, fake_stripe, fake_stripe.complete_with_card(session_id))
    partial = fake_stripe.refund(session_id, 1_000)  # R$ 10 of R$ 30.
    full = fake_stripe.refund(session_id)
    deliver(gateway, fake_stripe, partial, times=2)
    assert state(gateway, session_id)["balance"] == STARTER_MILLICREDITS - 33_333
    deliver(gateway, fake_stripe, full, times=2)
    deliver(gateway, fake_stripe, partial)  # Late and out of order: changes nothing.
    assert state(gateway, session_id) == {
        "balance": 0,
        "history": [("purchase", 100_000), ("refund", -33_333), ("refund", -66_667)],
        "payment": ("paid", "card", 100_000, 100_000, 0),
    }


@pytest.mark.parametrize(("outcome", "balance"), [("lost", -40_000), ("won", 60_000)])
def test_a_dispute_claws_back_and_a_won_one_gives_back(
    gateway: Gateway, fake_stripe: FakeStripe, buyer: Api, outcome: str, balance: int
) -> None:
    session_id = buy(buyer)
    deliver(gateway, fake_stripe, fake_stripe.complete_with_card(session_id))
    spent = gateway.client("service", "svc").post(
        "/api/usage/debits", json={"user_id": "buyer", "tokens": 40_000}, headers={"Idempotency-Key": "use"}
    )
    assert spent.status_code == 201, spent.text
    deliver(gateway, fake_stripe, fake_stripe.open_dispute(session_id), times=2)
    assert state(gateway, session_id)["balance"] == -40_000  # A clawback may take the balance below zero.
    deliver(gateway, fake_stripe, fake_stripe.close_dispute(session_id, outcome), times=2)
    expected_history = [("purchase", 100_000), ("debit", -40_000), ("dispute", -100_000)]
    if outcome == "won":
        expected_history.append(("dispute", 100_000))
    assert state(gateway, session_id) == {
        "balance": balance,
        "history": expected_history,
        "payment": ("paid", "card", 100_000, 0, 100_000 if outcome == "lost" else 0),
    }


def test_a_package_cannot_be_bought_while_sales_are_paused(
    gateway: Gateway, fake_stripe: FakeStripe, buyer: Api
) -> None:
    # Sales paused is a state of the system: it follows the limit as soon as it changes, not the next attempt.
    admin = gateway.client("admin", "ops")
    admin.put("/api/admin/billing-config", json={"api_monthly_limit_tokens": 100_000, "alert_threshold_percent": 80})
    assert sales_paused_becomes(admin, paused=True)
    refused = buyer.post("/api/credits/purchase", json={"package_id": "starter"})
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"] == "sales-paused"
    assert not fake_stripe.events  # No checkout was opened.
    admin.put("/api/admin/billing-config", json={"api_monthly_limit_tokens": 100_000_000})
    assert sales_paused_becomes(admin, paused=False)
    buy(buyer)


def sales_paused_becomes(admin: Api, *, paused: bool, timeout_seconds: float = 10) -> bool:
    """True once the admin stats say sales are (or are not) paused, without anyone trying to buy."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if admin.get("/api/admin/credits/stats").json()["sales_paused"] is paused:
            return True
        time.sleep(0.05)
    return False


def test_an_unknown_or_inactive_package_is_not_found(gateway: Gateway, buyer: Api) -> None:
    gateway.client("admin", "ops").patch("/api/admin/credits/packages/starter", json={"active": False})
    for package_id in ("starter", "nope"):
        refused = buyer.post("/api/credits/purchase", json={"package_id": package_id})
        assert (refused.status_code, refused.json()["type"]) == (404, "not-found")


def test_a_stripe_refusal_is_a_clear_502(gateway: Gateway, buyer: Api) -> None:
    gateway.client("admin", "ops").patch(
        "/api/admin/credits/packages/starter", json={"stripe_price_id": "price_does_not_exist"}
    )
    refused = buyer.post("/api/credits/purchase", json={"package_id": "starter"})
    assert refused.status_code == 502, refused.text
    body = refused.json()
    assert (body["type"], "price_does_not_exist" in body["detail"]) == ("payment-provider-error", True)
    assert "Traceback" not in refused.text


def _tampered(payload: str) -> str:
    return payload.replace('"livemode"', '"livemode" ', 1)


@pytest.mark.parametrize("flaw", ["missing", "tampered", "reserialised", "stale", "other-secret"])
def test_a_bad_signature_is_refused_and_nothing_is_written(
    gateway: Gateway, fake_stripe: FakeStripe, buyer: Api, flaw: str
) -> None:
    session_id = buy(buyer)
    event = fake_stripe.complete_with_card(session_id)
    before = gateway.events()
    signed = fake_stripe.sign(
        event,
        timestamp=int(time.time()) - 600 if flaw == "stale" else None,
        secret="whsec_someone_else" if flaw == "other-secret" else None,
    )
    headers = dict(signed.headers)
    payload = signed.payload
    if flaw == "missing":
        del headers["Stripe-Signature"]
    elif flaw == "tampered":
        payload = _tampered(payload)
    elif flaw == "reserialised":
        payload = json.dumps(json.loads(payload), separators=(",", ":"))
    response = gateway.client().post("/api/webhooks/stripe", content=payload, headers=headers)
    assert (response.status_code, response.json()["type"]) == (400, "invalid-signature")
    assert gateway.events() == before


def test_an_unknown_event_type_is_acknowledged_and_ignored(gateway: Gateway, fake_stripe: FakeStripe) -> None:
    event = {**fake_stripe.complete_with_card(buy(gateway.client("user", "buyer"))), "type": "customer.created"}
    before = gateway.events()
    answer = deliver(gateway, fake_stripe, event)
    assert answer.json() == {"received": True, "handled": False}
    assert gateway.events() == before


def test_sync_products_twice_makes_one_product_and_price_per_package(
    clean_database: str, fake_stripe: FakeStripe
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "STRIPE_"))}
    env.update(
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
        LEDGER_DATABASE_URL=clean_database,
        LEDGER_JWT_SECRET=SECRET,
        STRIPE_SECRET_KEY="sk_test_ledger",
        STRIPE_API_BASE=fake_stripe.api_base,
    )

    def sync(*extra: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "stripe", "sync-products", *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    subprocess.run([sys.executable, "-m", "gateway.cli", "seed"], env=env, check=True, capture_output=True)
    dry = sync("--dry-run")
    assert "would create product credits_starter" in dry
    assert not fake_stripe.store.newest_first("product")
    first = sync()
    second = sync()
    assert first.count("create product") == 3
    assert first.count("create price") == 3
    assert "create" not in second
    assert second.count("is up to date") == 6
    client = fake_stripe.client()
    assert len(client.v1.products.list().data) == 3
    assert len(client.v1.prices.list().data) == 3
