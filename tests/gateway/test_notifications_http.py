"""Being told, over HTTP: endpoints, contacts and redeliveries keep the API's rules (idempotency in the write's
transaction, clear 4xx with nothing written), and the system watch turns refused Stripe webhooks into one alert
per window."""

from __future__ import annotations

import time
from collections.abc import Iterator
from uuid import uuid4

import pytest

from tests.gateway.server import Gateway, running

pytestmark = pytest.mark.postgres

ENDPOINT = {"url": "https://hooks.example.com/ledger", "event_types": ["*"], "description": "ops"}


@pytest.fixture
def gateway(clean_database: str) -> Iterator[Gateway]:
    yield from running(clean_database, STRIPE_WEBHOOK_SECRET="whsec_test", LEDGER_STRIPE_FAILURE_ALERT_THRESHOLD="2")


def test_the_same_key_gets_the_first_endpoint_again_and_another_body_is_409(gateway: Gateway) -> None:
    admin = gateway.client("admin", "ops")
    first = admin.post("/api/admin/webhook-endpoints", json=ENDPOINT, headers={"Idempotency-Key": "ep-1"})
    again = admin.post("/api/admin/webhook-endpoints", json=ENDPOINT, headers={"Idempotency-Key": "ep-1"})
    other = admin.post(
        "/api/admin/webhook-endpoints", json={**ENDPOINT, "description": "x"}, headers={"Idempotency-Key": "ep-1"}
    )
    assert (first.status_code, again.status_code, other.status_code) == (201, 201, 409)
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert first.json()["secret"].startswith("whsec_")
    assert other.json()["type"] == "idempotency-conflict"
    assert gateway.rows("SELECT count(*) FROM webhook_endpoints")[0][0] == 1
    listed = admin.get("/api/admin/webhook-endpoints").json()["items"]
    assert [item["id"] for item in listed] == [first.json()["id"]]
    assert "secret" not in listed[0]


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("http://127.0.0.1:9/hook", "url"),
        ("http://localhost/hook", "url"),
        ("http://169.254.169.254/latest", "url"),
        ("https://a..b/x", "url"),
        ("https://" + "a" * 64 + ".example.com/", "url"),
        ("ftp://hooks.example.com/x", "url"),
    ],
)
def test_an_endpoint_on_a_private_or_malformed_address_is_422_and_nothing_is_written(
    gateway: Gateway, url: str, field: str
) -> None:
    admin = gateway.client("admin", "ops")
    refused = admin.post(
        "/api/admin/webhook-endpoints", json={**ENDPOINT, "url": url}, headers={"Idempotency-Key": url}
    )
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert [error["field"] for error in refused.json()["errors"]] == [field]
    assert gateway.rows("SELECT count(*) FROM webhook_endpoints")[0][0] == 0
    assert gateway.rows("SELECT count(*) FROM setting_writes")[0][0] == 0


def test_a_cursor_past_any_position_is_422_not_a_crash(gateway: Gateway) -> None:
    admin = gateway.client("admin", "ops")
    assert admin.get("/api/admin/notifications?cursor=9999999999999999999").status_code == 422
    assert admin.get("/api/admin/notifications?cursor=9999999999999999").status_code == 200


def test_redelivering_an_unknown_notification_is_404_and_leaves_its_key_free(gateway: Gateway) -> None:
    admin = gateway.client("admin", "ops")
    missing = admin.post(f"/api/admin/notifications/{uuid4()}/redeliver", headers={"Idempotency-Key": "r-1"})
    assert missing.status_code == 404
    assert gateway.rows("SELECT count(*) FROM setting_writes")[0][0] == 0


def test_a_contact_is_kept_replaced_and_erased(gateway: Gateway) -> None:
    service = gateway.client("service", "app")
    kept = service.put("/api/users/ana/contact", json={"email": "ana@example.com", "locale": "en"})
    assert kept.status_code == 200, kept.text
    assert kept.json() == {"user_id": "ana", "email": "ana@example.com", "locale": "en"}
    service.put("/api/users/ana/contact", json={"email": "ana@example.org"})
    assert gateway.rows("SELECT email, locale FROM contacts") == [("ana@example.org", "pt-BR")]
    bad = service.put("/api/users/ana/contact", json={"email": "not an address"})
    assert bad.status_code == 422
    assert service.delete("/api/users/ana/contact").status_code == 204
    assert gateway.rows("SELECT count(*) FROM contacts")[0][0] == 0
    assert service.delete("/api/users/ana/contact").status_code == 404


def test_refused_stripe_webhooks_over_the_threshold_make_one_alert_per_window(gateway: Gateway) -> None:
    anonymous = gateway.client()
    for _ in range(5):
        refused = anonymous.post("/api/webhooks/stripe", content=b"{}", headers={"Stripe-Signature": "t=1,v1=bad"})
        assert refused.status_code == 400
    assert gateway.rows("SELECT count(*) FROM stripe_webhook_failures")[0][0] == 5
    alerts = wait_for_rows(gateway, "SELECT data FROM notifications WHERE type = 'alert.webhook_failures'")
    assert len(alerts) == 1
    data = alerts[0][0]
    assert (data["threshold"], data["window_seconds"]) == (2, 300)
    assert data["failures"] > 2


def wait_for_rows(gateway: Gateway, query: str, timeout_seconds: float = 10) -> list[tuple[object, ...]]:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        found = gateway.rows(query)
        if found:
            time.sleep(0.5)  # Long enough for the watch to look again several times: still one alert.
            return list(gateway.rows(query))
        time.sleep(0.05)
    return []
