"""Sending one delivery: a webhook signed per Standard Webhooks, or an email over SMTP.

Each try is signed afresh (a receiver refuses timestamps more than five minutes old) under the same
``webhook-id``, the notification's, so a receiver drops a repeat. Only a 2xx answer delivers; a 3xx is
not followed and counts as a failure; a 410 means the receiver wants no more and ends the tries. Email
gives up at once on a permanent (5xx) refusal and tries again on anything else.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Final
from urllib.parse import unquote, urlsplit
from uuid import UUID

import aiosmtplib
import httpx
import msgspec
from httpx_secure import SSRFProtectionError
from standardwebhooks.webhooks import Webhook

from gateway.outbound.mail_render import render_email

GONE: Final = 410
# The part of an answer kept for the operators: enough to see what the receiver said.
EXCERPT_CHARACTERS: Final = 200
PERMANENT_SMTP_FROM: Final = 500
# A Retry-After longer than this many digits (over a year in seconds) is not taken at its word.
RETRY_AFTER_DIGITS: Final = 8


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    delivered: bool
    retry: bool
    status: int | None = None
    error: str | None = None
    # What the receiver asked for with Retry-After, in seconds.
    retry_after_seconds: int | None = None


class Payload(msgspec.Struct, frozen=True):
    """The body of every webhook, as the contract fixes it."""

    type: str
    timestamp: datetime
    data: dict[str, Any]


def message_id(notification_id: UUID) -> str:
    """``webhook-id``: one per notification, whichever endpoint and try, and free of dots."""
    return f"msg_{notification_id.hex}"


def webhook_body(notification_type: str, occurred_at: datetime, data: dict[str, Any]) -> str:
    return msgspec.json.encode(Payload(notification_type, occurred_at.astimezone(UTC), data)).decode()


async def send_webhook(
    client: httpx.AsyncClient, *, url: str, secret: str, notification_id: UUID, body: str
) -> Outcome:
    # The signed instant must be UTC: the library writes the zone as UTC without converting.
    now = datetime.now(UTC)
    msg_id = message_id(notification_id)
    headers = {
        "content-type": "application/json",
        "user-agent": "credit-ledger-webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, body),
    }
    try:
        async with client.stream("POST", url, content=body.encode(), headers=headers) as response:
            status = response.status_code
            if 200 <= status < 300:  # noqa: PLR2004
                return Outcome(delivered=True, retry=False, status=status)
            excerpt = (await _start_of(response)).decode(errors="replace")
            retry_after = _retry_after(response.headers.get("retry-after"))
    except SSRFProtectionError as error:
        return Outcome(delivered=False, retry=False, error=f"blocked: {error}")
    except httpx.TimeoutException:
        return Outcome(delivered=False, retry=True, error="timed out")
    except httpx.HTTPError as error:
        return Outcome(delivered=False, retry=True, error=f"could not connect: {type(error).__name__}")
    return Outcome(
        delivered=False,
        retry=status != GONE,
        status=status,
        error=f"answered {status}: {excerpt}" if excerpt else f"answered {status}",
        retry_after_seconds=retry_after,
    )


async def _start_of(response: httpx.Response) -> bytes:
    """The first bytes of an answer's body: what an operator needs, and no more, however large it is."""
    start = b""
    async for chunk in response.aiter_bytes():
        start += chunk
        if len(start) >= EXCERPT_CHARACTERS:
            break
    return start[:EXCERPT_CHARACTERS]


def _retry_after(value: str | None) -> int | None:
    text = (value or "").strip()
    if not (text.isascii() and text.isdigit()) or len(text) > RETRY_AFTER_DIGITS:
        return None
    return int(text)


class SmtpServer(msgspec.Struct, frozen=True, kw_only=True):
    hostname: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    start_tls: bool | None

    @classmethod
    def from_url(cls, url: str) -> SmtpServer:
        """``smtp://host:port`` (STARTTLS if offered), ``smtp+starttls://user:pass@host:port`` (required),
        ``smtps://host:port`` (TLS from the start)."""
        parts = urlsplit(url)
        use_tls = parts.scheme == "smtps"
        return cls(
            hostname=parts.hostname or "localhost",
            port=parts.port or (465 if use_tls else 587 if parts.scheme == "smtp+starttls" else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=use_tls,
            start_tls=True if parts.scheme == "smtp+starttls" else None if not use_tls else False,
        )


class Mailer:
    def __init__(self, smtp_url: str, *, mail_from: str, public_url: str, timeout_seconds: float) -> None:
        self.server = SmtpServer.from_url(smtp_url)
        self.mail_from = mail_from
        self.public_url = public_url
        self.timeout_seconds = timeout_seconds
        self.domain = mail_from.rpartition("@")[2] or "localhost"

    def message(
        self,
        *,
        delivery_id: UUID,
        recipient: str,
        locale: str,
        notification_type: str,
        data: dict[str, Any],
        occurred_at: datetime,
    ) -> EmailMessage:
        rendered = render_email(
            notification_type, data, locale=locale, occurred_at=occurred_at, public_url=self.public_url
        )
        message = EmailMessage()
        message["From"] = self.mail_from
        message["To"] = recipient
        message["Subject"] = rendered.subject
        message["Date"] = formatdate(usegmt=True)
        # The same on every try, so a mail client shows a repeat as one message.
        message["Message-ID"] = f"<{delivery_id.hex}@{self.domain}>"
        message.set_content(rendered.text)
        message.add_alternative(rendered.html, subtype="html")
        # After the content: setting it replaces the headers that describe the content.
        message["Content-Language"] = locale
        return message

    async def send(self, message: EmailMessage) -> Outcome:
        server = self.server
        try:
            await aiosmtplib.send(
                message,
                hostname=server.hostname,
                port=server.port,
                username=server.username,
                password=server.password,
                use_tls=server.use_tls,
                start_tls=server.start_tls,
                timeout=self.timeout_seconds,
                tls_context=ssl.create_default_context() if server.use_tls or server.start_tls else None,
            )
        except aiosmtplib.SMTPResponseException as error:
            permanent = error.code >= PERMANENT_SMTP_FROM
            return Outcome(
                delivered=False, retry=not permanent, status=error.code, error=f"SMTP {error.code}: {error.message}"
            )
        except (aiosmtplib.SMTPException, OSError) as error:
            return Outcome(delivered=False, retry=True, error=f"SMTP: {type(error).__name__}: {error}")
        return Outcome(delivered=True, retry=False, status=250)
