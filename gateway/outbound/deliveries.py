"""The delivery worker: claims due deliveries from the outbox, sends them, records each try.

At least once, with the same id every time. A delivery is claimed with a lease (``locked_until``) under
``FOR UPDATE SKIP LOCKED``, so several workers (one in each process that runs the projections) share the
work, and a worker that dies mid-send leaves its claims to be taken again when the lease runs out. The send
happens outside any transaction; its outcome is recorded in one transaction with the notification's
status and the counters /metrics reads.

No receiver holds up another: at most ``PER_TARGET`` deliveries to one endpoint or address are in flight
at once, every send is bounded by its timeout, and one user's deliveries to one target go out one at a
time in order of creation (a later one waits for the earlier one to be delivered or to fail for good,
without backing off itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg
import msgspec

from gateway.outbound.addresses import guarded_client
from gateway.outbound.sending import Mailer, Outcome, send_webhook, webhook_body
from projections.outbox import DEFAULT_LOCALE, DELIVERIES_CHANNEL, LATENCY_BUCKETS_MS
from projections.recovery import Backoff

log = logging.getLogger(__name__)

CONCURRENCY: Final = 32
PER_TARGET: Final = 16
IDLE_SECONDS: Final = 1.0
JITTER: Final = 0.2

_CLAIM: Final = """
WITH ranked AS (
    SELECT d.id, d.locked_until > now() AS leased,
           row_number() OVER (
               PARTITION BY d.channel, d.endpoint_id, d.recipient
               ORDER BY d.locked_until > now() DESC NULLS LAST, d.next_attempt_at, d.seq
           ) AS place
    FROM notification_deliveries AS d
    WHERE d.status = 'pending'
      AND (d.next_attempt_at <= now() OR d.locked_until > now())
      AND (d.order_key IS NULL OR NOT EXISTS (
          SELECT 1 FROM notification_deliveries AS e
          WHERE e.order_key = d.order_key AND e.status = 'pending' AND e.seq < d.seq))
), picked AS (
    SELECT r.id FROM ranked AS r JOIN notification_deliveries AS d USING (id)
    WHERE r.place <= $2 AND NOT coalesce(r.leased, false)
    ORDER BY d.next_attempt_at, d.seq LIMIT $1
), locked AS (
    SELECT d.id FROM notification_deliveries AS d JOIN picked USING (id)
    WHERE d.status = 'pending' AND (d.locked_until IS NULL OR d.locked_until <= now())
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE notification_deliveries AS d SET locked_until = now() + make_interval(secs => $3)
FROM locked WHERE d.id = locked.id
RETURNING d.id, d.notification_id, d.channel, d.endpoint_id, d.recipient, d.locale, d.round_attempts, d.locked_until
"""

_DETAILS: Final = """
SELECT n.id, n.type, n.occurred_at, n.data, e.url, e.secret, e.deleted_at
FROM notifications AS n LEFT JOIN webhook_endpoints AS e ON e.id = $2
WHERE n.id = $1
"""

_RECORD: Final = """
UPDATE notification_deliveries SET attempts = attempts + 1, round_attempts = round_attempts + 1,
    locked_until = NULL, status = $2, next_attempt_at = $3, last_status = $4, last_error = $5,
    delivered_at = CASE WHEN $2 = 'delivered' THEN now() END
WHERE id = $1 AND status = 'pending' AND locked_until = $6
"""

_SUMMARISE: Final = """
UPDATE notifications AS n SET status = s.status, attempts = s.attempts,
    last_error = CASE WHEN $2::text IS NOT NULL THEN $2 WHEN s.status = 'delivered' THEN NULL ELSE n.last_error END
FROM (
    SELECT CASE WHEN bool_or(status = 'pending') THEN 'pending'
                WHEN bool_or(status = 'failed') THEN 'failed' ELSE 'delivered' END AS status,
           sum(attempts)::int AS attempts
    FROM notification_deliveries WHERE notification_id = $1
) AS s
WHERE n.id = $1
"""

_COUNT: Final = """
INSERT INTO notification_counters (type, channel, name, count) VALUES ($1, $2, $3, $4)
ON CONFLICT (type, channel, name) DO UPDATE SET count = notification_counters.count + EXCLUDED.count
"""


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    id: Any
    notification_id: Any
    channel: str
    endpoint_id: Any
    recipient: str | None
    locale: str | None
    round_attempts: int
    # The lease this claim holds: an outcome is recorded only under it, so a try that outlived its lease
    # (and was taken again) records nothing.
    locked_until: datetime


def latency_bucket(milliseconds: int) -> str:
    for bound in LATENCY_BUCKETS_MS:
        if milliseconds <= bound:
            return f"le_{bound}"
    return "le_inf"


class DeliveryWorker:
    def __init__(
        self,
        database_url: str,
        *,
        retry_seconds: tuple[int, ...],
        webhook_timeout_seconds: float,
        allow_private_networks: bool,
        mailer: Mailer | None,
        concurrency: int = CONCURRENCY,
    ) -> None:
        self.database_url = database_url
        self.retry_seconds = retry_seconds
        self.webhook_timeout_seconds = webhook_timeout_seconds
        self.allow_private_networks = allow_private_networks
        self.mailer = mailer
        self.concurrency = concurrency
        self.lease_seconds = webhook_timeout_seconds * 3 + 30
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    # Running in a thread of its own, beside the projections.

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="notification-deliveries", daemon=True)
        self._thread.start()
        self._started.wait(5)

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = stopping = asyncio.Event()
        self._started.set()
        backoff = Backoff()
        client = guarded_client(timeout_seconds=self.webhook_timeout_seconds, allow_private=self.allow_private_networks)
        try:
            while not stopping.is_set():
                try:
                    await self._serve(client, backoff, stopping)
                except Exception as fault:
                    # A sender never stops: it waits and tries again. The database away or restarting
                    # (asyncpg has a dozen errors for that) is the usual cause;
                    # anything else is logged whole. Claims held are leased, so nothing is lost meanwhile.
                    if isinstance(fault, OSError | asyncpg.PostgresError | asyncpg.InterfaceError | TimeoutError):
                        log.warning(
                            "notification deliveries lost the database (%s); trying again", type(fault).__name__
                        )
                    else:
                        log.exception("notification deliveries stopped on an error; trying again")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), backoff.next_seconds())
        finally:
            await client.aclose()

    async def _serve(self, client: Any, backoff: Backoff, stopping: asyncio.Event) -> None:
        wake = asyncio.Event()
        pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=4, timeout=5)
        listener = await asyncpg.connect(self.database_url, timeout=5)
        tasks: set[asyncio.Task[None]] = set()
        try:
            await listener.add_listener(DELIVERIES_CHANNEL, lambda *_: wake.set())
            while not stopping.is_set():
                free = self.concurrency - len(tasks)
                claims: list[Claim] = []
                if free > 0:
                    wake.clear()
                    rows = await pool.fetch(_CLAIM, free, PER_TARGET, self.lease_seconds)
                    claims = [Claim(**dict(row)) for row in rows]
                    backoff.reset()
                for claim in claims:
                    task = asyncio.create_task(self._deliver(pool, client, claim))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    task.add_done_callback(lambda _: wake.set())
                if claims and len(tasks) < self.concurrency:
                    continue
                waiter = asyncio.create_task(wake.wait())
                stopper = asyncio.create_task(stopping.wait())
                await asyncio.wait({waiter, stopper}, timeout=IDLE_SECONDS, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
        finally:
            if tasks:
                await asyncio.wait(tasks, timeout=self.webhook_timeout_seconds + 1)
            await listener.close()
            await pool.close()

    async def _deliver(self, pool: Any, client: Any, claim: Claim) -> None:
        try:
            details = await pool.fetchrow(_DETAILS, claim.notification_id, claim.endpoint_id)
            try:
                # Bounded as a whole, well within the lease: a receiver trickling its answer cannot hold it.
                async with asyncio.timeout(self.webhook_timeout_seconds * 2):
                    outcome = await self._send(client, claim, details)
            except TimeoutError:
                outcome = Outcome(delivered=False, retry=True, error="timed out")
            except Exception as error:  # A try that failed in our own code still counts, so it cannot go round forever.
                log.exception("delivery %s could not be sent", claim.id)
                outcome = Outcome(delivered=False, retry=True, error=f"could not be sent: {type(error).__name__}")
            await self._record(pool, claim, details, outcome)
        except Exception:  # The database went away: the claim's lease runs out and another try takes it.
            log.exception("delivery %s could not be recorded", claim.id)

    async def _send(self, client: Any, claim: Claim, details: Any) -> Outcome:
        data = msgspec.json.decode(details["data"]) if isinstance(details["data"], str) else details["data"]
        if claim.channel == "webhook":
            if details["url"] is None or details["deleted_at"] is not None:
                return Outcome(delivered=False, retry=False, error="the endpoint was deleted")
            body = webhook_body(details["type"], details["occurred_at"], data)
            return await send_webhook(
                client, url=details["url"], secret=details["secret"], notification_id=details["id"], body=body
            )
        if self.mailer is None:
            return Outcome(delivered=False, retry=False, error="email is off: LEDGER_SMTP_URL is not set")
        if claim.recipient is None:
            return Outcome(delivered=False, retry=False, error="the contact was erased")
        message = self.mailer.message(
            delivery_id=claim.id,
            recipient=claim.recipient,
            locale=claim.locale or DEFAULT_LOCALE,
            notification_type=details["type"],
            data=data,
            occurred_at=details["occurred_at"],
        )
        return await self.mailer.send(message)

    async def _record(self, pool: Any, claim: Claim, details: Any, outcome: Outcome) -> None:
        now = datetime.now(UTC)
        tries = claim.round_attempts + 1
        status = "delivered" if outcome.delivered else "failed"
        next_attempt = now
        if not outcome.delivered and outcome.retry and tries <= len(self.retry_seconds):
            status = "pending"
            planned = self.retry_seconds[tries - 1] * random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311
            if outcome.retry_after_seconds is not None:
                # The receiver's wish, within reason: never sooner than planned, nor more than twice as late.
                planned = min(max(planned, outcome.retry_after_seconds), planned * 2)
            next_attempt = datetime.fromtimestamp(now.timestamp() + planned, UTC)
        kind, channel = details["type"], claim.channel
        async with pool.acquire() as conn, conn.transaction():
            # The notification's row first: two of its deliveries finishing at once then summarise in turn.
            await conn.execute("SELECT 1 FROM notifications WHERE id = $1 FOR UPDATE", claim.notification_id)
            recorded = await conn.execute(
                _RECORD,
                claim.id,
                status,
                next_attempt,
                outcome.status,
                None if outcome.delivered else outcome.error,
                claim.locked_until,
            )
            if recorded != "UPDATE 1":
                return  # The lease ran out and the delivery was taken again: that try records its own outcome.
            await conn.execute(_SUMMARISE, claim.notification_id, None if outcome.delivered else outcome.error)
            if status == "delivered":
                latency_ms = max(int((now - details["occurred_at"]).total_seconds() * 1000), 0)
                await conn.executemany(
                    _COUNT,
                    [
                        (kind, channel, "delivered", 1),
                        (kind, channel, latency_bucket(latency_ms), 1),
                        (kind, channel, "latency_sum_ms", latency_ms),
                    ],
                )
            elif status == "failed":
                await conn.execute(_COUNT, kind, channel, "failed", 1)
        if status != "delivered":
            log.info("delivery %s (%s) not delivered: %s; now %s", claim.id, kind, outcome.error, status)
