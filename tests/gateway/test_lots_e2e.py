"""Grants as lots end to end, through HTTP and the fake Stripe: the order usage takes them in, a welcome lot that
expires while a paid lot remains, a refund that takes back from the lot its purchase created."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from tests.gateway.server import Api, Gateway, running
from tests.gateway.test_stripe import buy, deliver
from tests.stripe_fake import FakeStripe


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


def caught_up(gateway: Gateway) -> None:
    head = gateway.rows("SELECT coalesce(max(notification_id), 0) FROM ledger_events")[0][0]
    deadline = time.monotonic() + 10
    while gateway.rows("SELECT min(position) FROM projection_positions")[0][0] < head:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def balance(gateway: Gateway, buyer: Api) -> dict[str, Any]:
    caught_up(gateway)
    response = buyer.get("/api/credits/balance")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def lots(body: dict[str, Any]) -> list[tuple[str, int, int, bool]]:
    """Each open lot as (kind, granted, remaining, expires)."""
    return [
        (lot["kind"], lot["granted_millicredits"], lot["remaining_millicredits"], lot["expires_at"] is not None)
        for lot in body["lots"]
    ]


def history(gateway: Gateway) -> list[tuple[str, int]]:
    caught_up(gateway)
    return [
        (kind, amount)
        for kind, amount in gateway.rows(
            "SELECT kind, amount_millicredits FROM credit_transactions WHERE user_id = 'buyer'"
            " AND kind <> 'reservation' ORDER BY position, seq"
        )
    ]


def debit(gateway: Gateway, tokens: int, key: str) -> dict[str, Any]:
    response = gateway.client("service", "svc").post(
        "/api/usage/debits", json={"user_id": "buyer", "tokens": tokens}, headers={"Idempotency-Key": key}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_welcome_lot_expires_while_a_paid_lot_remains(gateway: Gateway, fake_stripe: FakeStripe, buyer: Api) -> None:
    admin = gateway.client("admin", "ops")
    changed = admin.put("/api/admin/billing-config", json={"welcome_credits": 10, "welcome_credits_ttl_days": 1})
    assert changed.status_code == 200, changed.text
    assert changed.json()["welcome_credits_ttl_days"] == 1
    initialized = gateway.client("service", "svc").post(
        "/api/users/buyer/initialize", headers={"Idempotency-Key": "init"}
    )
    assert initialized.status_code == 201, initialized.text
    session_id = buy(buyer)
    deliver(gateway, fake_stripe, fake_stripe.complete_with_card(session_id))
    # The welcome lot expires first, so usage takes it first.
    assert lots(balance(gateway, buyer)) == [("promo", 10_000, 10_000, True), ("paid", 100_000, 100_000, False)]
    debit(gateway, 3_000, "first")
    assert lots(balance(gateway, buyer)) == [("promo", 10_000, 7_000, True), ("paid", 100_000, 100_000, False)]

    gateway.clock.advance(days=1, seconds=1)
    # Past its expiry the welcome lot no longer counts, before anything records it.
    now = balance(gateway, buyer)
    assert (now["balance_millicredits"], now["available_millicredits"]) == (100_000, 100_000)
    assert lots(now) == [("paid", 100_000, 100_000, False)]
    assert debit(gateway, 1_000, "second")["balance_after_millicredits"] == 99_000
    assert history(gateway) == [
        ("grant", 10_000),
        ("purchase", 100_000),
        ("debit", -3_000),
        ("expiry", -7_000),
        ("debit", -1_000),
    ]
    assert lots(balance(gateway, buyer)) == [("paid", 100_000, 99_000, False)]
    # The expiry shows in the day's usage and the admin figures, but is no usage: tokens count the debits only.
    usage = buyer.get("/api/credits/usage", params={"granularity": "day"}).json()
    assert (usage["total_tokens"], usage["total_expired_millicredits"]) == (4_000, 7_000)
    stats = admin.get("/api/admin/credits/stats").json()
    assert (stats["tokens_used_30d"], stats["expired_millicredits_30d"]) == (4_000, 7_000)


def test_a_refund_takes_back_from_the_paid_lot(gateway: Gateway, fake_stripe: FakeStripe, buyer: Api) -> None:
    admin = gateway.client("admin", "ops")
    given = admin.post(
        "/api/admin/credits/adjust",
        json={"user_id": "buyer", "amount_millicredits": 50_000, "reason": "launch promotion"},
        headers={"Idempotency-Key": "promo"},
    )
    assert given.status_code == 201, given.text
    session_id = buy(buyer)
    deliver(gateway, fake_stripe, fake_stripe.complete_with_card(session_id))
    debit(gateway, 20_000, "spend")  # Promo before paid: the promotion pays for it.
    assert lots(balance(gateway, buyer)) == [("promo", 50_000, 30_000, False), ("paid", 100_000, 100_000, False)]
    deliver(gateway, fake_stripe, fake_stripe.refund(session_id, 1_000))  # R$ 10 of R$ 30.
    after = balance(gateway, buyer)
    assert lots(after) == [("promo", 50_000, 30_000, False), ("paid", 100_000, 66_667, False)]
    assert after["balance_millicredits"] == 96_667
    # The rest of the purchase is refunded: its lot is gone, the promotion is untouched.
    deliver(gateway, fake_stripe, fake_stripe.refund(session_id))
    assert lots(balance(gateway, buyer)) == [("promo", 50_000, 30_000, False)]


def test_an_admin_grant_names_its_kind_and_expiry(gateway: Gateway, buyer: Api) -> None:
    admin = gateway.client("admin", "ops")
    expires_at = (gateway.clock() + timedelta(days=7)).isoformat()
    given = admin.post(
        "/api/admin/credits/adjust",
        json={
            "user_id": "buyer",
            "amount_millicredits": 5_000,
            "reason": "goodwill",
            "kind": "paid",
            "expires_at": expires_at,
        },
        headers={"Idempotency-Key": "goodwill"},
    )
    assert given.status_code == 201, given.text
    (lot,) = balance(gateway, buyer)["lots"]
    assert (lot["kind"], lot["remaining_millicredits"]) == ("paid", 5_000)
    assert lot["expires_at"] is not None


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"amount_millicredits": 5_000, "expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
        ({"amount_millicredits": -5_000, "kind": "promo"}, "kind"),
        ({"amount_millicredits": -5_000, "expires_at": "2999-01-01T00:00:00Z"}, "expires_at"),
        ({"amount_millicredits": 5_000, "kind": "gift"}, "kind"),
    ],
)
def test_a_lot_that_cannot_be_is_refused_and_nothing_is_written(
    gateway: Gateway, extra: dict[str, Any], field: str
) -> None:
    before = gateway.events()
    response = gateway.client("admin", "ops").post(
        "/api/admin/credits/adjust",
        json={"user_id": "buyer", "reason": "test", **extra},
        headers={"Idempotency-Key": f"bad-{field}-{extra['amount_millicredits']}"},
    )
    assert response.status_code == 422, response.text
    assert field in response.text
    assert gateway.events() == before
