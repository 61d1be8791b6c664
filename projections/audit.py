"""The audit projection: who changed what, when, why and in which request, one row per event.

Only changes made by people and by the system are kept: adjustments, billing settings, packages, and sales
paused or resumed by the oversell guard. Usage and purchases have views of their own. Rows carry what the
event says and nothing else, so a rebuild writes the same rows again. Events stored before the actor's role
and the request id were recorded have neither; the ledger's own actions (seeding, the Stripe price sync)
are shown as the actor ``system``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final
from uuid import UUID

import msgspec
import psycopg

from ledger.account import CreditAccount
from ledger.account_events import from_us
from ledger.config import BillingConfig, PackageCatalogue
from projections.accounts import ProjectionError

SYSTEM: Final = "system"
# The ledger's own writers, by the name they record as the author of a change.
SYSTEM_AUTHORS: Final = {"seed": "seeded defaults", "stripe-sync": "Stripe price sync"}


class AuditRow(msgspec.Struct, frozen=True, kw_only=True):
    at: datetime
    actor: str
    actor_role: str | None
    action: str
    target: str
    old: dict[str, Any]
    new: dict[str, Any]
    reason: str | None
    request_id: str | None


def audit_row(event: Any, user_id: str | None = None) -> AuditRow | None:  # noqa: PLR0911 - one per change.
    """The audit row of one event, or None for an event that is not an audited change.

    ``user_id`` is the user of the account an adjustment changed: the account's events name it only when
    it opens.
    """
    at = event.timestamp
    if isinstance(event, CreditAccount.CreditsGranted):
        if event.source != "admin":
            return None
        return _row(event, "credits.adjusted", f"user:{user_id}", event.granted_by or SYSTEM, event.description)
    if isinstance(event, CreditAccount.CreditsRemoved):
        return _row(event, "credits.adjusted", f"user:{user_id}", event.removed_by, event.reason)
    if isinstance(event, BillingConfig.SettingChanged):
        return _row(
            event,
            "billing_config.changed",
            "billing_config",
            event.changed_by,
            None,
            old={event.key: event.old_value},
            new={event.key: event.new_value},
        )
    if isinstance(event, PackageCatalogue.PackageAdded):
        return _row(event, "package.added", f"package:{event.package_id}", event.added_by, None, new=event.fields)
    if isinstance(event, PackageCatalogue.PackageChanged):
        old = {field: values[0] for field, values in event.changes.items()}
        new = {field: values[1] for field, values in event.changes.items()}
        return _row(event, "package.changed", f"package:{event.package_id}", event.changed_by, None, old=old, new=new)
    if isinstance(event, BillingConfig.SalesPaused):
        reason = (
            f"{event.potential_tokens} tokens in circulation and {event.package_tokens} for sale would pass "
            f"{event.alert_threshold_percent}% of the monthly limit of {event.api_monthly_limit_tokens}"
        )
        return AuditRow(
            at=at,
            actor=SYSTEM,
            actor_role=SYSTEM,
            action="sales.paused",
            target="sales",
            old={"sales_paused": False},
            new={"sales_paused": True},
            reason=reason,
            request_id=None,
        )
    if isinstance(event, BillingConfig.SalesResumed):
        return AuditRow(
            at=at,
            actor=SYSTEM,
            actor_role=SYSTEM,
            action="sales.resumed",
            target="sales",
            old={"sales_paused": True},
            new={"sales_paused": False},
            reason=f"{event.potential_tokens} tokens in circulation are within the limit again",
            request_id=None,
        )
    return None


def _row(
    event: Any,
    action: str,
    target: str,
    author: str,
    reason: str | None,
    *,
    old: dict[str, Any] | None = None,
    new: dict[str, Any] | None = None,
) -> AuditRow:
    if author in SYSTEM_AUTHORS and event.actor_role in {None, SYSTEM}:
        actor, role, reason = SYSTEM, SYSTEM, reason or SYSTEM_AUTHORS[author]
    else:
        actor, role = author, event.actor_role
    if action == "credits.adjusted":
        granted = isinstance(event, CreditAccount.CreditsGranted)
        new = {"amount_millicredits": event.amount_millicredits if granted else -event.amount_millicredits}
        if granted:  # The lot the grant made.
            new |= {"kind": event.kind, "expires_at": _moment(event.expires_at_us)}
    return AuditRow(
        at=event.timestamp,
        actor=actor,
        actor_role=role,
        action=action,
        target=target,
        old=old or {},
        new=new or {},
        reason=reason,
        request_id=event.request_id,
    )


class AuditProjection:
    name = "audit"
    tables: tuple[str, ...] = ("audit_log", "audit_accounts")
    topic_prefix: str | tuple[str, ...] = (
        "ledger.CreditAccount.Opened",
        "ledger.CreditAccount.CreditsGranted",
        "ledger.CreditAccount.CreditsRemoved",
        "ledger.BillingConfig.",
        "ledger.PackageCatalogue.",
    )

    def apply(self, conn: psycopg.Connection[Any], events: list[tuple[int, Any]]) -> None:
        users = self._users(conn, [event for _, event in events])
        rows = [
            (position, row)
            for position, event in events
            if (row := audit_row(event, users.get(event.originator_id))) is not None
        ]
        if not rows:
            return
        conn.cursor().executemany(
            "INSERT INTO audit_log (position, at, actor, actor_role, action, target, old, new, reason, request_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    position,
                    row.at,
                    row.actor,
                    row.actor_role,
                    row.action,
                    row.target,
                    msgspec.json.encode(row.old).decode(),
                    msgspec.json.encode(row.new).decode(),
                    row.reason,
                    row.request_id,
                )
                for position, row in rows
            ],
        )

    def _users(self, conn: psycopg.Connection[Any], events: list[Any]) -> dict[UUID, str]:
        """The user of each account these events touch; accounts opened here are remembered for later."""
        opened = {e.originator_id: e.user_id for e in events if isinstance(e, CreditAccount.Opened)}
        if opened:
            conn.cursor().executemany(
                "INSERT INTO audit_accounts (account_id, user_id) VALUES (%s, %s)", list(opened.items())
            )
        wanted = [
            e.originator_id
            for e in events
            if isinstance(e, CreditAccount.CreditsGranted | CreditAccount.CreditsRemoved)
            and e.originator_id not in opened
        ]
        if wanted:
            found = conn.execute(
                "SELECT account_id, user_id FROM audit_accounts WHERE account_id = ANY(%s)", (wanted,)
            ).fetchall()
            opened.update(dict(found))
        missing = set(wanted) - opened.keys()
        if missing:
            raise ProjectionError(f"an adjustment of account {missing.pop()}, which never opened")
        return opened


def _moment(moment_us: int | None) -> str | None:
    return None if moment_us is None else from_us(moment_us).isoformat()
