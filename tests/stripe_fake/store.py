"""The fake's state: every object by type and id, the event log, saved idempotent responses and seen requests.

The HTTP server answers on its own threads while tests call the scenario helpers on theirs, so every reader and
writer holds ``lock``; it is re-entrant because helpers call other helpers.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.stripe_fake import errors, objects
from tests.stripe_fake.ids import new_id
from tests.stripe_fake.samples import StripeObject


@dataclass(frozen=True)
class RequestContext:
    """What an event's ``request`` field reports: the API request that caused it, if one did."""

    request_id: str | None = None
    idempotency_key: str | None = None


@dataclass
class CheckoutExtras:
    """What a Checkout Session remembers from its create call without showing it on the session object."""

    line_items: list[StripeObject]
    payment_intent_metadata: dict[str, str]
    payment_intent_description: str | None
    pix_expires_after_seconds: int


@dataclass(frozen=True)
class SavedResponse:
    """A response kept for replay under its ``Idempotency-Key``, with the request it answered."""

    method: str
    path: str
    params: dict[str, Any]
    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake saw it, for tests that assert on what the code under test sent."""

    method: str
    path: str
    params: dict[str, Any]
    headers: dict[str, str]
    status: int


@dataclass
class Store:
    clock: Callable[[], float]
    api_version: str
    # The payment methods "enabled in the Dashboard"; Checkout offers only these (see payment_methods.py).
    enabled_payment_methods: tuple[str, ...]
    lock: threading.RLock = field(default_factory=threading.RLock)
    objects: dict[str, dict[str, StripeObject]] = field(default_factory=dict)
    checkout_extras: dict[str, CheckoutExtras] = field(default_factory=dict)
    idempotency: dict[str, SavedResponse] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)

    def clear(self) -> None:
        with self.lock:
            self.objects.clear()
            self.checkout_extras.clear()
            self.idempotency.clear()
            self.requests.clear()

    def now(self) -> int:
        return int(self.clock())

    def add(self, obj: StripeObject) -> StripeObject:
        self.objects.setdefault(obj["object"], {})[obj["id"]] = obj
        return obj

    def get(self, kind: str, object_id: str, *, param: str = "id", status: int = 404) -> StripeObject:
        found = self.objects.get(kind, {}).get(object_id)
        if found is None:
            raise errors.missing(kind, object_id, param=param, status=status)
        return found

    def find(self, object_id: str) -> StripeObject | None:
        for by_id in self.objects.values():
            if object_id in by_id:
                return by_id[object_id]
        return None

    def newest_first(self, kind: str) -> list[StripeObject]:
        # Stripe lists objects in reverse creation order; insertion order is creation order here.
        return list(reversed(self.objects.get(kind, {}).values()))

    def emit(self, event_type: str, obj: StripeObject, request: RequestContext | None = None) -> StripeObject:
        """Record the event Stripe would send for ``obj`` as it is now, and return it."""
        request = request or RequestContext()
        built = objects.event(
            {
                "id": new_id("evt_"),
                "api_version": self.api_version,
                "created": self.now(),
                # A webhook carries a snapshot: later changes to the object must not show in an event already sent.
                "data": {"object": copy.deepcopy(obj)},
                "request": {"id": request.request_id, "idempotency_key": request.idempotency_key},
                "type": event_type,
            }
        )
        self.add(built)
        return built
