"""The notifier: follows the log like a projection and turns events into notifications by rules.

It runs on the projection runner with its own position (one active, the others standing by), but it is
not a view: ``ledger rebuild`` never replays it, and what it creates is never removed. The rules need a
little state of their own (each account's available balance and whether its low-balance notice is armed,
the checkouts seen, each user's hourly usage, the billing settings), kept in its own tables at its own
position, and written in the batch's transaction together with the notifications: a crash rolls back
both, and the batch applied again derives the same ids (``projections.notices``). The tables and the copy
of them the notifier keeps in memory are ``projections.notifier_state``.

The rules:
- ``credits.low_balance`` when an account's available balance (balance less open holds) falls below the
  billing config's ``low_balance_threshold_millicredits`` while armed; it is armed again once the
  available balance is back at or above the threshold. One notice per downward crossing, whatever the
  event that made it (usage, a hold, a removal, a clawback).
- ``alert.unusual_consumption`` when a user's tokens in the last hour reach ``unusual_consumption_factor``
  times their hourly average over the seven days before, and at least ``unusual_consumption_min_tokens``;
  armed again when a later usage finds it back under; a user with no usage in that week has no normal
  level yet and is never unusual. The last hour is the current clock hour plus the
  part of the previous one still inside the window, pro rata (hourly buckets keep the state small).
- One notice per event for purchases, failed payments, clawbacks, welcome credits, and the billing
  config's sales and API-usage states (which the ledger records as events when they change).

Events at or before the notifier's go-live position (``notifier_state.live_from``, the log's head when
the migration ran) update the state and notify nobody: history that predates the notifier stays quiet.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final
from uuid import UUID

import msgspec
import psycopg

from ledger import account_events as events
from ledger.account import CreditAccount
from ledger.config import BillingConfig, BillingSettings
from ledger.payments import Checkout, checkout_id
from projections.accounts import ProjectionError
from projections.notices import Notice, NotificationType, event_cause
from projections.notifier_state import BASELINE_HOURS, HOUR, Batch, NotifierState, Watch, purchase_grant
from projections.outbox import Outbox

# The hours of an hour's week before: from two hours back (the last hour is compared with it) to 169.
BASELINE_OFFSETS: Final = tuple(HOUR * back for back in range(2, BASELINE_HOURS + 2))
SECONDS_PER_HOUR: Final = 3_600


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _count_hour(batch: Batch, user: str, hour: datetime, tokens: int) -> None:
    """Add usage to an hour, and to the week-before sums of the hours whose week holds it."""
    user_hours = batch.hours.setdefault(user, {})
    user_hours[hour] = user_hours.get(hour, 0) + tokens
    batch.touched_hours.add((user, hour))
    for summed in batch.baseline_hours.get(user, ()):
        if summed - BASELINE_OFFSETS[-1] <= hour <= summed - BASELINE_OFFSETS[0]:
            batch.baselines[(user, summed)] += tokens


class Notifier:
    name = "notifier"
    tables: tuple[str, ...] = ()
    topic_prefix: str | tuple[str, ...] = ("ledger.CreditAccount.", "ledger.Checkout.", "ledger.BillingConfig.")

    def __init__(self, outbox: Outbox, state: NotifierState | None = None) -> None:
        self.outbox = outbox
        self.state = state or NotifierState()
        self._rules: dict[type, Callable[[Batch, int, Any], None]] = {
            CreditAccount.Opened: self._opened,
            CreditAccount.CreditsGranted: self._granted,
            CreditAccount.CreditsDebited: self._debited,
            CreditAccount.CreditsReserved: self._reserved,
            CreditAccount.ReservationSettled: self._settled,
            CreditAccount.ReservationReleased: self._hold_closed,
            CreditAccount.ReservationExpired: self._hold_closed,
            CreditAccount.CreditsRemoved: self._removed,
            CreditAccount.CreditsRevoked: self._revoked,
            CreditAccount.LotExpired: self._lot_expired,
            Checkout.Started: self._checkout_started,
            Checkout.PaymentFailed: self._payment_failed,
            BillingConfig.Seeded: self._seeded,
            BillingConfig.SettingChanged: self._setting_changed,
            BillingConfig.SalesPaused: self._sales_state,
            BillingConfig.SalesResumed: self._sales_state,
            BillingConfig.ApiUsageReachedThreshold: self._api_usage_reached,
        }

    def forget(self) -> None:
        self.state.forget()

    def apply(self, conn: psycopg.Connection[Any], events: list[tuple[int, Any]]) -> None:
        batch = self.state.load(conn, events)
        for position, event in events:
            rule = self._rules.get(type(event))
            if rule is not None:
                rule(batch, position, event)
        self.state.write(conn, batch)
        self.outbox.create(conn, [notice for notice in batch.notices if notice.position > batch.live_from])

    # The rules, one per event type.

    def _watch(self, batch: Batch, position: int, event: Any) -> Watch:
        watch = batch.accounts.get(event.originator_id)
        if watch is None:
            raise ProjectionError(f"event at position {position} for an account the notifier never saw opened")
        return watch

    def _opened(self, batch: Batch, _position: int, event: CreditAccount.Opened) -> None:
        watch = Watch(event.user_id)
        watch.low_balance_armed = watch.available_millicredits >= batch.settings.low_balance_threshold_millicredits
        batch.accounts[event.originator_id] = watch

    def _granted(self, batch: Batch, position: int, event: events.CreditsGranted) -> None:
        watch = self._watch(batch, position, event)
        watch.balance_millicredits += event.amount_millicredits
        if event.source == "welcome":
            data = {"user_id": watch.user_id, "granted_millicredits": event.amount_millicredits}
            self._notice(batch, NotificationType.WELCOME_GRANTED, position, event, data, watch.user_id)
        elif purchase_grant(event):
            # A purchase through Stripe names its checkout; one granted by a service through the API may not.
            known = batch.checkouts.get(checkout_id(event.reference or ""))
            package = known[2] if known else None
            data = {
                "user_id": watch.user_id,
                "package_id": package,
                "granted_millicredits": event.amount_millicredits,
                "checkout_session_id": event.reference,
            }
            self._notice(batch, NotificationType.PURCHASED, position, event, data, watch.user_id)
        self._balance_moved(batch, position, event, watch)

    def _debited(self, batch: Batch, position: int, event: events.CreditsDebited) -> None:
        watch = self._watch(batch, position, event)
        watch.balance_millicredits -= event.amount_millicredits
        self._balance_moved(batch, position, event, watch)
        self._used(batch, position, event, watch, event.tokens, event.occurred_at)

    def _reserved(self, batch: Batch, position: int, event: events.CreditsReserved) -> None:
        watch = self._watch(batch, position, event)
        watch.holds[event.reservation_id] = event.amount_millicredits
        self._balance_moved(batch, position, event, watch)

    def _settled(self, batch: Batch, position: int, event: events.ReservationSettled) -> None:
        watch = self._watch(batch, position, event)
        watch.holds.pop(event.reservation_id, None)
        watch.balance_millicredits -= event.amount_millicredits
        self._balance_moved(batch, position, event, watch)
        self._used(batch, position, event, watch, event.tokens, event.timestamp)

    def _hold_closed(self, batch: Batch, position: int, event: Any) -> None:
        watch = self._watch(batch, position, event)
        watch.holds.pop(event.reservation_id, None)
        self._balance_moved(batch, position, event, watch)

    def _removed(self, batch: Batch, position: int, event: events.CreditsRemoved) -> None:
        watch = self._watch(batch, position, event)
        watch.balance_millicredits -= event.amount_millicredits
        self._balance_moved(batch, position, event, watch)

    def _lot_expired(self, batch: Batch, position: int, event: events.LotExpired) -> None:
        watch = self._watch(batch, position, event)
        watch.balance_millicredits -= event.amount_millicredits
        self._balance_moved(batch, position, event, watch)

    def _revoked(self, batch: Batch, position: int, event: events.CreditsRevoked) -> None:
        watch = self._watch(batch, position, event)
        watch.balance_millicredits -= event.amount_millicredits
        # Stripe's refunds and disputes name the checkout; a service's revocation names its own reference.
        known = checkout_id(event.reference) in batch.checkouts
        data = {
            "user_id": watch.user_id,
            "clawed_back_millicredits": event.amount_millicredits,
            "reason": event.reason,
            "checkout_session_id": event.reference if known else None,
            "reference": event.reference,
        }
        self._notice(batch, NotificationType.CLAWED_BACK, position, event, data, watch.user_id)
        self._balance_moved(batch, position, event, watch)

    def _checkout_started(self, batch: Batch, _position: int, event: Checkout.Started) -> None:
        batch.checkouts[event.originator_id] = (event.session_id, event.user_id, event.package_id)
        batch.new_checkouts.append((event.originator_id, event.session_id, event.user_id, event.package_id))

    def _payment_failed(self, batch: Batch, position: int, event: Checkout.PaymentFailed) -> None:
        session, user, package = self._checkout(batch, event.originator_id, position)
        data = {"user_id": user, "package_id": package, "checkout_session_id": session}
        self._notice(batch, NotificationType.PAYMENT_FAILED, position, event, data, user)

    def _seeded(self, batch: Batch, _position: int, event: BillingConfig.Seeded) -> None:
        batch.settings = BillingSettings.from_values(event.values)
        batch.settings_changed = True

    def _setting_changed(self, batch: Batch, _position: int, event: BillingConfig.SettingChanged) -> None:
        if event.key in BillingSettings.__struct_fields__:
            batch.settings = msgspec.structs.replace(batch.settings, **{event.key: event.new_value})
            batch.settings_changed = True

    def _sales_state(self, batch: Batch, position: int, event: Any) -> None:
        kind = (
            NotificationType.SALES_PAUSED
            if isinstance(event, BillingConfig.SalesPaused)
            else NotificationType.SALES_RESUMED
        )
        data = {
            "potential_tokens": event.potential_tokens,
            "smallest_package_tokens": event.package_tokens or 0,
            "api_monthly_limit_tokens": event.api_monthly_limit_tokens or 0,
            "alert_threshold_percent": event.alert_threshold_percent or 0,
        }
        self._notice(batch, kind, position, event, data, None)

    def _api_usage_reached(self, batch: Batch, position: int, event: BillingConfig.ApiUsageReachedThreshold) -> None:
        data = {
            "potential_tokens": event.potential_tokens,
            "api_monthly_limit_tokens": event.api_monthly_limit_tokens,
            "alert_threshold_percent": event.alert_threshold_percent,
            "api_usage_basis_points": event.potential_tokens * 10_000 // event.api_monthly_limit_tokens,
        }
        self._notice(batch, NotificationType.API_USAGE_THRESHOLD, position, event, data, None)

    # Shared steps of the rules.

    def _checkout(self, batch: Batch, checkout: UUID, position: int) -> tuple[str, str, str]:
        known = batch.checkouts.get(checkout)
        if known is None:
            raise ProjectionError(f"event at position {position} names a checkout the notifier never saw started")
        return known

    def _notice(
        self,
        batch: Batch,
        kind: NotificationType,
        position: int,
        event: Any,
        data: dict[str, Any],
        user_id: str | None,
        cause: str | None = None,
    ) -> None:
        batch.notices.append(
            Notice(
                type=kind,
                cause=cause or event_cause(event),
                position=position,
                occurred_at=event.timestamp,
                data=data,
                user_id=user_id,
            )
        )

    def _balance_moved(self, batch: Batch, position: int, event: Any, watch: Watch) -> None:
        threshold = batch.settings.low_balance_threshold_millicredits
        available = watch.available_millicredits
        if watch.low_balance_armed and available < threshold:
            watch.low_balance_armed = False
            data = {"user_id": watch.user_id, "available_millicredits": available, "threshold_millicredits": threshold}
            self._notice(batch, NotificationType.LOW_BALANCE, position, event, data, watch.user_id)
        elif not watch.low_balance_armed and available >= threshold:
            watch.low_balance_armed = True

    def _used(self, batch: Batch, position: int, event: Any, watch: Watch, tokens: int, at: datetime) -> None:
        user, hour = watch.user_id, _hour(at)
        _count_hour(batch, user, hour, tokens)
        user_hours = batch.hours[user]
        previous = user_hours.get(hour - HOUR, 0)
        seconds_left = SECONDS_PER_HOUR - int((at - hour).total_seconds())
        last_hour = user_hours[hour] + previous * seconds_left // SECONDS_PER_HOUR
        baseline = batch.baselines.get((user, hour))
        if baseline is None:
            # Over the hours the user has, not the window's 168: most users used few of them.
            first, last = hour - BASELINE_OFFSETS[-1], hour - BASELINE_OFFSETS[0]
            baseline = sum(tokens for used, tokens in user_hours.items() if first <= used <= last)
            batch.baselines[(user, hour)] = baseline
            batch.baseline_hours.setdefault(user, []).append(hour)
        settings = batch.settings
        # Exact in integers: last_hour >= factor * baseline / 168.
        # A user with no usage in the week before has no normal level to compare with yet.
        unusual = (
            baseline > 0
            and last_hour >= settings.unusual_consumption_min_tokens
            and last_hour * BASELINE_HOURS >= settings.unusual_consumption_factor * baseline
        )
        if unusual and watch.unusual_armed:
            watch.unusual_armed = False
            data = {
                "user_id": user,
                "tokens_last_hour": last_hour,
                "hourly_average_tokens": baseline // BASELINE_HOURS,
                "factor": settings.unusual_consumption_factor,
                "min_tokens": settings.unusual_consumption_min_tokens,
            }
            self._notice(batch, NotificationType.UNUSUAL_CONSUMPTION, position, event, data, user)
        elif not unusual:
            watch.unusual_armed = True
