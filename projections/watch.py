"""The system watch: keeps the states that depend on figures of the whole system, and the alerts on
Stripe's webhooks.

- Sales paused and the API-usage alert are states of the billing configuration. Whenever the figures they
  depend on move (credits in circulation, the smallest package on sale, the limit, the threshold, tokens
  per credit, as the views show them), the watch asks the ledger to judge them again; the ledger records
  an event only when a state changes, so asking twice changes nothing.
- Stripe webhooks refused or failing are counted per five-minute window (the gateway records each one); a
  window over the threshold makes one ``alert.webhook_failures``, its id derived from the window.

It wakes on the log's notifications, and at least every ``POLL_SECONDS``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

import psycopg

from ledger.config import BillingSettings, judge_sales
from projections.listening import Listener
from projections.notices import Notice, NotificationType
from projections.outbox import Outbox
from projections.recovery import CONNECTION_FAULTS, Backoff, describe_fault
from projections.standby import connect, stand_by

log = logging.getLogger(__name__)

POLL_SECONDS: Final = 1.0
MIN_INTERVAL_SECONDS: Final = 0.1
FAILURE_WINDOW: Final = timedelta(minutes=5)
DEFAULT_FAILURE_THRESHOLD: Final = 5
# Failures are kept a day: long enough to look into, short enough that the table stays small.
FAILURE_RETENTION: Final = timedelta(days=1)
PRUNE_EVERY: Final = timedelta(hours=1)

_FIGURES: Final = (
    "SELECT (SELECT coalesce(max(credits_in_circulation_millicredits), 0) FROM account_totals),"
    " (SELECT coalesce(min(credits), 0) FROM credit_packages WHERE active),"
    " (SELECT coalesce(jsonb_object_agg(key, value), '{}') FROM billing_config)"
)


_FAILURES: Final = (
    "WITH w AS (SELECT date_bin(%s, now(), timestamptz '1970-01-01') AS start)"
    " SELECT w.start, (SELECT count(*) FROM stripe_webhook_failures WHERE at >= w.start),"
    " (SELECT coalesce(max(notification_id), 0) FROM ledger_events) FROM w"
)


class SalesJudge(Protocol):
    def evaluate_sales(
        self, *, circulation_millicredits: int, smallest_package_credits: int, now: datetime
    ) -> bool: ...


class SystemWatch:
    name = "system-watch"

    def __init__(
        self,
        database_url: str,
        ledger: SalesJudge,
        outbox: Outbox,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
    ) -> None:
        self.database_url = database_url
        self.ledger = ledger
        self.outbox = outbox
        self.clock = clock
        self.failure_threshold = failure_threshold
        self.active = False
        self._judged: tuple[bool, bool] | None = None
        # The last window alerted on, and when old failures were last pruned: each is done once, not each look.
        self._alerted_window: datetime | None = None
        self._pruned_at: datetime | None = None

    def run_forever(self, stop: threading.Event) -> None:
        """Stand by until this process holds the watch's lock, then look until stopped.

        The watch keeps no state of its own that an error could leave wrong, so it never stops on one: a lost
        connection, or the ledger refusing or failing for a moment, is logged and tried again after a pause.
        """
        backoff = Backoff()
        while not stop.is_set():
            try:
                self._hold_and_watch(stop, backoff)
            except CONNECTION_FAULTS as fault:
                log.warning("system watch %s; trying again", describe_fault(fault))
            except Exception:
                log.exception("system watch failed; trying again")
            finally:
                self.active = False
            self._judged = None
            stop.wait(backoff.next_seconds())

    def _hold_and_watch(self, stop: threading.Event, backoff: Backoff) -> None:
        with connect(self.database_url, "system watch") as conn:
            if not stand_by(conn, [self.name], stop, backoff):
                return
            self.active = True
            listener = Listener(conn)
            while not stop.is_set():
                listener.forget()
                self.check(conn)
                backoff.reset()
                listener.wait(POLL_SECONDS)
                # Under load the log never goes quiet: looking a few times a second is enough.
                stop.wait(MIN_INTERVAL_SECONDS)

    def check(self, conn: psycopg.Connection[Any]) -> None:
        """One look at the figures and the failure window."""
        now = self.clock()
        row = conn.execute(_FIGURES).fetchone()
        circulation, smallest, config = row or (0, 0, {})
        settings = BillingSettings.from_values(config)
        judgement = judge_sales(settings, circulation_millicredits=circulation, smallest_package_credits=smallest)
        states = (judgement.sales_paused, judgement.api_usage_reached)
        # The ledger is asked only when a state may have changed (and once at start): it judges again with
        # its own settings and records what changed, so the figures of a lagging view cannot mislead it.
        if states != self._judged:
            self.ledger.evaluate_sales(circulation_millicredits=circulation, smallest_package_credits=smallest, now=now)
            self._judged = states
        self._count_failures(conn, now)

    def _count_failures(self, conn: psycopg.Connection[Any], now: datetime) -> None:
        # The window is the database's: the failures are stamped by its clock.
        row = conn.execute(_FAILURES, (FAILURE_WINDOW,)).fetchone()
        window_start, failures, head = row or (now, 0, 0)
        if failures > self.failure_threshold and window_start != self._alerted_window:
            notice = Notice(
                type=NotificationType.WEBHOOK_FAILURES,
                cause=f"stripe-webhook-failures:{window_start.isoformat()}",
                position=head,
                occurred_at=now,
                data={
                    "failures": failures,
                    "threshold": self.failure_threshold,
                    "window_start": window_start.isoformat(),
                    "window_seconds": int(FAILURE_WINDOW.total_seconds()),
                },
            )
            with conn.transaction():
                self.outbox.create(conn, [notice])
            self._alerted_window = window_start
        if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY:
            conn.execute("DELETE FROM stripe_webhook_failures WHERE at < now() - %s", (FAILURE_RETENTION,))
            self._pruned_at = now
