"""The audit trail as the admin API reads it: newest first, by actor or action, a page at a time."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final, Literal, get_args

import msgspec

from ledger.errors import InvalidCommandError

AuditAction = Literal[
    "credits.adjusted",
    "billing_config.changed",
    "package.added",
    "package.changed",
    "sales.paused",
    "sales.resumed",
    # Recorded once webhook endpoints and contacts exist; nothing writes them yet.
    "webhook_endpoint.created",
    "webhook_endpoint.deleted",
    "contact.changed",
    "contact.erased",
]
ACTIONS: Final = get_args(AuditAction)
# The cursor is the position of the last row of the page before: any string of this form is one.
AUDIT_CURSOR_PATTERN: Final = r"^(0|[1-9][0-9]{0,15})\Z"
_AUDIT_CURSOR = re.compile(AUDIT_CURSOR_PATTERN)
_NEWEST = 2**63 - 1


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    at: datetime
    actor: str
    actor_role: str | None
    action: AuditAction
    target: str
    old: dict[str, Any]
    new: dict[str, Any]
    reason: str | None
    request_id: str | None


class AuditPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[AuditEntry]
    next_cursor: str | None


async def audit(
    pool: Any, *, actor: str | None = None, action: str | None = None, limit: int, cursor: str | None = None
) -> AuditPage:
    """A page of the audit trail, newest first; ``id`` is the position of the event the row records."""
    if action is not None and action not in ACTIONS:
        raise InvalidCommandError("action", "is not an action of the audit trail")
    if cursor is not None and not _AUDIT_CURSOR.fullmatch(cursor):
        raise InvalidCommandError("cursor", "is not a cursor this list returned")
    before = int(cursor) if cursor is not None else _NEWEST
    rows = await pool.fetch(
        "SELECT position, at, actor, actor_role, action, target, old::text, new::text, reason, request_id"
        " FROM audit_log WHERE position < $1 AND ($2::text IS NULL OR actor = $2)"
        " AND ($3::text IS NULL OR action = $3) ORDER BY position DESC LIMIT $4",
        before,
        actor,
        action,
        limit + 1,
    )
    items = [
        AuditEntry(
            id=row["position"],
            at=row["at"],
            actor=row["actor"],
            actor_role=row["actor_role"],
            action=row["action"],
            target=row["target"],
            old=msgspec.json.decode(row["old"]),
            new=msgspec.json.decode(row["new"]),
            reason=row["reason"],
            request_id=row["request_id"],
        )
        for row in rows[:limit]
    ]
    more = len(rows) > limit
    return AuditPage(items=items, next_cursor=str(items[-1].id) if more else None)
