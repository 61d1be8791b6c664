"""What the service tells people: the notification types, and the record of one notification to create.

A notification's id is derived from its type and its cause (an event's stream and version, or a window of
refused Stripe webhooks), so whoever derives it again (a notifier replaying a batch after a crash, a
standby taking over) derives the same id, and the database keeps the first.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Final
from uuid import UUID, uuid5

import msgspec

from ledger.ids import NAMESPACE

NOTIFICATIONS_NAMESPACE: Final = uuid5(NAMESPACE, "notifications")


class NotificationType(enum.StrEnum):
    LOW_BALANCE = "credits.low_balance"
    PURCHASED = "credits.purchased"
    PAYMENT_FAILED = "payment.failed"
    CLAWED_BACK = "credits.clawed_back"
    WELCOME_GRANTED = "credits.welcome_granted"
    API_USAGE_THRESHOLD = "alert.api_usage_threshold"
    SALES_PAUSED = "alert.sales_paused"
    SALES_RESUMED = "alert.sales_resumed"
    WEBHOOK_FAILURES = "alert.webhook_failures"
    UNUSUAL_CONSUMPTION = "alert.unusual_consumption"

    @property
    def is_alert(self) -> bool:
        """Alerts go to the operators (the endpoints and LEDGER_ALERT_EMAILS); the rest to the user too."""
        return self.value.startswith("alert.")


NOTIFICATION_TYPES: Final = tuple(kind.value for kind in NotificationType)


class Notice(msgspec.Struct, frozen=True, kw_only=True):
    """One notification to create. ``user_id`` is set for every type about one user, alerts included."""

    type: NotificationType
    cause: str
    position: int
    occurred_at: datetime
    data: dict[str, Any]
    user_id: str | None = None

    @property
    def id(self) -> UUID:
        return uuid5(NOTIFICATIONS_NAMESPACE, f"{self.type.value}:{self.cause}")


def event_cause(event: Any) -> str:
    """The cause of a notification made by one event: its stream and version, which no replay changes."""
    return f"event:{event.originator_id}:{event.originator_version}"
