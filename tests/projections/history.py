"""Write a large event history quickly: accounts are built in memory and saved many at a time."""

from __future__ import annotations

from datetime import timedelta

from ledger.account import CreditAccount
from ledger.application import Ledger
from ledger.config import BillingSettings
from tests.conftest import T0

SETTINGS = BillingSettings(hourly_token_limit=10**12, daily_token_limit=10**12, min_balance_for_analysis_millicredits=0)


def write_history(ledger: Ledger, *, users: int, events_per_user: int, prefix: str = "bulk") -> int:
    """Open ``users`` accounts, each with a grant then debits and the odd reservation. Returns the events."""
    written = 0
    for first in range(0, users, 50):
        accounts = []
        for n in range(first, min(first + 50, users)):
            now = T0
            account = CreditAccount.open(f"{prefix}-{n}", now)
            account.grant(
                grant_id=f"g-{n}",
                amount_millicredits=10**9,
                source="purchase",
                reference=None,
                description=None,
                granted_by=None,
                now=now,
            )
            for k in range(events_per_user - 2):
                now = T0 + timedelta(seconds=k)
                if k % 10 == 9:
                    account.reserve(
                        reservation_id=f"r-{n}-{k}",
                        estimated_tokens=1_000,
                        ttl_seconds=60,
                        analysis_id=None,
                        settings=SETTINGS,
                        now=now,
                    )
                else:
                    account.debit(
                        debit_id=f"d-{n}-{k}",
                        tokens=100 + k,
                        input_tokens=None,
                        output_tokens=None,
                        model="m",
                        agent_id=None,
                        analysis_id=f"a-{n}-{k // 10}",
                        occurred_at=None,
                        settings=SETTINGS,
                        now=now,
                    )
            written += len(account.pending_events)
            accounts.append(account)
        ledger.save(*accounts)
    return written
