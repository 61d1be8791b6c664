"""What a fault test finds afterwards: what the answers, the database and the service's logs say, and a
test's expectations checked together.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from ledger.ids import account_id
from projections.worker import all_projections
from tests.faults.servers import readable, wait_until
from tests.faults.service import Answer

DEBIT_TOPIC = "ledger.CreditAccount.CreditsDebited"


# What the answers say


def by_status(answers: Sequence[Answer]) -> dict[str, int]:
    return dict(sorted(Counter(answer.label for answer in answers).items()))


def slowest(answers: Sequence[Answer]) -> float | None:
    """The longest any of these requests waited for its answer (or for giving up), in seconds."""
    return round(max(answer.at - answer.sent_at for answer in answers), 3) if answers else None


def between(answers: Sequence[Answer], start: float, end: float) -> list[Answer]:
    return [answer for answer in answers if start <= answer.at < end]


# What the database says


def activity(database_url: str) -> str:
    """What every connection to the database is doing: for a failure message, when something waits."""
    try:
        with psycopg.connect(database_url, connect_timeout=2) as conn:
            rows = conn.execute(
                "SELECT application_name, state, wait_event_type, wait_event, left(query, 100)"
                " FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
    except psycopg.Error as error:
        return f"(pg_stat_activity unreadable: {error})"
    return "\n".join(" | ".join(str(value) for value in row) for row in rows)


def views_caught_up(
    database_url: str, timeout: float, *, hopeless: Callable[[], bool] = lambda: False
) -> tuple[float | None, dict[str, int], int]:
    """Wait until every projection's position reaches the last event: the seconds it took (None: not in
    ``timeout``), the positions last seen, and the last event's position.

    Every projection the service has must have a position: one that never ran has no row, and is not
    caught up. Waiting ends early once ``hopeless()`` (no projector left running, say).

    The answer is the look that found the views caught up, not a second one: the service itself writes
    events a moment after others (the system watch reacts to a grant with a sales alert), and a second
    look could land between such a write and the views applying it."""
    names = {projection.name for projection in all_projections()}
    seen: dict[str, int] = {}
    last_event = 0
    reached = False

    def caught_up() -> bool:
        nonlocal seen, last_event, reached
        try:
            with psycopg.connect(database_url, connect_timeout=2) as conn:
                last_event = conn.execute("SELECT coalesce(max(notification_id), 0) FROM ledger_events").fetchone()[0]  # type: ignore[index]
                seen = dict(conn.execute("SELECT name, position FROM projection_positions").fetchall())
        except psycopg.Error:
            return False
        reached = names <= seen.keys() and all(position >= last_event for position in seen.values())
        return reached

    waited = wait_until(lambda: caught_up() or hopeless(), timeout, interval=0.5)
    return (waited if reached else None), seen, last_event


@dataclass(frozen=True, slots=True)
class DebitLog:
    """The debits in the event log: how often each debit id occurs, and each account's debits in total."""

    occurrences: dict[str, int]
    millicredits_by_user: dict[str, int]
    count_by_user: dict[str, int]

    @property
    def doubled(self) -> dict[str, int]:
        return {debit_id: n for debit_id, n in self.occurrences.items() if n > 1}


def debit_log(database_url: str, users: Sequence[str]) -> DebitLog:
    accounts = {account_id(user_id): user_id for user_id in users}
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT originator_id, convert_from(state, 'UTF8')::jsonb->>'debit_id',"
            " (convert_from(state, 'UTF8')::jsonb->>'amount_millicredits')::bigint"
            " FROM ledger_events WHERE topic = %s",
            (DEBIT_TOPIC,),
        ).fetchall()
    occurrences: Counter[str] = Counter()
    millicredits: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for originator_id, debit_id, amount in rows:
        occurrences[debit_id] += 1
        user_id = accounts.get(originator_id, str(originator_id))
        millicredits[user_id] += amount
        counts[user_id] += 1
    return DebitLog(dict(occurrences), dict(millicredits), dict(counts))


def view_balances(database_url: str, users: Sequence[str]) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT user_id, balance_millicredits FROM user_credits WHERE user_id = ANY(%s)", (list(users),)
        ).fetchall()
    return dict(rows)


# What the service logged


def logged_problems(paths: Sequence[Path]) -> dict[str, int]:
    """Warnings and errors in the services' logs, counted by message and, for a traceback, its last line."""
    found: Counter[str] = Counter()
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            try:
                level = json.loads(line).get("level")
            except (ValueError, AttributeError):
                # Not one of our JSON lines (a library printing directly): kept when it names an error.
                level = "ERROR" if "Error" in line or "Traceback" in line else None
            if level in {"WARNING", "ERROR", "CRITICAL"}:
                found[f"{path.stem}: {readable(line)}"] += 1
    return dict(found.most_common())


# Expectations checked together


class Expectations:
    """Every expectation of a test is checked and the unmet ones reported together: a fault test that
    stopped at its first failure would hide what else the fault broke."""

    def __init__(self) -> None:
        self.unmet: list[str] = []

    def __call__(self, holds: bool, what: str) -> None:  # noqa: FBT001 - reads as expect(condition, "what").
        if not holds:
            self.unmet.append(what)

    def verify(self) -> None:
        assert not self.unmet, "unmet:\n- " + "\n- ".join(self.unmet)


def print_report(title: str, report: dict[str, Any]) -> None:
    print(f"\n== {title}\n{json.dumps(report, indent=2, default=str)}", flush=True)  # noqa: T201 - seen with -s.
