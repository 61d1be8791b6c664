"""The notifier's rules: given events in the log, when the notifier follows it, then these notifications.

Each rule fires once per cause: replaying the log, or a second notifier, creates nothing twice.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest

from ledger.application import Ledger
from ledger.commands import (
    AdjustCredits,
    ChangeBillingSettings,
    DebitUsage,
    GrantCredits,
    InitializeAccount,
    ReserveCredits,
    RevokeCredits,
)
from projections.notifier import Notifier
from projections.notifier_state import NotifierState
from projections.outbox import Outbox, Recipients
from projections.runner import ProjectionRunner
from projections.worker import all_runners
from tests.conftest import T0

pytestmark = pytest.mark.postgres


def notify(url: str) -> list[tuple[str, str | None, dict[str, Any]]]:
    """Let the notifier catch up; every notification so far, oldest first: (type, user, data)."""
    ProjectionRunner(url, Notifier(Outbox())).catch_up()
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT type, user_id, data FROM notifications ORDER BY seq").fetchall()


def grant(ledger: Ledger, user: str, millicredits: int, *, at: Any = T0, source: Any = "promotional") -> None:
    ledger.grant_credits(
        GrantCredits(user_id=user, amount_millicredits=millicredits, source=source, reference="ref"),
        idempotency=None,
        now=at,
    )


def debit(ledger: Ledger, user: str, tokens: int, *, at: Any = T0) -> None:
    ledger.debit_usage(DebitUsage(user_id=user, tokens=tokens, occurred_at=at), idempotency=None, now=at)


def test_low_balance_fires_once_per_downward_crossing_and_is_armed_again_above(
    pg_ledger: Ledger, clean_database: str
) -> None:
    url = clean_database
    grant(pg_ledger, "ana", 300_000)
    debit(pg_ledger, "ana", 50_000)  # 250,000 left: above the default 200,000.
    assert notify(url) == []
    debit(pg_ledger, "ana", 60_000)  # 190,000: falls below.
    debit(pg_ledger, "ana", 10_000)  # 180,000: still below, nothing new.
    assert notify(url) == [
        (
            "credits.low_balance",
            "ana",
            {"user_id": "ana", "available_millicredits": 190_000, "threshold_millicredits": 200_000},
        )
    ]
    grant(pg_ledger, "ana", 100_000)  # 280,000: armed again.
    debit(pg_ledger, "ana", 90_000)  # 190,000: a second crossing.
    assert [kind for kind, _, _ in notify(url)] == ["credits.low_balance", "credits.low_balance"]


def test_a_hold_counts_against_the_available_balance(pg_ledger: Ledger, clean_database: str) -> None:
    grant(pg_ledger, "bia", 250_000)
    pg_ledger.reserve_credits(ReserveCredits(user_id="bia", estimated_tokens=100_000), idempotency=None, now=T0)
    found = notify(clean_database)
    assert [(kind, data["available_millicredits"]) for kind, _, data in found] == [("credits.low_balance", 150_000)]


def test_the_threshold_is_a_billing_setting(pg_ledger: Ledger, clean_database: str) -> None:
    pg_ledger.change_billing_settings(
        ChangeBillingSettings(changes={"low_balance_threshold_millicredits": 1_000}, changed_by="ops"), now=T0
    )
    grant(pg_ledger, "caio", 250_000)
    debit(pg_ledger, "caio", 200_000)  # 50,000 left: above 1,000.
    assert notify(clean_database) == []
    pg_ledger.adjust_credits(
        AdjustCredits(user_id="caio", amount_millicredits=-49_500, reason="fix", admin_id="ops"),
        idempotency=None,
        now=T0,
    )
    found = notify(clean_database)
    assert [(kind, data["available_millicredits"], data["threshold_millicredits"]) for kind, _, data in found] == [
        ("credits.low_balance", 500, 1_000)
    ]


def test_welcome_credits_and_a_clawback_each_notify_the_user(pg_ledger: Ledger, clean_database: str) -> None:
    pg_ledger.change_billing_settings(ChangeBillingSettings(changes={"welcome_credits": 500}, changed_by="ops"), now=T0)
    pg_ledger.initialize_account(InitializeAccount(user_id="dani"), idempotency=None, now=T0)
    pg_ledger.revoke_credits(
        RevokeCredits(user_id="dani", amount_millicredits=1_000, reason="refund", reference="re_1"),
        idempotency=None,
        now=T0,
    )
    found = notify(clean_database)
    assert found == [
        ("credits.welcome_granted", "dani", {"user_id": "dani", "granted_millicredits": 500_000}),
        (
            "credits.clawed_back",
            "dani",
            {
                "user_id": "dani",
                "clawed_back_millicredits": 1_000,
                "reason": "refund",
                "checkout_session_id": None,
                "reference": "re_1",
            },
        ),
    ]


def test_unusual_consumption_against_the_users_own_week(pg_ledger: Ledger, clean_database: str) -> None:
    pg_ledger.change_billing_settings(
        ChangeBillingSettings(
            changes={
                "unusual_consumption_factor": 5,
                "unusual_consumption_min_tokens": 10_000,
                "hourly_token_limit": 400_000,
            },
            changed_by="ops",
        ),
        now=T0,
    )
    start = T0 + timedelta(days=1)
    grant(pg_ledger, "eva", 100_000_000, at=start)
    # A steady week: 1,000 tokens an hour.
    for hour in range(2, 7 * 24 + 2):
        debit(pg_ledger, "eva", 1_000, at=start + timedelta(hours=hour))
    assert [kind for kind, _, _ in notify(clean_database) if kind.startswith("alert.")] == []
    now = start + timedelta(hours=7 * 24 + 3, minutes=30)
    debit(pg_ledger, "eva", 4_000, at=now)  # 5,000 in the last hour: not at the minimum of 10,000.
    debit(pg_ledger, "eva", 20_000, at=now + timedelta(minutes=1))  # 24,000: 24 times the average.
    debit(pg_ledger, "eva", 20_000, at=now + timedelta(minutes=2))  # Still unusual: nothing new.
    alerts = [data for kind, _, data in notify(clean_database) if kind == "alert.unusual_consumption"]
    assert alerts == [
        {
            "user_id": "eva",
            "tokens_last_hour": 24_000,
            "hourly_average_tokens": 1_000,
            "factor": 5,
            "min_tokens": 10_000,
        }
    ]


def test_usage_reported_late_counts_in_the_week_it_happened_even_within_one_batch(
    pg_ledger: Ledger, clean_database: str
) -> None:
    limits = {"hourly_token_limit": 10**9, "daily_token_limit": 10**9}
    changes = {"unusual_consumption_factor": 5, "unusual_consumption_min_tokens": 10_000, **limits}
    pg_ledger.change_billing_settings(ChangeBillingSettings(changes=changes, changed_by="ops"), now=T0)
    start = T0 + timedelta(days=1)
    grant(pg_ledger, "ivo", 10**12, at=start)
    for hour in range(2, 7 * 24 + 2):  # A steady week: 1,000 tokens an hour.
        debit(pg_ledger, "ivo", 1_000, at=start + timedelta(hours=hour))
    now = start + timedelta(hours=7 * 24 + 3, minutes=30)
    debit(pg_ledger, "ivo", 9_000, at=now)  # Under the minimum: the week is summed here.
    # Usage of every hour of that week, reported now (each, in its own hour, under the minimum): the week's
    # average becomes 6,000 tokens an hour.
    for hour in range(2, 7 * 24 + 2):
        pg_ledger.debit_usage(
            DebitUsage(user_id="ivo", tokens=5_000, occurred_at=start + timedelta(hours=hour, minutes=59)),
            idempotency=None,
            now=now + timedelta(minutes=1),
        )
    debit(pg_ledger, "ivo", 20_000, at=now + timedelta(minutes=2))  # 29,000: under 5 times 6,000.
    # All of it in one batch: the week summed before the late usage arrived must count it.
    assert [kind for kind, _, _ in notify(clean_database) if kind == "alert.unusual_consumption"] == []


def test_sales_pause_and_resume_are_states_each_told_once(pg_ledger: Ledger, clean_database: str) -> None:
    settings = pg_ledger.billing_settings()
    limit_millicredits = settings.api_monthly_limit_tokens * 1_000 // settings.tokens_per_credit
    over = limit_millicredits * settings.alert_threshold_percent // 100
    assert pg_ledger.evaluate_sales(circulation_millicredits=over, smallest_package_credits=100, now=T0)
    assert not pg_ledger.evaluate_sales(circulation_millicredits=over, smallest_package_credits=100, now=T0)
    # The limit doubles: sales resume and the API-usage alert clears, without anyone trying to buy.
    pg_ledger.change_billing_settings(
        ChangeBillingSettings(
            changes={"api_monthly_limit_tokens": settings.api_monthly_limit_tokens * 2}, changed_by="ops"
        ),
        now=T0,
    )
    assert pg_ledger.evaluate_sales(circulation_millicredits=over, smallest_package_credits=100, now=T0)
    found = [(kind, data) for kind, _, data in notify(clean_database) if kind.startswith("alert.")]
    assert [kind for kind, _ in found] == ["alert.sales_paused", "alert.api_usage_threshold", "alert.sales_resumed"]
    assert found[1][1]["api_usage_basis_points"] == settings.alert_threshold_percent * 100


def test_replaying_the_log_creates_nothing_twice(pg_ledger: Ledger, clean_database: str) -> None:
    url = clean_database
    grant(pg_ledger, "fabi", 300_000)
    debit(pg_ledger, "fabi", 150_000)
    first = notify(url)
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE projection_positions SET position = 0 WHERE name = 'notifier'")
        conn.execute("TRUNCATE notifier_accounts, notifier_usage_hours")
    assert notify(url) == first
    assert len(first) == 1


def test_history_before_the_go_live_position_notifies_nobody(pg_ledger: Ledger, clean_database: str) -> None:
    url = clean_database
    grant(pg_ledger, "gil", 300_000)
    debit(pg_ledger, "gil", 150_000)
    with psycopg.connect(url) as conn:
        head = conn.execute("SELECT max(notification_id) FROM ledger_events").fetchone()
        conn.execute(
            "INSERT INTO notifier_state (name, settings, live_from) VALUES ('all', '{}', %s)"
            " ON CONFLICT (name) DO UPDATE SET live_from = EXCLUDED.live_from",
            (head[0] if head else 0,),
        )
    assert notify(url) == []
    grant(pg_ledger, "gil", 100_000)
    debit(pg_ledger, "gil", 150_000)  # The crossing after going live is told.
    assert [kind for kind, _, _ in notify(url)] == ["credits.low_balance"]


def test_a_rebuild_of_the_views_never_touches_the_outbox(clean_database: str) -> None:
    assert "notifier" not in {runner.projection.name for runner in all_runners(clean_database)}


def test_email_goes_to_the_users_contact_and_alerts_to_the_operators(pg_ledger: Ledger, clean_database: str) -> None:
    url = clean_database
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO contacts (user_id, email, locale) VALUES ('hana', 'hana@example.com', 'en')")
    grant(pg_ledger, "hana", 300_000)
    debit(pg_ledger, "hana", 150_000)
    pg_ledger.evaluate_sales(circulation_millicredits=10**12, smallest_package_credits=100, now=T0)
    outbox = Outbox(Recipients(email_enabled=True, alert_emails=("ops@example.com",), alert_locale="pt-BR"))
    ProjectionRunner(url, Notifier(outbox)).catch_up()
    with psycopg.connect(url) as conn:
        deliveries = conn.execute(
            "SELECT type, channel, recipient, locale FROM notification_deliveries ORDER BY seq, recipient"
        ).fetchall()
    assert deliveries == [
        ("credits.low_balance", "email", "hana@example.com", "en"),
        ("alert.sales_paused", "email", "ops@example.com", "pt-BR"),
        ("alert.api_usage_threshold", "email", "ops@example.com", "pt-BR"),
    ]


def _notifier_outcome(url: str) -> list[list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return [
            conn.execute(sql).fetchall()
            for sql in (
                "SELECT id, type, user_id, cause, log_position, data FROM notifications ORDER BY log_position, id",
                "SELECT * FROM notifier_accounts ORDER BY account_id",
                "SELECT * FROM notifier_usage_hours ORDER BY user_id, hour",
                "SELECT settings, live_from FROM notifier_state",
            )
        ]


def _replay_notifier(url: str, notifier: Notifier, batch_size: int) -> list[list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE projection_positions SET position = 0 WHERE name = 'notifier'")
        conn.execute("TRUNCATE notification_deliveries, notifications, notifier_accounts, notifier_usage_hours")
    ProjectionRunner(url, notifier, batch_size=batch_size).catch_up()
    return _notifier_outcome(url)


def test_what_the_notifier_keeps_in_memory_changes_nothing_it_creates_or_stores(
    pg_ledger: Ledger, clean_database: str
) -> None:
    """Given a log with low balances, unusual usage and more than a week of hours (so old hours are
    deleted), when notifiers that keep everything, almost nothing, or the default in memory follow it in
    batches of different sizes, then each creates the same notifications and leaves the same state."""
    changes = {"unusual_consumption_factor": 3, "unusual_consumption_min_tokens": 2_000, "hourly_token_limit": 10**6}
    pg_ledger.change_billing_settings(ChangeBillingSettings(changes=changes, changed_by="ops"), now=T0)
    start = T0 + timedelta(days=1)
    for user, millicredits in (("gil", 250_000), ("hana", 60_000_000), ("ines", 250_000)):
        grant(pg_ledger, user, millicredits, at=start)
    for hour in range(2, 9 * 24, 5):
        for n, user in enumerate(("gil", "hana", "ines")):
            tokens = 25_000 if hour % 40 == n else 1_000
            debit(pg_ledger, user, tokens, at=start + timedelta(hours=hour, minutes=n))
    one_batch = _replay_notifier(clean_database, Notifier(Outbox()), batch_size=10_000)
    kinds = {row[1] for row in one_batch[0]}
    assert {"credits.low_balance", "alert.unusual_consumption"} <= kinds
    in_memory = _replay_notifier(clean_database, Notifier(Outbox()), batch_size=7)
    small = NotifierState(most_accounts=1, most_usage_hours=1)
    from_tables = _replay_notifier(clean_database, Notifier(Outbox(), small), batch_size=7)
    assert in_memory == from_tables
    # Which past hours are kept depends on the batches (each deletes those a week before its first usage).
    assert len(in_memory[2]) < len(one_batch[2]) == 3 * len(range(2, 9 * 24, 5))
    assert [found for n, found in enumerate(in_memory) if n != 2] == [
        found for n, found in enumerate(one_batch) if n != 2
    ]
