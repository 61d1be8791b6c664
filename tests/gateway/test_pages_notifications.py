"""The admin's notifications page, against a real gateway: the notifications sent and the webhook endpoints.

Over plain HTTP: the session and role rules, the list with its filters and pages, a redelivery (refused
without the page's CSRF token, applied once with it), and the add-endpoint form with the API's URL checks.
In a real browser (Debian's chromium through Playwright): an admin sees a notification and the endpoints,
adds an endpoint and is shown its signing secret once.

The notifications are written into the database as the notifier writes them; the test gateway runs no
delivery worker, so a redelivered notification stays pending for the test to see.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from playwright.sync_api import Browser, expect

from tests.gateway.server import Gateway, private_database, running
from tests.gateway.test_browser import Offline
from tests.gateway.test_pages import assert_accessible_basics, photograph
from tests.gateway.test_pages import sign_in as sign_in_browser
from tests.gateway.test_pages_http import browser_like, csrf_of, figures_of, post_form, sign_in

PAGE = "/admin/notifications"
SECRET_SHOWN = re.compile(r'value="(whsec_[^"]+)"')


@pytest.fixture(scope="module")
def gateway(database_url: str) -> Iterator[Gateway]:
    with private_database(database_url, f"ledger_pages_notifications_{os.getpid()}") as url:
        yield from running(url)


@pytest.fixture(autouse=True)
def no_notifications(gateway: Gateway) -> None:
    execute(gateway, "DELETE FROM notification_deliveries")
    execute(gateway, "DELETE FROM notifications")
    execute(gateway, "DELETE FROM webhook_endpoints")
    execute(gateway, "DELETE FROM setting_writes")


def execute(gateway: Gateway, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(gateway.database_url, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def notification(
    gateway: Gateway,
    *,
    kind: str = "credits.low_balance",
    user_id: str | None = "maria",
    status: str = "failed",
    attempts: int = 8,
    last_error: str | None = "HTTP 500",
) -> UUID:
    """A notification with one webhook delivery, as the notifier and the delivery worker leave them."""
    notification_id = uuid4()
    execute(
        gateway,
        "INSERT INTO notifications (id, type, user_id, cause, log_position, occurred_at, data, status, recipients,"
        " attempts, last_error) VALUES (%s, %s, %s, %s, 1, now(), %s, %s, 1, %s, %s)",
        notification_id,
        kind,
        user_id,
        f"test:{notification_id}",
        json.dumps({"user_id": user_id}),
        status,
        attempts,
        last_error,
    )
    execute(
        gateway,
        "INSERT INTO notification_deliveries (id, notification_id, seq, type, channel, recipient, status, attempts,"
        " round_attempts, last_error) SELECT %s, id, seq, type, 'webhook', 'https://hooks.example.com/x', %s, %s, %s,"
        " %s FROM notifications WHERE id = %s",
        uuid4(),
        status,
        attempts,
        attempts,
        last_error,
        notification_id,
    )
    return notification_id


def statuses(gateway: Gateway, notification_id: UUID) -> tuple[str, list[str]]:
    own = execute(gateway, "SELECT status FROM notifications WHERE id = %s", notification_id)[0][0]
    deliveries = execute(
        gateway, "SELECT status FROM notification_deliveries WHERE notification_id = %s", notification_id
    )
    return own, [row[0] for row in deliveries]


def endpoint_count(gateway: Gateway) -> int:
    return int(execute(gateway, "SELECT count(*) FROM webhook_endpoints")[0][0])


def row_of(page: str, notification_id: UUID) -> str:
    found = re.search(rf'<tr data-notification="{notification_id}".*?</tr>', page, re.DOTALL)
    assert found, f"no row for {notification_id}"
    return found[0]


# Who may open it.


def test_the_page_without_a_session_redirects_to_sign_in(gateway: Gateway) -> None:
    answer = browser_like(gateway).get(PAGE)
    assert (answer.status_code, answer.headers["location"]) == (303, "/login")


def test_a_user_opening_the_page_gets_403(gateway: Gateway) -> None:
    assert sign_in(gateway, "user", "maria").get(PAGE).status_code == 403


def test_the_admin_nav_links_to_the_page(gateway: Gateway) -> None:
    shown = sign_in(gateway, "admin", "ops").get("/admin/packages")
    assert '<a href="/admin/notifications">Notifications</a>' in shown.text
    own = sign_in(gateway, "admin", "ops").get(PAGE)
    assert '<a href="/admin/notifications" aria-current="page">Notifications</a>' in own.text


# What it shows.


def test_an_admin_sees_the_notifications_newest_first_with_their_delivery(gateway: Gateway) -> None:
    older = notification(gateway, status="failed", attempts=8, last_error="HTTP 500 from the endpoint")
    newer = notification(
        gateway, kind="alert.sales_paused", user_id=None, status="delivered", attempts=1, last_error=None
    )
    page = sign_in(gateway, "admin", "ops").get(PAGE)
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert page.text.index(str(newer)) < page.text.index(str(older))
    failed = row_of(page.text, older)
    assert 'data-status="failed"' in failed
    assert '<span class="badge unavailable">Failed</span>' in failed
    assert "Low balance" in failed
    assert "<code>credits.low_balance</code>" in failed
    assert '<a href="/admin/credits/users/maria">maria</a>' in failed
    assert '<td class="num">8</td>' in failed
    assert "HTTP 500 from the endpoint" in failed
    assert f'action="/admin/notifications/{older}/redeliver"' in failed
    delivered = row_of(page.text, newer)
    assert '<span class="badge ok">Delivered</span>' in delivered
    assert "Alert: sales paused" in delivered
    # Any figure the page shows carries its value exactly.
    assert all(value != "" for value in figures_of(page.text).values())


def test_the_list_is_filtered_by_type_and_status(gateway: Gateway) -> None:
    failed = notification(gateway, status="failed")
    delivered = notification(gateway, status="delivered", last_error=None)
    alert = notification(gateway, kind="alert.sales_paused", user_id=None, status="failed")
    client = sign_in(gateway, "admin", "ops")
    only_failed = client.get(PAGE, params={"status": "failed"}).text
    assert str(failed) in only_failed
    assert str(alert) in only_failed
    assert str(delivered) not in only_failed
    assert '<option value="failed" selected>' in only_failed
    both = client.get(PAGE, params={"status": "failed", "type": "alert.sales_paused"}).text
    assert [str(alert)] == re.findall(r'<tr data-notification="([^"]+)"', both)
    assert '<option value="alert.sales_paused" selected>' in both
    nothing = client.get(PAGE, params={"type": "payment.failed"}).text
    assert "No notification matches." in nothing
    # A filter the list does not know is no filter.
    assert len(re.findall(r"<tr data-notification=", client.get(PAGE, params={"type": "nope"}).text)) == 3


def test_the_list_is_paged_with_an_older_link(gateway: Gateway) -> None:
    made = [notification(gateway, status="delivered", last_error=None) for _ in range(53)]
    client = sign_in(gateway, "admin", "ops")
    first = client.get(PAGE).text
    shown = re.findall(r'<tr data-notification="([^"]+)"', first)
    assert shown == [str(item) for item in reversed(made[-50:])]
    older = re.search(r'<a href="([^"]+)" rel="next">Older</a>', first)
    assert older
    rest = client.get(html.unescape(older[1])).text
    assert re.findall(r'<tr data-notification="([^"]+)"', rest) == [str(item) for item in reversed(made[:3])]
    assert 'rel="next"' not in rest
    assert ">Newest</a>" in rest
    # A cursor from nowhere is the first page.
    assert client.get(PAGE, params={"before": "9" * 30}).status_code == 200


def test_the_page_speaks_brazilian_portuguese(gateway: Gateway) -> None:
    notification(gateway, status="pending", last_error=None)
    page = sign_in(gateway, "admin", "ops", locale="pt-BR").get(PAGE).text
    assert '<html lang="pt-BR">' in page
    assert "<h1>Notificações</h1>" in page
    assert ">Reenviar</button>" in page
    assert '<span class="badge">Pendente</span>' in page
    assert "Endpoints de webhook" in page


# Redelivering.


def test_a_redelivery_without_the_pages_csrf_token_is_403_and_changes_nothing(gateway: Gateway) -> None:
    failed = notification(gateway)
    client = sign_in(gateway, "admin", "ops")
    client.get(PAGE)
    answer = client.post(f"{PAGE}/{failed}/redeliver", data={"idempotency_key": "k1"})
    assert answer.status_code == 403
    assert statuses(gateway, failed) == ("failed", ["failed"])


def test_a_redelivery_makes_the_deliveries_pending_once(gateway: Gateway) -> None:
    failed = notification(gateway)
    client = sign_in(gateway, "admin", "ops")
    shown = client.get(PAGE, params={"status": "failed"})
    key = re.search(rf'name="idempotency_key" value="([^"]+-{failed})"', shown.text)
    assert key
    form = {"_csrf_token": csrf_of(shown), "idempotency_key": key[1], "status": "failed"}
    answer = client.post(f"{PAGE}/{failed}/redeliver", data=form)
    assert (answer.status_code, answer.headers["location"]) == (303, f"{PAGE}?status=failed&done=redelivered")
    assert statuses(gateway, failed) == ("pending", ["pending"])
    after = client.get(answer.headers["location"]).text
    assert "The notification is being delivered again." in after
    # The same form sent again is the same redelivery, answered the same.
    again = client.post(f"{PAGE}/{failed}/redeliver", data=form)
    assert again.status_code == 303
    assert execute(gateway, "SELECT count(*) FROM setting_writes WHERE operation = 'redeliver'")[0][0] == 1


def test_redelivering_a_notification_that_is_not_there_is_404(gateway: Gateway) -> None:
    client = sign_in(gateway, "admin", "ops")
    answer = post_form(client, PAGE, f"{PAGE}/{uuid4()}/redeliver", {})
    assert answer.status_code == 404
    assert "There is no such notification." in answer.text


# Endpoints.


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000/hook", "http://localhost/hook", "http://[::1]/hook"])
def test_an_endpoint_on_a_loopback_address_is_refused_with_the_reason(gateway: Gateway, url: str) -> None:
    client = sign_in(gateway, "admin", "ops")
    answer = post_form(client, PAGE, f"{PAGE}/endpoints", {"url": url, "event_types": "*", "description": "mine"})
    assert answer.status_code == 422
    assert "a private, loopback or link-local address" in answer.text
    assert 'id="url-error"' in answer.text
    assert f'value="{url}"' in answer.text  # What was typed stays in the form.
    assert "whsec_" not in answer.text
    assert endpoint_count(gateway) == 0


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"url": "ftp://hooks.example.com/x", "event_types": "*"}, "must be an http or https URL with a host"),
        ({"url": "https://hooks.example.com/x"}, "choose at least one type"),
        (
            {"url": "https://hooks.example.com/x", "event_types": "credits.nope"},
            "credits.nope is not a notification type",
        ),
        (
            {"url": "https://hooks.example.com/x", "event_types": "*", "description": "ops\x00"},
            "must not contain the NUL character",
        ),
    ],
)
def test_a_refused_endpoint_says_why_and_writes_nothing(gateway: Gateway, fields: dict[str, str], reason: str) -> None:
    answer = post_form(sign_in(gateway, "admin", "ops"), PAGE, f"{PAGE}/endpoints", fields)
    assert answer.status_code == 422
    assert reason in answer.text
    assert endpoint_count(gateway) == 0


def test_an_added_endpoint_shows_its_secret_once_and_is_listed_until_deleted(gateway: Gateway) -> None:
    client = sign_in(gateway, "admin", "ops")
    shown = client.get(PAGE)
    form = {
        "_csrf_token": csrf_of(shown),
        "idempotency_key": re.findall(r'name="idempotency_key" value="([0-9a-f]{32})"', shown.text)[-1],
        "url": "https://hooks.example.com/ledger",
        "event_types": ["credits.purchased", "alert.sales_paused"],
        "description": "ops team",
    }
    added = client.post(f"{PAGE}/endpoints", data=form)
    assert added.status_code == 201, added.text
    secret = SECRET_SHOWN.search(added.text)
    assert secret
    stored = execute(gateway, "SELECT id, secret, event_types, description FROM webhook_endpoints")
    assert [(row[1], row[2], row[3]) for row in stored] == [
        (secret[1], ["alert.sales_paused", "credits.purchased"], "ops team")
    ]
    # Not on the page again, and the list shows the endpoint without it.
    listed = client.get(PAGE).text
    assert "whsec_" not in listed
    assert f'<tr data-endpoint="{stored[0][0]}">' in listed
    assert "<code>https://hooks.example.com/ledger</code>" in listed
    assert "<code>alert.sales_paused</code>, <code>credits.purchased</code>" in listed
    # The same form sent twice adds one endpoint.
    assert client.post(f"{PAGE}/endpoints", data=form).status_code == 201
    assert endpoint_count(gateway) == 1

    deleted = post_form(client, PAGE, f"{PAGE}/endpoints/{stored[0][0]}/delete", {})
    assert (deleted.status_code, deleted.headers["location"]) == (303, f"{PAGE}?done=endpoint-deleted")
    after = client.get(deleted.headers["location"]).text
    assert "The endpoint was deleted" in after
    assert "No webhook endpoint yet." in after
    assert execute(gateway, "SELECT deleted_at IS NOT NULL FROM webhook_endpoints")[0][0] is True


def test_deleting_an_endpoint_without_the_csrf_token_is_403(gateway: Gateway) -> None:
    endpoint_id = uuid4()
    execute(
        gateway,
        "INSERT INTO webhook_endpoints (id, url, event_types, secret) VALUES (%s, 'https://a.example/x', '{*}', 's')",
        endpoint_id,
    )
    client = sign_in(gateway, "admin", "ops")
    client.get(PAGE)
    assert client.post(f"{PAGE}/endpoints/{endpoint_id}/delete", data={}).status_code == 403
    assert execute(gateway, "SELECT deleted_at FROM webhook_endpoints")[0][0] is None


# In a browser.


@pytest.mark.browser
def test_an_admin_sees_the_notifications_and_adds_an_endpoint(browser: Browser, gateway: Gateway) -> None:
    failed = notification(gateway, last_error="HTTP 503")
    execute(
        gateway,
        "INSERT INTO webhook_endpoints (id, url, event_types, description, secret)"
        " VALUES (%s, 'https://ops.example.com/ledger', '{*}', 'ops', 'whsec_old')",
        uuid4(),
    )
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    page = context.new_page()
    offline = Offline(page)
    sign_in_browser(page, gateway, "admin", "ops")
    page.get_by_role("link", name="Notifications").click()
    expect(page).to_have_url(f"{gateway.base_url}{PAGE}")
    assert_accessible_basics(page)
    row = page.locator(f'tr[data-notification="{failed}"]')
    expect(row).to_contain_text("Low balance")
    expect(row).to_contain_text("Failed")
    expect(row).to_contain_text("HTTP 503")
    endpoints = page.locator("table.endpoints")
    expect(endpoints).to_contain_text("https://ops.example.com/ledger")
    expect(endpoints).to_contain_text("All types (*)")
    assert page.locator("[data-secret]").count() == 0

    page.get_by_label("URL", exact=True).fill("https://hooks.example.com/x")
    page.get_by_label("All types (*)").uncheck()
    page.get_by_label("Credits purchased").check()
    page.get_by_label("Description").fill("billing bot")
    with page.expect_navigation():
        page.get_by_role("button", name="Add the endpoint").click()
    secret = page.locator("[data-secret]")
    expect(secret).to_be_visible()
    assert secret.input_value().startswith("whsec_")
    assert (
        secret.input_value()
        == execute(gateway, "SELECT secret FROM webhook_endpoints WHERE url = 'https://hooks.example.com/x'")[0][0]
    )
    expect(endpoints).to_contain_text("https://hooks.example.com/x")
    expect(endpoints).to_contain_text("billing bot")
    photograph(page, "admin-notifications")

    # Shown once: the page opened again does not have it.
    page.goto(f"{gateway.base_url}{PAGE}")
    expect(page.locator("[data-secret]")).to_have_count(0)
    expect(page.locator("table.endpoints")).to_contain_text("https://hooks.example.com/x")

    with page.expect_navigation():
        row.get_by_role("button", name="Redeliver").click()
    expect(page.locator(".notice")).to_have_text("The notification is being delivered again.")
    expect(page.locator(f'tr[data-notification="{failed}"]')).to_contain_text("Pending")
    assert offline.external() == []
    context.close()
