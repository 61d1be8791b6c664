"""One API request as the handlers see it: decoded parameters, the id from the URL and who is asking."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tests.stripe_fake.forms import Params
from tests.stripe_fake.samples import StripeObject
from tests.stripe_fake.store import RequestContext, Store


@dataclass(frozen=True)
class Call:
    params: Params
    # The object id captured from the URL, such as ``cs_test_...`` in ``/v1/checkout/sessions/{id}/expire``.
    path_id: str
    # The ``Stripe-Version`` the client sent (stripe-python always sends its pinned version).
    stripe_version: str
    context: RequestContext

    def version_at_least(self, version: str) -> bool:
        # Stripe versions start with their release date, so comparing that prefix orders them.
        return self.stripe_version[:10] >= version[:10]


# An endpoint: it reads and changes the store and returns the object to send back, before any ``expand[]``.
Handler = Callable[[Store, Call], StripeObject]
