"""Accounts written straight through the Python ledger API, many events per transaction.

Used for the long-history scenario: one account with 100,000 events, built in chunks (load the account,
apply a few thousand debits in memory, save them in one transaction, repeat), and one fresh account
(opened and granted only). The ledger's own ``save`` path takes its snapshots (every 200 versions) as it
does in the service, so the server finds the long account as it would in production.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.account import CreditAccount
from ledger.application import Ledger
from ledger.config import BillingSettings
from ledger.ids import account_id
from ledger.lots import LotKind
from ledger.persistence import postgres_env

# The history is built without quotas: the rules are the service's, only the limits are lifted.
BUILD_SETTINGS = BillingSettings(
    hourly_token_limit=2**53 - 1, daily_token_limit=2**53 - 1, min_balance_for_analysis_millicredits=0
)
GRANT_MILLICREDITS = 10**15


def _grant(account: CreditAccount, grant_id: str, now: datetime) -> None:
    account.grant(
        grant_id=grant_id,
        amount_millicredits=GRANT_MILLICREDITS,
        source="admin",
        reference=None,
        description="bench",
        granted_by="bench",
        now=now,
    )


def _debit(account: CreditAccount, n: int, now: datetime) -> None:
    account.debit(
        debit_id=f"history-{n}",
        tokens=1,
        input_tokens=None,
        output_tokens=None,
        model="bench",
        agent_id=None,
        analysis_id=None,
        occurred_at=None,
        settings=BUILD_SETTINGS,
        now=now,
    )


def build_long_and_fresh(
    database_url: str, *, long_user: str, fresh_user: str, events: int, chunk: int = 5_000
) -> dict[str, Any]:
    """Write ``long_user`` with ``events`` events and ``fresh_user`` with two. Returns timings."""
    ledger = Ledger(postgres_env(database_url, cache_maxsize=16))
    try:
        started = time.perf_counter()
        base = datetime.now(UTC) - timedelta(minutes=30)
        fresh = CreditAccount.open(fresh_user, base)
        _grant(fresh, "fresh-grant", base)
        ledger.save(fresh)

        account = CreditAccount.open(long_user, base)
        _grant(account, "long-grant", base)
        written, n, saves = 2, 0, 0
        while written < events:
            if saves:
                account = ledger.repository.get(account_id(long_user))
            batch = min(chunk - (2 if saves == 0 else 0), events - written)
            for _ in range(batch):
                # Distinct, increasing times a few microseconds apart: a long but quick history.
                _debit(account, n, base + timedelta(microseconds=10 * n))
                n += 1
            ledger.save(account)
            written += batch
            saves += 1
        build_seconds = time.perf_counter() - started
    finally:
        ledger.close()
    return {
        "long_user": long_user,
        "fresh_user": fresh_user,
        "events": written,
        "transactions": saves,
        "build_seconds": round(build_seconds, 2),
        "events_per_second": round(written / build_seconds),
        **cold_loads(database_url, [long_user, fresh_user]),
    }


def cold_loads(database_url: str, users: list[str]) -> dict[str, Any]:
    """Time the first load of each account in a new process-like ledger (empty cache): from the latest
    snapshot, and for the long one also by replaying every event (what a ledger without snapshots does)."""
    result: dict[str, Any] = {}
    ledger = Ledger(postgres_env(database_url, cache_maxsize=16))
    try:
        for user in users:
            started = time.perf_counter()
            account = ledger.repository.get(account_id(user))
            result[f"cold_load_ms[{user}]"] = round((time.perf_counter() - started) * 1000, 2)
            result[f"version[{user}]"] = account.version
    finally:
        ledger.close()
    ledger = Ledger(postgres_env(database_url, cache_maxsize=16))
    try:
        ledger.repository.snapshot_store = None  # this instance only: replay everything
        started = time.perf_counter()
        ledger.repository.get(account_id(users[0]))
        result[f"replay_without_snapshot_ms[{users[0]}]"] = round((time.perf_counter() - started) * 1000, 1)
    finally:
        ledger.close()
    return result


def bulk_open(
    database_url: str, users: list[str], *, grant_millicredits: int | None, per_save: int = 1_000, lots: int = 1
) -> dict[str, Any]:
    """Open many accounts (and grant each ``grant_millicredits``), ``per_save`` accounts per transaction.

    With ``lots`` above 1 the grant is split into that many lots of mixed kinds, half of them expiring a year
    and some hours later, so that usage has to order them (bench/lots_cost.py).
    """
    ledger = Ledger(postgres_env(database_url, cache_maxsize=16))
    started = time.perf_counter()
    events = 0
    try:
        now = datetime.now(UTC)
        for first in range(0, len(users), per_save):
            accounts = []
            for user in users[first : first + per_save]:
                account = CreditAccount.open(user, now)
                for lot in range(lots if grant_millicredits else 0):
                    account.grant(
                        grant_id=f"fund-{user}" if lots == 1 else f"fund-{user}-{lot}",
                        amount_millicredits=(grant_millicredits or 0) // lots,
                        source="admin",
                        reference=None,
                        description="bench funding",
                        granted_by="bench",
                        now=now,
                        kind=LotKind.PROMO if lot % 3 == 0 else LotKind.PAID,
                        expires_at=now + timedelta(days=365, hours=lot) if lots > 1 and lot % 2 == 0 else None,
                    )
                events += len(account.pending_events)
                accounts.append(account)
            ledger.save(*accounts)
    finally:
        ledger.close()
    seconds = time.perf_counter() - started
    return {
        "accounts": len(users),
        "events": events,
        "seconds": round(seconds, 2),
        "accounts_per_second": round(len(users) / seconds) if seconds else None,
        "events_per_second": round(events / seconds) if seconds else None,
    }


def copy_open(database_url: str, users: list[str], *, per_copy: int = 100_000) -> dict[str, Any]:
    """Open many accounts fast: the domain's own ``Opened`` events, encoded by the ledger's mapper, written
    with COPY under the event table's lock (as the recorder takes it, so followers see them in order).

    For the memory scenario's million accounts, where ``bulk_open`` (about 6,000 accounts a second) would
    take most of the run's budget. The events are exactly those ``CreditAccount.open`` records.
    """
    import psycopg  # noqa: PLC0415 - only this path writes without the library.
    from eventsourcing.persistence import JSONTranscoder  # noqa: PLC0415

    from ledger.mapper import MsgspecMapper  # noqa: PLC0415

    mapper = MsgspecMapper(transcoder=JSONTranscoder())
    started = time.perf_counter()
    now = datetime.now(UTC)
    with psycopg.connect(database_url) as conn:
        for first in range(0, len(users), per_copy):
            rows = []
            for user in users[first : first + per_copy]:
                for event in CreditAccount.open(user, now).collect_events():
                    stored = mapper.to_stored_event(event)
                    rows.append((stored.originator_id, stored.originator_version, stored.topic, stored.state))
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")
                columns = "originator_id, originator_version, topic, state"
                with cur.copy(f"COPY ledger_events ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                cur.execute("NOTIFY ledger_events")
    seconds = time.perf_counter() - started
    return {
        "accounts": len(users),
        "events": len(users),
        "seconds": round(seconds, 2),
        "accounts_per_second": round(len(users) / seconds) if seconds else None,
    }
