"""Delivering notifications: the real delivery worker, a real webhook receiver that checks every signature,
and a real SMTP server. Given an event that crosses a rule, when the notifier and the worker run, then the
receivers hear of it (signed, once per notification, retried under the same id) and the outbox says so."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import pytest

from gateway.outbound.deliveries import DeliveryWorker
from ledger.application import Ledger
from tests.notifications.support import (
    ALERT_EMAIL,
    DEBIT_TOKENS,
    THRESHOLD,
    Receiver,
    SmtpServer,
    all_settled,
    cross_low_balance,
    debit,
    deliveries_settled,
    grant,
    notifier,
    register_endpoint,
    rows,
    store_contact,
    wait_until,
)

pytestmark = pytest.mark.postgres

LOW = "credits.low_balance"
AVAILABLE = 250_000 - DEBIT_TOKENS


def test_given_an_endpoint_and_contacts_when_a_balance_crosses_the_threshold_then_webhook_and_email_arrive(
    pg_ledger: Ledger, clean_database: str, receiver: Receiver, smtp: SmtpServer, start_worker: Callable[..., object]
) -> None:
    """Given an endpoint subscribed to low balances and two users with contacts in English and Portuguese,
    when each user's available balance falls below the threshold and the notifier runs, then the receiver
    gets one signed ``credits.low_balance`` per user with the contract's body, each user gets an email in
    their own language with a text and an HTML part, and both notifications end ``delivered``."""
    register_endpoint(clean_database, receiver, "/hooks/low", [LOW])
    store_contact(clean_database, "ana", "ana@example.com", "en")
    store_contact(clean_database, "bia", "bia@example.com", "pt-BR")
    start_worker()
    for user in ("ana", "bia"):
        cross_low_balance(pg_ledger, user)
    notifier(clean_database).catch_up()

    wait_until(lambda: len(receiver.on("/hooks/low")) == 2, what="two webhooks")
    wait_until(lambda: len(smtp.inbox.messages) == 2, what="two emails")
    wait_until(lambda: deliveries_settled(clean_database), what="the deliveries to be settled")

    requests = receiver.on("/hooks/low")
    assert all(request.verified for request in requests), [request.problem for request in requests]
    by_user = {request.payload["data"]["user_id"]: request for request in requests}
    assert set(by_user) == {"ana", "bia"}
    for request in requests:
        payload = request.payload
        assert set(payload) == {"type", "timestamp", "data"}
        assert payload["type"] == LOW
        assert payload["data"] == {
            "user_id": payload["data"]["user_id"],
            "available_millicredits": AVAILABLE,
            "threshold_millicredits": THRESHOLD,
        }
        datetime.fromisoformat(payload["timestamp"])  # RFC 3339
        assert request.headers["webhook-id"].startswith("msg_")
        assert request.headers["content-type"] == "application/json"
    assert by_user["ana"].webhook_id != by_user["bia"].webhook_id

    (english,) = smtp.inbox.to("ana@example.com")
    (portuguese,) = smtp.inbox.to("bia@example.com")
    assert english["Subject"] == "Your credit balance is low"
    assert portuguese["Subject"] == "Seu saldo de créditos está baixo"
    for message, sentence in ((english, "Your available balance is"), (portuguese, "Seu saldo disponível é de")):
        text = message.get_body(("plain",))
        html = message.get_body(("html",))
        assert text is not None
        assert html is not None
        assert sentence in text.get_content()
        assert sentence in html.get_content()
        assert "<html" in html.get_content().lower()
    assert not smtp.inbox.to(ALERT_EMAIL)

    deliveries = rows(clean_database, "SELECT channel, status, attempts, last_status FROM notification_deliveries")
    assert sorted(deliveries) == [("email", "delivered", 1, 250)] * 2 + [("webhook", "delivered", 1, 200)] * 2
    notifications = rows(clean_database, "SELECT type, status, recipients, attempts, last_error FROM notifications")
    assert sorted(notifications) == [(LOW, "delivered", 2, 2, None)] * 2


def test_given_a_receiver_failing_once_when_it_is_retried_then_the_same_webhook_id_arrives_twice_signed(
    pg_ledger: Ledger, clean_database: str, receiver: Receiver, start_worker: Callable[..., object]
) -> None:
    """Given a receiver that answers 500 to the first request and 200 after, when a low balance is
    delivered, then it gets two requests with the same ``webhook-id``, both validly signed (each signed
    afresh), and the delivery records two attempts."""
    register_endpoint(clean_database, receiver, "/hooks/flaky", [LOW])
    receiver.script["/hooks/flaky"] = [500]
    start_worker()
    cross_low_balance(pg_ledger, "carla")
    notifier(clean_database).catch_up()

    wait_until(lambda: receiver.on("/hooks/flaky"), what="the retried webhook")
    wait_until(lambda: all_settled(clean_database), what="the notification to be settled")

    (refused,) = receiver.refused("/hooks/flaky")
    (accepted,) = receiver.on("/hooks/flaky")
    assert refused.verified, refused.problem
    assert accepted.verified, accepted.problem
    assert refused.webhook_id == accepted.webhook_id
    assert refused.body == accepted.body
    assert int(accepted.headers["webhook-timestamp"]) >= int(refused.headers["webhook-timestamp"])
    assert rows(clean_database, "SELECT status, attempts, last_status, last_error FROM notification_deliveries") == [
        ("delivered", 2, 200, None)
    ]
    assert rows(clean_database, "SELECT status, attempts, last_error FROM notifications") == [("delivered", 2, None)]


def test_given_a_hanging_receiver_when_notifications_go_out_then_it_times_out_and_another_endpoint_is_not_held_up(
    pg_ledger: Ledger, clean_database: str, receiver: Receiver, start_worker: Callable[..., object]
) -> None:
    """Given two endpoints, one of which never answers, and a one-second timeout, when six users cross the
    threshold, then the other endpoint receives all six while every request to the first is still
    unanswered, and the first's deliveries are recorded as timed out and kept pending for another try."""
    register_endpoint(clean_database, receiver, "/hooks/hang", [LOW])
    register_endpoint(clean_database, receiver, "/hooks/ok", [LOW])
    receiver.hang.add("/hooks/hang")
    start_worker(webhook_timeout_seconds=1)
    users = [f"user-{number}" for number in range(6)]
    for user in users:
        cross_low_balance(pg_ledger, user)
    started = time.monotonic()
    notifier(clean_database).catch_up()

    wait_until(lambda: len(receiver.on("/hooks/ok")) == len(users), what="the healthy endpoint's six webhooks")
    healthy_seconds = time.monotonic() - started
    assert not receiver.released.is_set()  # No request to the hanging endpoint has been answered.
    # ... and yet it was tried: its requests go out beside the healthy ones, though on a loaded machine one
    # may reach the receiver a moment after the healthy six were answered.
    wait_until(lambda: bool(receiver.refused("/hooks/hang")), timeout=5, what="a request to the hanging endpoint")
    assert not receiver.released.is_set()
    assert {request.payload["data"]["user_id"] for request in receiver.on("/hooks/ok")} == set(users)

    def timed_out() -> list[tuple[object, ...]]:
        return rows(
            clean_database,
            "SELECT d.status FROM notification_deliveries AS d JOIN webhook_endpoints AS e ON e.id = d.endpoint_id"
            " WHERE e.url LIKE '%%/hooks/hang' AND d.last_error = 'timed out' AND d.attempts >= 1",
        )

    wait_until(lambda: len(timed_out()) == len(users), what="every delivery to the hanging endpoint to time out")
    assert {status for (status,) in timed_out()} == {"pending"}  # Retried later, not given up.
    print(f"\nhealthy endpoint got {len(users)} webhooks {healthy_seconds:.2f} s after the notifier ran")  # noqa: T201 - measured, shown with -s


def test_given_the_default_ssrf_guard_when_an_endpoint_is_on_loopback_then_delivery_is_blocked(
    pg_ledger: Ledger, clean_database: str, receiver: Receiver, start_worker: Callable[..., DeliveryWorker]
) -> None:
    """Given private networks not allowed (the default), when a notification is due to an endpoint on
    127.0.0.1, then the delivery fails at once as blocked, is not retried, and the receiver gets nothing."""
    register_endpoint(clean_database, receiver, "/hooks/private", [LOW])
    start_worker(allow_private_networks=False)
    cross_low_balance(pg_ledger, "dora")
    notifier(clean_database).catch_up()

    wait_until(lambda: all_settled(clean_database), what="the notification to be settled")
    ((status, attempts, error),) = rows(clean_database, "SELECT status, attempts, last_error FROM notifications")
    assert (status, attempts) == ("failed", 1)
    assert "blocked" in error
    ((delivery_status, delivery_error),) = rows(
        clean_database, "SELECT status, last_error FROM notification_deliveries"
    )
    assert delivery_status == "failed"
    assert "blocked" in delivery_error
    assert not receiver.received
    assert not receiver.hung


def test_given_a_low_balance_notified_when_it_rises_and_falls_again_then_there_is_one_notice_per_crossing(
    pg_ledger: Ledger, clean_database: str, receiver: Receiver, start_worker: Callable[..., object]
) -> None:
    """Given a user already told of a low balance, when more usage keeps them under the threshold, then
    nothing more is sent; when credits lift them back over it and usage brings them under again, then a
    second notice arrives, with the new available balance."""
    register_endpoint(clean_database, receiver, "/hooks/edges", [LOW])
    start_worker()
    cross_low_balance(pg_ledger, "eva")  # 190,000
    debit(pg_ledger, "eva", 10_000)  # 180,000: still under, no second notice
    grant(pg_ledger, "eva", 50_000)  # 230,000: armed again
    debit(pg_ledger, "eva", 40_000)  # 190,000: the second crossing
    notifier(clean_database).catch_up()

    wait_until(lambda: all_settled(clean_database), what="the notifications to be settled")
    requests = receiver.on("/hooks/edges")
    assert [request.payload["data"]["available_millicredits"] for request in requests] == [190_000, 190_000]
    assert len({request.webhook_id for request in requests}) == 2
