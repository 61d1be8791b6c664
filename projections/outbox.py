"""The outbox: notifications stored once, each fanned out to its deliveries in the same transaction.

Who hears a notification is decided when it is created: every webhook endpoint subscribed to its type,
and by email the user's contact (for a type about one user) or the operators' addresses (for an
``alert.*``), while email is configured. A delivery's id is derived from its notification and target, so
this fan-out, too, happens once however often it runs. One user's deliveries to one target carry an
order key: the sender delivers them one at a time, in order of creation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID, uuid5

import psycopg
from psycopg.types.json import Jsonb

from projections.notices import Notice

# The channel through which the senders hear of new deliveries.
DELIVERIES_CHANNEL: Final = "ledger_notifications"
DEFAULT_LOCALE: Final = "pt-BR"
# Buckets of the delivery latency (event to receiver) in ``notification_counters``, in milliseconds.
LATENCY_BUCKETS_MS: Final = (50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 60_000, 600_000, 3_600_000, 86_400_000)


@dataclass(frozen=True)
class Recipients:
    """Where email goes: nowhere while email is off (``LEDGER_SMTP_URL`` unset)."""

    email_enabled: bool = False
    alert_emails: tuple[str, ...] = ()
    alert_locale: str = DEFAULT_LOCALE


class Outbox:
    def __init__(self, recipients: Recipients | None = None) -> None:
        self.recipients = recipients or Recipients()

    def create(self, conn: psycopg.Connection[Any], notices: list[Notice]) -> int:
        """Store the notices not stored before and their deliveries. Returns how many were new."""
        if not notices:
            return 0
        rows = conn.execute(
            "INSERT INTO notifications (id, type, user_id, cause, log_position, occurred_at, data)"
            " SELECT * FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::text[], %s::bigint[],"
            " %s::timestamptz[], %s::jsonb[]) ON CONFLICT (id) DO NOTHING RETURNING id, seq",
            (
                [n.id for n in notices],
                [n.type.value for n in notices],
                [n.user_id for n in notices],
                [n.cause for n in notices],
                [n.position for n in notices],
                [n.occurred_at for n in notices],
                [Jsonb(n.data) for n in notices],
            ),
        ).fetchall()
        created = dict(rows)
        fresh = [n for n in notices if n.id in created]
        if not fresh:
            return 0
        deliveries = self._deliveries(conn, fresh, created)
        if deliveries:
            conn.cursor().executemany(
                "INSERT INTO notification_deliveries (id, notification_id, seq, type, channel, endpoint_id,"
                " recipient, locale, order_key) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (id) DO NOTHING",
                deliveries,
            )
        counts: dict[UUID, int] = {}
        for delivery in deliveries:
            counts[delivery[1]] = counts.get(delivery[1], 0) + 1
        conn.execute(
            "UPDATE notifications AS n SET recipients = c.recipients,"
            " status = CASE WHEN c.recipients = 0 THEN 'delivered' ELSE 'pending' END"
            " FROM unnest(%s::uuid[], %s::int[]) AS c(id, recipients) WHERE n.id = c.id",
            ([n.id for n in fresh], [counts.get(n.id, 0) for n in fresh]),
        )
        created_by_type: dict[str, int] = {}
        for notice in fresh:
            created_by_type[notice.type.value] = created_by_type.get(notice.type.value, 0) + 1
        conn.cursor().executemany(
            "INSERT INTO notification_counters (type, channel, name, count) VALUES (%s, '', 'created', %s)"
            " ON CONFLICT (type, channel, name) DO UPDATE SET count = notification_counters.count + EXCLUDED.count",
            sorted(created_by_type.items()),
        )
        if deliveries:
            conn.execute(f"NOTIFY {DELIVERIES_CHANNEL}")
        return len(fresh)

    def _deliveries(
        self, conn: psycopg.Connection[Any], notices: list[Notice], seqs: dict[UUID, int]
    ) -> list[tuple[Any, ...]]:
        endpoints = conn.execute("SELECT id, event_types FROM webhook_endpoints WHERE deleted_at IS NULL").fetchall()
        recipients = self.recipients
        contacts: dict[str, tuple[str, str]] = {}
        if recipients.email_enabled:
            users = list({n.user_id for n in notices if n.user_id is not None and not n.type.is_alert})
            contacts = {
                user: (email, locale)
                for user, email, locale in conn.execute(
                    "SELECT user_id, email, locale FROM contacts WHERE user_id = ANY(%s)", (users,)
                )
            }
        rows: list[tuple[Any, ...]] = []
        for notice in notices:
            seq = seqs[notice.id]
            ordered = notice.user_id is not None and not notice.type.is_alert
            for endpoint, types in endpoints:
                if "*" in types or notice.type.value in types:
                    order_key = f"webhook:{endpoint}:{notice.user_id}" if ordered else None
                    rows.append(
                        (
                            uuid5(notice.id, f"webhook:{endpoint}"),
                            notice.id,
                            seq,
                            notice.type.value,
                            "webhook",
                            endpoint,
                            None,
                            None,
                            order_key,
                        )
                    )
            addresses: list[tuple[str, str]] = []
            if notice.type.is_alert:
                addresses = [(address, recipients.alert_locale) for address in recipients.alert_emails]
            elif notice.user_id in contacts:
                addresses = [contacts[notice.user_id]]
            for address, locale in addresses:
                order_key = f"email:{address}" if ordered else None
                rows.append(
                    (
                        uuid5(notice.id, f"email:{address}"),
                        notice.id,
                        seq,
                        notice.type.value,
                        "email",
                        None,
                        address,
                        locale,
                        order_key,
                    )
                )
        return rows
