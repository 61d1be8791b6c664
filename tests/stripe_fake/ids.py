"""Identifiers shaped like Stripe's: a type prefix followed by random letters and digits."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def session_id() -> str:
    # Test-mode Checkout Session ids carry the mode in the prefix and are much longer than other ids.
    return new_id("cs_test_a1", 56)
