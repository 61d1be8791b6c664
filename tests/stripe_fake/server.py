"""``FakeStripe``: the fake API on a loopback port, plus the helpers tests use to play the customer and the bank.

The server runs on its own thread, so both stripe-python's sync client (which blocks the caller) and its async
client (which needs the caller's event loop free) can talk to it from any test.
"""

from __future__ import annotations

import copy
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

import stripe

from tests.stripe_fake import api, lifecycle, payment_methods
from tests.stripe_fake.samples import StripeObject
from tests.stripe_fake.signing import DEFAULT_WEBHOOK_SECRET, SignedWebhook, sign_event
from tests.stripe_fake.store import RecordedRequest, Store


class _Server(ThreadingHTTPServer):
    # Daemon handler threads let the test process exit even while a client keeps a keep-alive connection open.
    daemon_threads = True
    block_on_close = False
    # A production server's queue of connections waiting to be accepted: with the socketserver default of 5,
    # a burst of calls overflows it and a dropped connection attempt is made again only a second later.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], store: Store) -> None:
        super().__init__(address, _Handler)
        self.store = store


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 lets httpx and requests reuse connections, as they do with Stripe.
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8") if length else ""
        response = api.handle(self.server.store, self.command, url.path, url.query, body, dict(self.headers.items()))
        encoded = json.dumps(response.body, indent=2).encode("utf-8")
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(encoded)))
        self.end_headers()
        self.wfile.write(encoded)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the name is the base class's.
        # Request lines on stderr would only bury the test output; ``FakeStripe.requests`` keeps them instead.
        return


class FakeStripe:
    """A stateful fake of the slice of Stripe's API the service uses, listening on 127.0.0.1."""

    def __init__(
        self,
        *,
        api_version: str = stripe.api_version,
        webhook_secret: str = DEFAULT_WEBHOOK_SECRET,
        enabled_payment_methods: Iterable[str] = payment_methods.DEFAULT_ENABLED,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.webhook_secret = webhook_secret
        self._default_methods = tuple(enabled_payment_methods)
        self.store = Store(clock, api_version, self._default_methods)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # Running the server.

    def start(self) -> Self:
        if self._server is None:
            self._server = _Server(("127.0.0.1", 0), self.store)
            self._thread = threading.Thread(target=self._server.serve_forever, name="fake-stripe", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join()
            self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def api_base(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeStripe is not running; call start() first.")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def reset(self) -> None:
        """Forget every object, event, idempotency key and request, and re-enable the default payment methods."""
        with self.store.lock:
            self.store.clear()
            self.store.enabled_payment_methods = self._default_methods

    def client(self, api_key: str = "sk_test_fake", **options: Any) -> stripe.StripeClient:
        """A ``StripeClient`` pointed at this fake, with network retries off so a failure shows at once.

        Without ``http_client`` it uses stripe-python's defaults: requests for sync calls, httpx for ``*_async``.
        """
        options.setdefault("max_network_retries", 0)
        return stripe.StripeClient(api_key, base_addresses={"api": self.api_base}, **options)

    # Account settings.

    @property
    def enabled_payment_methods(self) -> tuple[str, ...]:
        return self.store.enabled_payment_methods

    @enabled_payment_methods.setter
    def enabled_payment_methods(self, methods: Iterable[str]) -> None:
        # Like switching methods on or off in the Dashboard: only Checkout Sessions created afterwards see it.
        self.store.enabled_payment_methods = tuple(methods)

    # The customer and the bank: each helper returns the event a webhook handler should receive.

    def complete_with_card(self, session_id: str) -> StripeObject:
        """The customer pays by card: ``checkout.session.completed`` with ``payment_status`` ``paid``."""
        return self._run(lifecycle.complete_with_card, session_id)

    def complete_with_pix(self, session_id: str) -> StripeObject:
        """The customer picks Pix and gets a QR code: ``checkout.session.completed``, ``payment_status`` ``unpaid``."""
        return self._run(lifecycle.complete_with_pix, session_id)

    def pix_paid(self, session_id: str) -> StripeObject:
        """The Pix transfer arrives: ``checkout.session.async_payment_succeeded``, ``payment_status`` ``paid``."""
        return self._run(lifecycle.pix_paid, session_id)

    def pix_failed(self, session_id: str) -> StripeObject:
        """The Pix code expires unpaid: ``checkout.session.async_payment_failed``."""
        return self._run(lifecycle.pix_failed, session_id)

    def expire_session(self, session_id: str) -> StripeObject:
        """The customer never pays and the session times out: ``checkout.session.expired``."""
        return self._run(lifecycle.expire, session_id)

    def refund(self, target: str, amount: int | None = None, *, reason: str | None = None) -> StripeObject:
        """Refund part or (by default) the rest of a payment: ``charge.refunded`` with cumulative ``amount_refunded``.

        ``target`` is a Checkout Session, PaymentIntent or charge id.
        """
        with self.store.lock:
            _, event = lifecycle.refund(self.store, target, amount, reason=reason)
            return copy.deepcopy(event)

    def open_dispute(self, target: str, amount: int | None = None, reason: str = "fraudulent") -> StripeObject:
        """The customer's bank disputes the payment: ``charge.dispute.created``."""
        return self._run(lifecycle.open_dispute, target, amount, reason)

    def close_dispute(self, target: str, outcome: lifecycle.DisputeOutcome) -> StripeObject:
        """The dispute ends ``won`` or ``lost``: ``charge.dispute.closed``. ``target`` may be the dispute's id."""
        return self._run(lifecycle.close_dispute, target, outcome)

    def _run(self, transition: Callable[..., StripeObject], *args: Any) -> StripeObject:
        with self.store.lock:
            return copy.deepcopy(transition(self.store, *args))

    # Looking at what happened.

    @property
    def events(self) -> list[StripeObject]:
        """Every event so far, oldest first, including side events such as ``payment_intent.succeeded``."""
        with self.store.lock:
            return copy.deepcopy(list(self.store.objects.get("event", {}).values()))

    def events_of_type(self, event_type: str) -> list[StripeObject]:
        return [event for event in self.events if event["type"] == event_type]

    def get(self, object_id: str) -> StripeObject:
        """Any stored object by id, as the API would return it; ``KeyError`` if there is none."""
        with self.store.lock:
            found = self.store.find(object_id)
            if found is None:
                raise KeyError(object_id)
            return copy.deepcopy(found)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self.store.lock:
            return list(self.store.requests)

    def sign(self, event: StripeObject, *, timestamp: int | None = None, secret: str | None = None) -> SignedWebhook:
        """The body and ``Stripe-Signature`` header Stripe would deliver for ``event``."""
        return sign_event(event, secret or self.webhook_secret, timestamp)
