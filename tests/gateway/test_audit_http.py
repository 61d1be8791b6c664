"""Audit, time travel and statements end to end over HTTP: who and which request reach the audit trail, a replay
adds nothing, and past balances and statements come from the events, as JSON and as CSV."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from urllib.parse import quote

import httpx
import pytest

from tests.gateway.server import Api, Gateway, running


@pytest.fixture
def gateway(clean_database: str) -> Iterator[Gateway]:
    yield from running(clean_database)


def _at(moment: datetime) -> str:
    return quote(moment.astimezone(UTC).isoformat())


def _between(gateway: Gateway) -> datetime:
    """An instant strictly between the writes before it and those after it."""
    time.sleep(0.002)
    moment = gateway.clock()
    time.sleep(0.002)
    return moment


def _audit(admin: Api, written: httpx.Response, query: str = "") -> list[dict[str, object]]:
    response = admin.get(f"/api/admin/audit?limit=500{query}", headers=admin.last_position(written))
    assert response.status_code == 200, response.text
    assert "ledger-stale" not in response.headers
    items: list[dict[str, object]] = response.json()["items"]
    return items


def test_changes_reach_the_audit_trail_once_with_who_and_the_request(gateway: Gateway) -> None:
    admin = gateway.client("admin", "ops-1")
    body = {"user_id": "u1", "amount_millicredits": 50_000, "reason": "ticket 12"}
    headers = {"Idempotency-Key": "adjust-1", "X-Request-Id": "req-adjust-1"}
    first = admin.post("/api/admin/credits/adjust", json=body, headers=headers)
    assert first.status_code == 201, first.text
    again = admin.post("/api/admin/credits/adjust", json=body, headers={**headers, "X-Request-Id": "req-adjust-2"})
    assert again.headers["Idempotent-Replayed"] == "true"
    changed = admin.put(
        "/api/admin/billing-config", json={"alert_threshold_percent": 90}, headers={"X-Request-Id": "req-config"}
    )
    assert changed.status_code == 200, changed.text
    service = gateway.client("service", "worker")
    debited = service.post(
        "/api/usage/debits", json={"user_id": "u1", "tokens": 1_000}, headers={"Idempotency-Key": "d"}
    )
    assert debited.status_code == 201, debited.text

    items = _audit(admin, debited)
    adjusted = [item for item in items if item["action"] == "credits.adjusted"]
    assert len(adjusted) == 1  # The replay wrote no event, so no row; usage is not audited at all.
    assert {
        key: adjusted[0][key] for key in ("actor", "actor_role", "target", "old", "new", "reason", "request_id")
    } == {
        "actor": "ops-1",
        "actor_role": "admin",
        "target": "user:u1",
        "old": {},
        "new": {"amount_millicredits": 50_000, "kind": "promo", "expires_at": None},
        "reason": "ticket 12",
        "request_id": "req-adjust-1",
    }
    config = _audit(admin, debited, "&action=billing_config.changed")
    assert [(c["old"], c["new"], c["request_id"]) for c in config] == [
        ({"alert_threshold_percent": 80}, {"alert_threshold_percent": 90}, "req-config")
    ]
    assert {item["actor"] for item in _audit(admin, debited, "&actor=ops-1")} == {"ops-1"}
    assert gateway.client("user", "u1").get("/api/admin/audit").status_code == 403
    assert admin.get("/api/admin/audit?action=credits.granted").status_code == 422


class History(NamedTuple):
    before: datetime
    funded_at: datetime
    held_at: datetime
    after: datetime
    debited: httpx.Response


def _history(gateway: Gateway) -> History:
    """Funds, a hold of 60 s and a debit, with an instant between each two."""
    admin = gateway.client("admin", "ops-1")
    before = _between(gateway)
    funded = admin.post(
        "/api/admin/credits/adjust",
        json={"user_id": "u1", "amount_millicredits": 500_000, "reason": "=SUM(1), a fund"},
        headers={"Idempotency-Key": "fund"},
    )
    assert funded.status_code == 201, funded.text
    funded_at = _between(gateway)
    service = gateway.client("service", "worker")
    held = service.post(
        "/api/usage/reservations",
        json={"user_id": "u1", "estimated_tokens": 10_000, "ttl_seconds": 60},
        headers={"Idempotency-Key": "r"},
    )
    assert held.status_code == 201, held.text
    held_at = _between(gateway)
    debited = service.post(
        "/api/usage/debits", json={"user_id": "u1", "tokens": 2_000}, headers={"Idempotency-Key": "d"}
    )
    assert debited.status_code == 201, debited.text
    after = _between(gateway)
    return History(before, funded_at, held_at, after, debited)


def test_the_balance_as_of_an_instant_is_as_it_was_then(gateway: Gateway) -> None:
    admin, user = gateway.client("admin", "ops-1"), gateway.client("user", "u1")
    before, funded_at, held_at, after, _ = _history(gateway)

    def balance(client: Api, path: str, moment: datetime) -> tuple[int, int, int]:
        response = client.get(f"{path}?at={_at(moment)}")
        assert response.status_code == 200, response.text
        body = response.json()
        assert datetime.fromisoformat(body["as_of"]) == moment
        assert "updated_at" not in body
        return body["balance_millicredits"], body["reserved_millicredits"], body["available_millicredits"]

    for client, path in ((user, "/api/credits/balance"), (admin, "/api/admin/credits/users/u1/balance")):
        assert balance(client, path, before) == (0, 0, 0)
        assert balance(client, path, funded_at) == (500_000, 0, 500_000)
        assert balance(client, path, held_at) == (500_000, 10_000, 490_000)
        assert balance(client, path, after) == (498_000, 10_000, 488_000)
        # The hold expires 60 s after it was made, with no event; as of then it no longer counts.
        gateway.clock.advance(seconds=120)
        assert balance(client, path, after + timedelta(seconds=61)) == (498_000, 0, 498_000)
        future = client.get(f"{path}?at={_at(gateway.clock() + timedelta(seconds=5))}")
        assert future.status_code == 422, future.text
        gateway.clock.advance(seconds=-120)
    assert "as_of" not in user.get("/api/credits/balance").json()


def test_a_statement_adds_up_as_json_and_as_csv(gateway: Gateway) -> None:
    admin, user = gateway.client("admin", "ops-1"), gateway.client("user", "u1")
    before, _, _, after, debited = _history(gateway)
    query = f"from={_at(before)}&to={_at(after)}"
    for client, path in ((user, "/api/credits/statement"), (admin, "/api/admin/credits/users/u1/statement")):
        response = client.get(f"{path}?{query}")
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["from"], body["to"]) == (
            before.isoformat().replace("+00:00", "Z"),
            after.isoformat().replace("+00:00", "Z"),
        )
        assert (body["opening_balance_millicredits"], body["closing_balance_millicredits"]) == (0, 498_000)
        assert [(m["kind"], m["amount_millicredits"], m["balance_after_millicredits"]) for m in body["movements"]] == [
            ("adjustment", 500_000, 500_000),
            ("reservation", -10_000, 500_000),
            ("debit", -2_000, 498_000),
        ]
        # The same movements as the history, oldest first.
        history = user.get("/api/credits/history", headers=user.last_position(debited)).json()["items"]
        assert body["movements"] == list(reversed(history))

        as_csv = client.get(f"{path}?{query}", headers={"Accept": "text/csv"})
        assert as_csv.status_code == 200, as_csv.text
        assert as_csv.headers["content-type"].startswith("text/csv")
        assert as_csv.text.endswith("\r\n") and "\n" not in as_csv.text.replace("\r\n", "")
        rows = list(csv.reader(io.StringIO(as_csv.text)))
        assert rows[0] == [
            "occurred_at",
            "id",
            "kind",
            "amount_millicredits",
            "balance_after_millicredits",
            "reference",
            "description",
        ]
        assert [(r[2], r[3], r[4]) for r in rows[1:]] == [
            ("opening_balance", "", "0"),
            ("adjustment", "500000", "500000"),
            ("reservation", "-10000", "500000"),
            ("debit", "-2000", "498000"),
            ("closing_balance", "", "498000"),
        ]
        # A text cell that a spreadsheet would run as a formula is written as text; JSON keeps it as it is.
        assert (rows[2][5], rows[2][6]) == ("", "'=SUM(1), a fund")
        assert body["movements"][0]["description"] == "=SUM(1), a fund"

    # The next period opens where this one closed; a period that ends in the future is refused.
    later = user.get(f"/api/credits/statement?from={_at(after)}&to={_at(_between(gateway))}").json()
    assert later["opening_balance_millicredits"] == 498_000
    assert user.get(f"/api/credits/statement?from={_at(after)}&to={_at(before)}").status_code == 422
    future = user.get(f"/api/credits/statement?from={_at(before)}&to={_at(gateway.clock() + timedelta(minutes=1))}")
    assert future.status_code == 422
