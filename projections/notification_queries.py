"""Reading the outbox, and keeping the settings it delivers by: webhook endpoints and contacts.

Endpoints and contacts are settings of the deployment, not events (a contact can be erased). Their
writes, and a redelivery, are made once per idempotency key: the first answer is stored in the write's own
transaction (``setting_writes``), and the same key with the same body gets it again.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from base64 import b64encode
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Final
from uuid import UUID, uuid4

import msgspec

MAX_PAGE_SIZE: Final = 500
DEFAULT_PAGE_SIZE: Final = 50
# Bounded so that every cursor the pattern admits is a bigint.
CURSOR_PATTERN: Final = r"^(0|[1-9][0-9]{0,15})\Z"
SECRET_BYTES: Final = 32
STATUSES: Final = ("pending", "delivered", "failed")


class WriteConflictError(Exception):
    """The idempotency key was used before with another body."""


class NotificationItem(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    type: str
    user_id: str | None
    created_at: datetime
    status: str
    attempts: int
    last_error: str | None
    recipients: int
    data: dict[str, Any]


class NotificationPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[NotificationItem]
    next_cursor: str | None


class Endpoint(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    url: str
    event_types: list[str]
    description: str
    created_at: datetime


class EndpointList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Endpoint]


class Contact(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    email: str
    locale: str


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


async def notifications(
    pool: Any, *, kind: str | None, status: str | None, limit: int, cursor: str | None
) -> NotificationPage:
    """Newest first, optionally of one type and one status."""
    rows = await pool.fetch(
        "SELECT id, seq, type, user_id, created_at, status, attempts, last_error, recipients, data"
        " FROM notifications WHERE ($1::text IS NULL OR type = $1) AND ($2::text IS NULL OR status = $2)"
        " AND ($3::bigint IS NULL OR seq < $3) ORDER BY seq DESC LIMIT $4",
        kind,
        status,
        int(cursor) if cursor else None,
        limit + 1,
    )
    items = [
        NotificationItem(
            id=row["id"],
            type=row["type"],
            user_id=row["user_id"],
            created_at=row["created_at"],
            status=row["status"],
            attempts=row["attempts"],
            last_error=row["last_error"],
            recipients=row["recipients"],
            data=json.loads(row["data"]),
        )
        for row in rows[:limit]
    ]
    return NotificationPage(items=items, next_cursor=str(rows[limit - 1]["seq"]) if len(rows) > limit else None)


async def endpoints(pool: Any) -> EndpointList:
    rows = await pool.fetch(
        "SELECT id, url, event_types, description, created_at FROM webhook_endpoints"
        " WHERE deleted_at IS NULL ORDER BY created_at, id"
    )
    return EndpointList(items=[Endpoint(**dict(row)) for row in rows])


def fingerprint(body: Any) -> str:
    return hashlib.sha256(msgspec.json.encode(body, order="sorted")).hexdigest()


async def once(
    pool: Any,
    *,
    principal: str,
    operation: str,
    key: str | None,
    body: Any,
    write: Callable[[Any], Awaitable[tuple[int, Any]]],
) -> tuple[int, Any, bool]:
    """Run ``write(connection)`` in a transaction, once per key. Returns the status code, the answer's body
    (JSON-ready) and whether it was replayed."""
    async with pool.acquire() as conn, conn.transaction():
        if key is not None:
            # The key is taken first: a second request with it waits here for the first to commit.
            claimed = await conn.fetchval(
                "INSERT INTO setting_writes (principal, operation, key, fingerprint, status_code, body)"
                " VALUES ($1, $2, $3, $4, 0, 'null') ON CONFLICT DO NOTHING RETURNING true",
                principal,
                operation,
                key,
                fingerprint(body),
            )
            if not claimed:
                first = await conn.fetchrow(
                    "SELECT fingerprint, status_code, body FROM setting_writes"
                    " WHERE principal = $1 AND operation = $2 AND key = $3",
                    principal,
                    operation,
                    key,
                )
                if first["fingerprint"] != fingerprint(body):
                    raise WriteConflictError(key)
                return first["status_code"], json.loads(first["body"]), True
        status_code, answer = await write(conn)
        if key is not None:
            await conn.execute(
                "UPDATE setting_writes SET status_code = $4, body = $5 WHERE principal = $1 AND operation = $2"
                " AND key = $3",
                principal,
                operation,
                key,
                status_code,
                msgspec.json.encode(answer).decode(),
            )
        return status_code, msgspec.to_builtins(answer), False


async def add_endpoint(conn: Any, *, url: str, event_types: list[str], description: str) -> dict[str, Any]:
    endpoint_id, secret = uuid4(), new_secret()
    created_at = await conn.fetchval(
        "INSERT INTO webhook_endpoints (id, url, event_types, description, secret) VALUES ($1, $2, $3, $4, $5)"
        " RETURNING created_at",
        endpoint_id,
        url,
        event_types,
        description,
        secret,
    )
    return {
        "id": str(endpoint_id),
        "url": url,
        "event_types": event_types,
        "description": description,
        "secret": secret,
        "created_at": created_at.isoformat(),
    }


async def delete_endpoint(conn: Any, endpoint_id: UUID) -> bool:
    """Deliveries still pending to it fail when their turn comes. False if there was none."""
    deleted = await conn.fetchval(
        "UPDATE webhook_endpoints SET deleted_at = coalesce(deleted_at, now()) WHERE id = $1 RETURNING true",
        endpoint_id,
    )
    return bool(deleted)


async def redeliver(conn: Any, notification_id: UUID) -> bool:
    """Every delivery of the notification that is not pending starts its schedule again, now, under the
    same ``webhook-id``. False if there is no such notification."""
    found = await conn.fetchval("SELECT true FROM notifications WHERE id = $1 FOR UPDATE", notification_id)
    if not found:
        return False
    await conn.execute(
        "UPDATE notification_deliveries SET status = 'pending', round_attempts = 0, next_attempt_at = now(),"
        " locked_until = NULL WHERE notification_id = $1 AND status <> 'pending'",
        notification_id,
    )
    await conn.execute(
        "UPDATE notifications SET status = CASE WHEN recipients = 0 THEN status ELSE 'pending' END WHERE id = $1",
        notification_id,
    )
    await conn.execute("NOTIFY ledger_notifications")
    return True


async def set_contact(conn: Any, contact: Contact) -> None:
    await conn.execute(
        "INSERT INTO contacts (user_id, email, locale) VALUES ($1, $2, $3) ON CONFLICT (user_id)"
        " DO UPDATE SET email = EXCLUDED.email, locale = EXCLUDED.locale, updated_at = now()",
        contact.user_id,
        contact.email,
        contact.locale,
    )


async def erase_contact(conn: Any, user_id: str) -> bool:
    """Forget the user's address, in the deliveries too; those not yet sent fail. False if none was kept."""
    email = await conn.fetchval("DELETE FROM contacts WHERE user_id = $1 RETURNING email", user_id)
    if email is None:
        return False
    await conn.execute(
        "UPDATE notification_deliveries AS d SET recipient = NULL, order_key = NULL FROM notifications AS n"
        " WHERE n.id = d.notification_id AND n.user_id = $1 AND d.channel = 'email' AND d.recipient = $2",
        user_id,
        email,
    )
    return True
