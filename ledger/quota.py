"""Token quotas: rolling windows of usage, kept in the account's state as buckets.

The hourly quota counts the current clock minute and the 59 before it; the daily quota counts the current
clock hour and the 23 before it. Buckets keep the state small and bounded whatever the traffic, and they
are fed only by committed usage events, so a retried request is never counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from ledger.errors import QuotaExceededError, QuotaWindow

US_PER_SECOND = 1_000_000
MINUTE_US = 60 * US_PER_SECOND
HOUR_US = 60 * MINUTE_US


class UsageBucket(TypedDict):
    # The minute (hourly window) or the hour (daily window) since the epoch, and the tokens used in it.
    bucket: int
    tokens: int


@dataclass(frozen=True)
class Window:
    name: QuotaWindow
    bucket_us: int
    buckets: int

    def first_bucket(self, now_us: int) -> int:
        """The oldest bucket still inside the window at ``now_us``."""
        return now_us // self.bucket_us - self.buckets + 1

    def used(self, usage: list[UsageBucket], now_us: int) -> int:
        first = self.first_bucket(now_us)
        return sum(entry["tokens"] for entry in usage if entry["bucket"] >= first)

    def count(self, usage: list[UsageBucket], tokens: int, at_us: int) -> None:
        """Add tokens at ``at_us``, dropping buckets that left the window (deterministic, for replay)."""
        bucket = at_us // self.bucket_us
        while usage and usage[0]["bucket"] <= bucket - self.buckets:
            usage.pop(0)
        # Clocks of different processes may disagree a little: a late event joins the newest bucket.
        if usage and usage[-1]["bucket"] >= bucket:
            usage[-1]["tokens"] += tokens
        else:
            usage.append(UsageBucket(bucket=bucket, tokens=tokens))

    def refusal(self, limit: int, usage: list[UsageBucket], tokens: int, now_us: int) -> QuotaExceededError | None:
        """The refusal of ``tokens`` more, with how long until enough usage leaves the window; None if they fit."""
        used = self.used(usage, now_us)
        if used + tokens <= limit:
            return None
        excess = used + tokens - limit
        retry_after_us = self.buckets * self.bucket_us  # A request larger than the whole quota never fits.
        if tokens <= limit:
            freed = 0
            for entry in usage:
                if entry["bucket"] < self.first_bucket(now_us):
                    continue
                freed += entry["tokens"]
                if freed >= excess:
                    retry_after_us = (entry["bucket"] + self.buckets) * self.bucket_us - now_us
                    break
        return QuotaExceededError(
            window=self.name,
            limit_tokens=limit,
            used_tokens=used,
            retry_after_seconds=max(1, -(-retry_after_us // US_PER_SECOND)),
        )


HOURLY = Window("hour", MINUTE_US, 60)
DAILY = Window("day", HOUR_US, 24)


def upcast_buckets(buckets: list[list[int]]) -> list[UsageBucket]:
    """Buckets as snapshots before version 2 stored them: ``[bucket, tokens]`` pairs."""
    return [UsageBucket(bucket=bucket, tokens=tokens) for bucket, tokens in buckets]
