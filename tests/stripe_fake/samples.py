"""Stripe's official sample objects (see README.md for their source and licence).

Every object the fake returns starts as a deep copy of one of these samples, so responses and webhook payloads carry
every field real Stripe sends, even the ones the fake never changes.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"

# A Stripe API object as it travels over the wire: a JSON object.
StripeObject = dict[str, Any]


@cache
def _load(name: str) -> StripeObject:
    with (FIXTURES / f"{name}.json").open(encoding="utf-8") as fh:
        loaded: StripeObject = json.load(fh)
    return loaded


def sample(name: str) -> StripeObject:
    """Return a private copy of the sample called ``name`` (the file name in fixtures/, without ``.json``)."""
    return copy.deepcopy(_load(name))
