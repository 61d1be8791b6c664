"""Stripe's list endpoints: newest first, ``limit`` (1 to 100, default 10) and cursor pagination."""

from __future__ import annotations

import copy

from tests.stripe_fake import errors, objects
from tests.stripe_fake.forms import Params
from tests.stripe_fake.samples import StripeObject

PAGINATION = ("limit", "starting_after", "ending_before")


def paginate(items: list[StripeObject], params: Params, url: str, kind: str) -> StripeObject:
    """Return one page of ``items`` (already filtered and newest first) as a Stripe list object."""
    limit = params.integer("limit", minimum=1, maximum=100) or 10
    ids = [item["id"] for item in items]
    after = params.text("starting_after")
    before = params.text("ending_before")
    if after is not None:
        if after not in ids:
            raise errors.missing(kind, after, param="starting_after", status=400)
        window = items[ids.index(after) + 1 :]
        page = window[:limit]
    elif before is not None:
        if before not in ids:
            raise errors.missing(kind, before, param="ending_before", status=400)
        window = items[: ids.index(before)]
        page = window[-limit:]
    else:
        window = items
        page = window[:limit]
    return objects.list_object(copy.deepcopy(page), url, has_more=len(window) > limit)
