"""What the notification tests share: a real webhook receiver, a real SMTP server, and short-hands for the
ledger, the notifier and the outbox's tables.

The receiver is a threaded ``http.server`` on 127.0.0.1 that records every request and checks its
signature with ``standardwebhooks`` against the secret of the endpoint it was registered for. The SMTP
server is an ``aiosmtpd`` ``Controller`` on 127.0.0.1 and a free port (its default host is ``::1``).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import psycopg
from aiosmtpd.controller import Controller
from standardwebhooks.webhooks import Webhook

from gateway.outbound.sending import Mailer
from ledger.application import Ledger
from ledger.commands import DebitUsage, GrantCredits
from projections.notification_queries import Contact, add_endpoint, set_contact
from projections.notifier import Notifier
from projections.outbox import Outbox, Recipients
from projections.runner import ProjectionRunner

ALERT_EMAIL = "ops@example.com"
# With the default settings one token costs one millicredit and the threshold is 200,000 millicredits.
THRESHOLD = 200_000
# Under ``unusual_consumption_min_tokens`` (100,000): one debit alone never makes an unusual-usage alert.
DEBIT_TOKENS = 60_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(condition: Callable[[], Any], *, timeout: float = 30, what: str = "the condition") -> Any:
    """Poll until ``condition()`` is truthy; return its value, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


# The webhook receiver.


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when the request was read
    verified: bool
    problem: str | None

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def payload(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.body)
        return decoded


@dataclass
class Receiver:
    """Records every POST. ``script[path]`` lists the statuses of its next answers (200 once it is empty);
    requests to a path in ``hang`` get no answer until the receiver is released or stopped."""

    port: int = field(default_factory=free_port)
    secrets: dict[str, str] = field(default_factory=dict)
    script: dict[str, list[int]] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)
    received: list[Received] = field(default_factory=list)
    hung: list[Received] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                if len(body) < length:
                    # The sender died mid-request: an HTTP server takes no request it did not get whole.
                    self.close_connection = True
                    return
                receiver.record(self, body)

            def log_message(self, *_: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False
            allow_reuse_address = True
            # As deep a queue of connections waiting to be accepted as a production server's: with the
            # socketserver default of 5, a burst of sends overflows it, a dropped connection attempt waits
            # a second or more to be made again, and under load it can outlast the sender's timeout.
            request_queue_size = 1024

        self.released.clear()
        self._server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def record(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        headers = {name.lower(): value for name, value in handler.headers.items()}
        verified, problem = True, None
        try:
            Webhook(self.secrets[handler.path]).verify(body, headers)
        except Exception as error:  # Malformed input raises more than WebhookVerificationError.
            verified, problem = False, f"{type(error).__name__}: {error}"
        request = Received(handler.path, headers, body, time.time(), verified, problem)
        if handler.path in self.hang:
            with self.lock:
                self.hung.append(request)
            self.released.wait(60)
            status = 200
        else:
            with self.lock:
                statuses = self.script.get(handler.path, [])
                status = statuses.pop(0) if statuses else 200
                if 200 <= status < 300:
                    self.received.append(request)
                else:
                    self.hung.append(request)  # Answered, but not taken: kept with the refused ones.
        answer = b"" if status < 300 else b"not now"
        try:
            handler.send_response(status)
            handler.send_header("content-length", str(len(answer)))
            handler.end_headers()
            handler.wfile.write(answer)
        except OSError:
            pass  # The sender gave up waiting.

    def on(self, path: str) -> list[Received]:
        with self.lock:
            return [request for request in self.received if request.path == path]

    def refused(self, path: str) -> list[Received]:
        with self.lock:
            return [request for request in self.hung if request.path == path]


# The SMTP server.


class Inbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name.
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self.lock:
            self.messages.append(message)
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [message for message in self.messages if message["To"] == address]


class SmtpServer:
    def __init__(self) -> None:
        self.inbox = Inbox()
        self.port = free_port()
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)

    def mailer(self) -> Mailer:
        return Mailer(
            f"smtp://127.0.0.1:{self.port}",
            mail_from="ledger@example.com",
            public_url="http://ledger.example.com",
            timeout_seconds=5,
        )


# The ledger, the notifier and the outbox.


def now() -> datetime:
    return datetime.now(UTC)


def grant(ledger: Ledger, user: str, millicredits: int, *, source: str = "promotional", reference: str | None = None):
    command = GrantCredits(user_id=user, amount_millicredits=millicredits, source=source, reference=reference)  # type: ignore[arg-type]
    return ledger.grant_credits(command, idempotency=None, now=now())


def debit(ledger: Ledger, user: str, tokens: int = DEBIT_TOKENS):
    return ledger.debit_usage(DebitUsage(user_id=user, tokens=tokens), idempotency=None, now=now())


def cross_low_balance(ledger: Ledger, user: str) -> None:
    """Arm the user's low-balance notice (250 credits) and cross the threshold once (down to 190)."""
    grant(ledger, user, 250_000)
    debit(ledger, user)


def notifier(database_url: str, *, email: bool = True, batch_size: int = 1_000) -> ProjectionRunner:
    recipients = Recipients(email_enabled=email, alert_emails=(ALERT_EMAIL,))
    return ProjectionRunner(database_url, Notifier(Outbox(recipients)), batch_size=batch_size)


def register_endpoint(database_url: str, receiver: Receiver, path: str, event_types: Iterable[str]) -> dict[str, Any]:
    """Register ``receiver.url(path)`` as it is stored by the API, and tell the receiver its secret."""

    async def add() -> dict[str, Any]:
        conn = await asyncpg.connect(database_url)
        try:
            async with conn.transaction():
                return await add_endpoint(conn, url=receiver.url(path), event_types=list(event_types), description="")
        finally:
            await conn.close()

    endpoint = asyncio.run(add())
    receiver.secrets[path] = endpoint["secret"]
    return endpoint


def store_contact(database_url: str, user: str, address: str, locale: str) -> None:
    async def store() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await set_contact(conn, Contact(user_id=user, email=address, locale=locale))
        finally:
            await conn.close()

    asyncio.run(store())


def rows(database_url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


def value(database_url: str, query: str, params: tuple[Any, ...] = ()) -> Any:
    return rows(database_url, query, params)[0][0]


def statuses(database_url: str) -> dict[str, int]:
    return dict(rows(database_url, "SELECT status, count(*) FROM notifications GROUP BY status"))  # type: ignore[arg-type]


def all_settled(database_url: str) -> bool:
    """Every notification is past pending (and there is at least one)."""
    counts = statuses(database_url)
    return bool(counts) and not counts.get("pending")


def deliveries_settled(database_url: str) -> bool:
    """Every delivery is past pending (and there is at least one)."""
    counts = dict(rows(database_url, "SELECT status, count(*) FROM notification_deliveries GROUP BY status"))
    return bool(counts) and not counts.get("pending")
