"""The outbox's bookkeeping, each pinned down deterministically.

1. A notification's status is summarised from its deliveries in the transaction that records one of them
   (``DeliveryWorker._record``); two deliveries of one notification (a webhook and an email) recorded at the
   same time summarise in turn, so the second sees the first's outcome.
2. An email says its language (``Content-Language``) on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import asyncpg
import pytest

from gateway.outbound.deliveries import _DETAILS, Claim, DeliveryWorker
from gateway.outbound.sending import Mailer, Outcome, _retry_after
from ledger.application import Ledger
from projections.notification_queries import Contact, add_endpoint, set_contact
from tests.notifications.support import (
    cross_low_balance,
    notifier,
    rows,
)


class HeldCommits:
    """A pool whose transactions, once their statements have run, wait for ``release`` before committing."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.ready = asyncio.Event()
        self.release = asyncio.Event()

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        async with self.pool.acquire() as conn:
            yield HeldConnection(conn, self)


class HeldConnection:
    def __init__(self, conn: Any, holder: HeldCommits) -> None:
        self.conn = conn
        self.holder = holder

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        async with self.conn.transaction():
            yield
            self.holder.ready.set()
            await self.holder.release.wait()


@pytest.mark.postgres
async def test_given_two_deliveries_recorded_at_once_when_both_succeed_then_the_notification_is_delivered(
    pg_ledger: Ledger, clean_database: str
) -> None:
    """Given a notification with a webhook and an email delivery, when the webhook's outcome is recorded
    and, before that commits, the email's is recorded too, then once both commit the notification is
    ``delivered`` with two attempts."""
    worker = DeliveryWorker(
        clean_database, retry_seconds=(1,), webhook_timeout_seconds=1, allow_private_networks=True, mailer=None
    )
    pool = await asyncpg.create_pool(clean_database, min_size=2, max_size=4)
    try:
        async with pool.acquire() as conn:
            await add_endpoint(conn, url="http://127.0.0.1:9/hook", event_types=["credits.low_balance"], description="")
            await set_contact(conn, Contact(user_id="fay", email="fay@example.com", locale="en"))
        cross_low_balance(pg_ledger, "fay")
        notifier(clean_database).catch_up()
        # Both claimed, as the worker claims them: under a lease each.
        records = await pool.fetch(
            "UPDATE notification_deliveries SET locked_until = now() + interval '1 minute'"
            " RETURNING id, notification_id, channel, endpoint_id, recipient, locale, round_attempts, locked_until"
        )
        webhook, mail = sorted(
            (Claim(**dict(record)) for record in records), key=lambda claim: claim.channel, reverse=True
        )
        assert (webhook.channel, mail.channel) == ("webhook", "email")
        details = await pool.fetchrow(_DETAILS, webhook.notification_id, webhook.endpoint_id)
        held = HeldCommits(pool)
        first = asyncio.create_task(
            worker._record(held, webhook, details, Outcome(delivered=True, retry=False, status=200))
        )
        await asyncio.wait_for(held.ready.wait(), 10)
        second = asyncio.create_task(
            worker._record(pool, mail, details, Outcome(delivered=True, retry=False, status=250))
        )
        for _ in range(200):  # until the second recording waits on a lock the first holds
            waiting = await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if waiting:
                break
            await asyncio.sleep(0.05)
        held.release.set()
        await asyncio.wait_for(asyncio.gather(first, second), 10)
    finally:
        await pool.close()
    assert sorted(rows(clean_database, "SELECT status FROM notification_deliveries")) == [("delivered",)] * 2
    assert rows(clean_database, "SELECT status, attempts FROM notifications") == [("delivered", 2)]


def test_given_a_contact_locale_when_an_email_is_built_then_it_says_its_language() -> None:
    """Given a recipient reading English, when the email is built and put on the wire, then its top-level
    ``Content-Language`` is ``en``."""
    mailer = Mailer("smtp://127.0.0.1:25", mail_from="ledger@example.com", public_url="http://x", timeout_seconds=1)
    message = mailer.message(
        delivery_id=uuid4(),
        recipient="gil@example.com",
        locale="en",
        notification_type="credits.low_balance",
        data={"user_id": "gil", "available_millicredits": 1_000, "threshold_millicredits": 200_000},
        occurred_at=datetime.now(UTC),
    )
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == "Your credit balance is low"
    assert parsed["Content-Language"] == "en"


@pytest.mark.postgres
async def test_given_a_try_that_outlived_its_lease_when_it_is_recorded_then_nothing_changes(
    pg_ledger: Ledger, clean_database: str
) -> None:
    """Given a delivery claimed, whose lease ran out and which was claimed again, when the first try's outcome
    arrives, then it records nothing: neither the delivery, nor its notification, nor the counters."""
    worker = DeliveryWorker(
        clean_database, retry_seconds=(1,), webhook_timeout_seconds=1, allow_private_networks=True, mailer=None
    )
    pool = await asyncpg.create_pool(clean_database, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await add_endpoint(conn, url="http://127.0.0.1:9/hook", event_types=["*"], description="")
        cross_low_balance(pg_ledger, "hal")
        notifier(clean_database).catch_up()
        claim_sql = (
            "UPDATE notification_deliveries SET locked_until = now() + interval '1 minute'"
            " RETURNING id, notification_id, channel, endpoint_id, recipient, locale, round_attempts, locked_until"
        )
        first = Claim(**dict((await pool.fetch(claim_sql))[0]))
        second = Claim(**dict((await pool.fetch(claim_sql))[0]))  # Taken again: another lease.
        details = await pool.fetchrow(_DETAILS, first.notification_id, first.endpoint_id)
        await worker._record(pool, first, details, Outcome(delivered=True, retry=False, status=200))
        assert rows(clean_database, "SELECT status, attempts FROM notification_deliveries") == [("pending", 0)]
        assert rows(clean_database, "SELECT count(*) FROM notification_counters WHERE channel = 'webhook'") == [(0,)]
        await worker._record(pool, second, details, Outcome(delivered=True, retry=False, status=200))
        assert rows(clean_database, "SELECT status, attempts FROM notification_deliveries") == [("delivered", 1)]
        assert rows(clean_database, "SELECT status FROM notifications") == [("delivered",)]
    finally:
        await pool.close()


@pytest.mark.parametrize(("header", "seconds"), [("120", 120), (" 5 ", 5), ("²", None), ("-1", None), ("9" * 30, None)])
def test_a_retry_after_header_is_taken_only_as_plain_seconds(header: str, seconds: int | None) -> None:
    assert _retry_after(header) == seconds
