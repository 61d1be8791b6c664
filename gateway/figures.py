"""Figures /metrics reads from the database at each scrape: the notifications' counters and backlog, and
the states of the system the alert rules watch.

They come from the database, not from the process that counted them, so every gateway worker reports the
same values whichever process sent the notifications, with no multiprocess bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from projections.notices import NOTIFICATION_TYPES
from projections.outbox import LATENCY_BUCKETS_MS

CHANNELS = ("webhook", "email")
OUTCOMES = ("delivered", "failed")


class Snapshot(msgspec.Struct, kw_only=True):
    counters: dict[tuple[str, str, str], int] = msgspec.field(default_factory=dict)
    pending: dict[tuple[str, str], int] = msgspec.field(default_factory=dict)
    oldest_pending_seconds: float = 0.0
    sales_paused: bool = False
    alert_threshold_percent: int = 0


class DatabaseFigures(Collector):
    def __init__(self) -> None:
        self.snapshot = Snapshot()

    async def refresh(self, pool: Any, stats: Any) -> None:
        counters = {
            (row["type"], row["channel"], row["name"]): row["count"]
            for row in await pool.fetch("SELECT type, channel, name, count FROM notification_counters")
        }
        pending: dict[tuple[str, str], int] = {}
        oldest: datetime | None = None
        for row in await pool.fetch(
            "SELECT type, channel, count(*) AS n, min(created_at) AS oldest FROM notification_deliveries"
            " WHERE status = 'pending' GROUP BY type, channel"
        ):
            pending[(row["type"], row["channel"])] = row["n"]
            oldest = row["oldest"] if oldest is None else min(oldest, row["oldest"])
        self.snapshot = Snapshot(
            counters=counters,
            pending=pending,
            oldest_pending_seconds=(datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0,
            sales_paused=stats.sales_paused,
            alert_threshold_percent=stats.alert_threshold_percent,
        )

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        created = CounterMetricFamily("ledger_notifications_created", "Notifications created, by type", labels=["type"])
        for kind in NOTIFICATION_TYPES:
            created.add_metric([kind], snap.counters.get((kind, "", "created"), 0))
        yield created
        deliveries = CounterMetricFamily(
            "ledger_notification_deliveries",
            "Deliveries delivered, or failed after every try, by type and channel",
            labels=["type", "channel", "outcome"],
        )
        pending = GaugeMetricFamily(
            "ledger_notification_deliveries_pending", "Deliveries not yet done", labels=["type", "channel"]
        )
        latency = HistogramMetricFamily(
            "ledger_notification_delivery_seconds",
            "From the event's commit to the receiver's acceptance",
            labels=["type", "channel"],
        )
        for kind in NOTIFICATION_TYPES:
            for channel in CHANNELS:
                for outcome in OUTCOMES:
                    deliveries.add_metric([kind, channel, outcome], snap.counters.get((kind, channel, outcome), 0))
                pending.add_metric([kind, channel], snap.pending.get((kind, channel), 0))
                buckets, total = [], 0
                for bound in LATENCY_BUCKETS_MS:
                    total += snap.counters.get((kind, channel, f"le_{bound}"), 0)
                    buckets.append((str(bound / 1000), total))
                buckets.append(("+Inf", total + snap.counters.get((kind, channel, "le_inf"), 0)))
                latency_sum = snap.counters.get((kind, channel, "latency_sum_ms"), 0) / 1000
                latency.add_metric([kind, channel], buckets, latency_sum)
        yield deliveries
        yield pending
        yield latency
        yield GaugeMetricFamily(
            "ledger_notifications_oldest_pending_seconds",
            "Age of the oldest delivery not yet done (0 when none is pending)",
            value=snap.oldest_pending_seconds,
        )
        yield GaugeMetricFamily(
            "ledger_sales_paused", "1 while the oversell guard pauses sales", value=int(snap.sales_paused)
        )
        yield GaugeMetricFamily(
            "ledger_alert_threshold_percent",
            "The billing config's alert_threshold_percent",
            value=snap.alert_threshold_percent,
        )
