"""Deterministic identifiers.

Ids derived from what a request names make retries safe: the same user always maps to the same
account stream, and the same idempotency key always maps to the same marker, so the database's
primary key, not a lookup, rejects the second attempt.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final
from uuid import NAMESPACE_URL, UUID, uuid5

NAMESPACE: Final = uuid5(NAMESPACE_URL, "https://github.com/credit-ledger/ids")
BILLING_CONFIG_ID: Final = uuid5(NAMESPACE, "billing-config")
PACKAGE_CATALOGUE_ID: Final = uuid5(NAMESPACE, "package-catalogue")


# Busy accounts are named again and again; hashing their name each time was 1% of a debit's CPU.
@lru_cache(maxsize=65_536)
def account_id(user_id: str) -> UUID:
    return uuid5(NAMESPACE, "account:" + user_id)


# A command's marker id is asked for when it is decided and again when its marker is recorded, in the
# same batch: hashing it twice was a tenth of the writer's time.
@lru_cache(maxsize=1_024)
def request_id(principal: str, operation: str, key: str) -> UUID:
    """The id of an idempotency marker: one per principal, operation and key."""
    # Separators cannot be forged: the principal comes from a verified token and the operation is ours.
    return uuid5(NAMESPACE, f"request:{len(principal)}:{principal}:{operation}:{key}")


def derived_id(parent: UUID, purpose: str) -> UUID:
    """An id for something a request creates (a debit, a reservation), derived from its marker."""
    return uuid5(parent, purpose)
