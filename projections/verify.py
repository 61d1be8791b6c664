"""Recompute every account from its events and compare with the balances view; say how far each view lags.

The comparison is made at the accounts view's own position, so a view that is merely behind is not
"different"; ``lags`` says how many events each view has yet to apply, so a stopped projection is seen too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from eventsourcing.persistence import JSONTranscoder, StoredEvent
from eventsourcing.utils import TopicError

from ledger.account import CreditAccount
from ledger.config import PACKAGE_FIELDS, BillingConfig, PackageCatalogue
from ledger.mapper import MsgspecMapper
from projections.lots import LotBook, LotContradictionError

FIELDS = (
    "balance_millicredits",
    "reserved_millicredits",
    "lifetime_purchased_millicredits",
    "lifetime_used_millicredits",
)


class UnknownEventError(Exception):
    """An event this version of ``verify`` has no rule for: it cannot say what the views should hold."""

    def __init__(self, topic: str, position: int) -> None:
        super().__init__(f"the event at position {position} is of a type verify does not know: {topic}")


# Events that move nothing ``verify`` compares; every other type it meets needs a rule, or it refuses.
NEUTRAL_EVENTS: tuple[type, ...] = (
    CreditAccount.Initialized,
    BillingConfig.ApiUsageReachedThreshold,
    BillingConfig.ApiUsageBelowThreshold,
    PackageCatalogue.Opened,
)


def _decode(mapper: Any, stored: StoredEvent, position: int) -> Any:
    try:
        return mapper.to_domain_event(stored)
    except TopicError:  # A topic no class of this version answers to.
        raise UnknownEventError(stored.topic, position) from None


def expected_balances(
    conn: psycopg.Connection[Any], up_to: int, book: LotBook | None = None
) -> dict[str, tuple[int, int, int, int]]:
    """Each user's balance, holds, purchases and usage as the events say; their lots go into ``book``."""
    mapper: Any = MsgspecMapper(transcoder=JSONTranscoder())
    book = LotBook() if book is None else book
    users: dict[Any, str] = {}
    totals: dict[Any, list[int]] = {}
    holds: dict[str, int] = {}
    with conn.cursor(name="verify_scan") as cursor:
        cursor.execute(
            "SELECT originator_id, originator_version, topic, state, notification_id FROM ledger_events"
            " WHERE topic LIKE 'ledger.CreditAccount.%%' AND notification_id <= %s ORDER BY notification_id",
            (up_to,),
        )
        for oid, version, topic, state, position in cursor:
            event = _decode(mapper, StoredEvent(oid, version, topic, bytes(state)), position)
            if isinstance(event, CreditAccount.Opened):
                users[oid] = event.user_id
                totals[oid] = [0, 0, 0, 0]
                continue
            t = totals[oid]
            amount = getattr(event, "amount_millicredits", 0)
            book.apply(users[oid], event, position, t[0])
            if isinstance(event, CreditAccount.CreditsGranted):
                t[0] += amount
                t[2] += amount if event.source == "purchase" else 0
            elif isinstance(event, CreditAccount.CreditsDebited):
                t[0] -= amount
                t[3] += amount
            elif isinstance(event, CreditAccount.CreditsReserved):
                holds[event.reservation_id] = amount
                t[1] += amount
            elif isinstance(event, CreditAccount.ReservationSettled):
                t[1] -= holds.pop(event.reservation_id)
                t[0] -= amount
                t[3] += amount
            elif isinstance(event, CreditAccount.ReservationReleased | CreditAccount.ReservationExpired):
                t[1] -= holds.pop(event.reservation_id)
            elif isinstance(
                event, CreditAccount.CreditsRemoved | CreditAccount.CreditsRevoked | CreditAccount.LotExpired
            ):
                t[0] -= amount
            elif not isinstance(event, NEUTRAL_EVENTS):
                raise UnknownEventError(topic, position)
    return {users[oid]: (t[0], t[1], t[2], t[3]) for oid, t in totals.items()}


def verify(database_url: str) -> list[str]:
    """Every difference between the events and the balances view, as readable lines (empty: all agree)."""
    with psycopg.connect(database_url) as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        row = conn.execute("SELECT position FROM projection_positions WHERE name = 'accounts'").fetchone()
        position = row[0] if row else 0
        book = LotBook()
        try:
            expected = expected_balances(conn, position, book)
            catalogue = catalogue_differences(conn)
        except UnknownEventError as unknown:
            return [str(unknown)]
        except LotContradictionError as contradiction:
            return [str(contradiction)]
        stored_lots = LotBook()
        stored_lots.load(conn, None)
        actual = {
            r[0]: tuple(r[1:])
            for r in conn.execute(
                "SELECT user_id, balance_millicredits, reserved_millicredits, lifetime_purchased_millicredits,"
                " lifetime_used_millicredits FROM user_credits"
            ).fetchall()
        }
        totals = conn.execute(
            "SELECT credits_in_circulation_millicredits, users_with_balance, reserved_millicredits FROM account_totals"
        ).fetchone() or (0, 0, 0)
        differences = catalogue + lot_differences(book, stored_lots)
    for user in sorted(expected.keys() | actual.keys()):
        want, have = expected.get(user), actual.get(user)
        if want != have:
            differences.append(f"{user}: events say {_fmt(want)}, view says {_fmt(have)}")
    expected_totals = (
        sum(max(balance, 0) for balance, *_ in expected.values()),
        sum(1 for balance, *_ in expected.values() if balance > 0),
        sum(reserved for _, reserved, *_ in expected.values()),
    )
    if tuple(totals) != expected_totals:
        differences.append(
            "totals: events say circulation={}, users_with_balance={}, reserved={}; view says {}, {}, {}".format(
                *expected_totals, *totals
            )
        )
    return differences


def lot_differences(expected: LotBook, stored: LotBook) -> list[str]:
    """Every open lot the events and the lots view disagree on."""
    differences: list[str] = []
    for user in sorted(expected.lots.keys() | stored.lots.keys()):
        want, have = expected.lots.get(user, {}), stored.lots.get(user, {})
        differences.extend(
            f"{user} lot {lot_id}: events say {want.get(lot_id) or 'nothing'},"
            f" view says {have.get(lot_id) or 'nothing'}"
            for lot_id in sorted(want.keys() | have.keys())
            if want.get(lot_id) != have.get(lot_id)
        )
    return differences


def expected_catalogue(conn: psycopg.Connection[Any], up_to: int) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
    """The billing settings (with ``sales_paused`` as 0 or 1) and the packages, as their events say."""
    mapper: Any = MsgspecMapper(transcoder=JSONTranscoder())
    settings: dict[str, int] = {}
    packages: dict[str, dict[str, Any]] = {}
    rows = conn.execute(
        "SELECT originator_id, originator_version, topic, state, notification_id FROM ledger_events"
        " WHERE (topic LIKE 'ledger.BillingConfig.%%' OR topic LIKE 'ledger.PackageCatalogue.%%')"
        " AND notification_id <= %s ORDER BY notification_id",
        (up_to,),
    ).fetchall()
    for oid, version, topic, state, position in rows:
        event = _decode(mapper, StoredEvent(oid, version, topic, bytes(state)), position)
        if isinstance(event, BillingConfig.Seeded):
            settings.update(event.values)
        elif isinstance(event, BillingConfig.SettingChanged):
            settings[event.key] = event.new_value
        elif isinstance(event, BillingConfig.SalesPaused | BillingConfig.SalesResumed):
            settings["sales_paused"] = int(isinstance(event, BillingConfig.SalesPaused))
        elif isinstance(event, PackageCatalogue.PackageAdded):
            packages[event.package_id] = dict(event.fields)
        elif isinstance(event, PackageCatalogue.PackageChanged):
            packages[event.package_id].update({field: new for field, (_, new) in event.changes.items()})
        elif not isinstance(event, NEUTRAL_EVENTS):
            raise UnknownEventError(topic, position)
    return settings, packages


def catalogue_differences(conn: psycopg.Connection[Any]) -> list[str]:
    """Every difference between ``billing_config`` / ``credit_packages`` and their events, at the view's position.

    These are the tables an operator might be tempted to edit with SQL; an edit there changes nothing the
    ledger applies (it reads the events) and is undone by a rebuild, so it is reported rather than trusted.
    """
    row = conn.execute("SELECT position FROM projection_positions WHERE name = 'catalogue'").fetchone()
    settings, packages = expected_catalogue(conn, row[0] if row else 0)
    stored = dict(conn.execute("SELECT key, value FROM billing_config").fetchall())
    differences = [
        f"billing_config {key}: events say {_value(settings.get(key))}, view says {_value(stored.get(key))}"
        for key in sorted(settings.keys() | stored.keys())
        if settings.get(key) != stored.get(key)
    ]
    columns = ", ".join(PACKAGE_FIELDS)
    rows = conn.execute(f"SELECT id, {columns} FROM credit_packages").fetchall()  # noqa: S608 - our columns.
    in_view = {r[0]: dict(zip(PACKAGE_FIELDS, r[1:], strict=True)) for r in rows}
    for package_id in sorted(packages.keys() | in_view.keys()):
        want, have = packages.get(package_id), in_view.get(package_id)
        if want is None or have is None:
            differences.append(
                f"credit_packages {package_id}: events say {'nothing' if want is None else 'a package'},"
                f" view says {'nothing' if have is None else 'a package'}"
            )
            continue
        differences.extend(
            f"credit_packages {package_id} {field}: events say {_value(want.get(field))},"
            f" view says {_value(have[field])}"
            for field in PACKAGE_FIELDS
            if want.get(field) != have[field]
        )
    return differences


def _value(value: Any) -> str:
    return "nothing" if value is None else repr(value)


def _fmt(values: tuple[Any, ...] | None) -> str:
    if values is None:
        return "nothing"
    return ", ".join(f"{name}={value}" for name, value in zip(FIELDS, values, strict=True))


@dataclass(frozen=True)
class Lag:
    """How far one view is behind the head of the log."""

    projection: str
    position: int
    behind_events: int


def lags(database_url: str, projections: list[str]) -> list[Lag]:
    """Each named projection's position and the events it has not applied yet (all of them, if it never ran)."""
    with psycopg.connect(database_url) as conn:
        head_row = conn.execute("SELECT coalesce(max(notification_id), 0) FROM ledger_events").fetchone()
        positions: dict[str, int] = dict(conn.execute("SELECT name, position FROM projection_positions").fetchall())
    head = int(head_row[0]) if head_row else 0
    return [
        Lag(projection=name, position=positions.get(name, 0), behind_events=max(head - positions.get(name, 0), 0))
        for name in projections
    ]
