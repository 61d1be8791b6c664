"""Commands: what a caller asks the ledger to do, as plain values.

A command holds exactly what the caller said, so its fingerprint identifies the request for
idempotency. The time the ledger handles it (``now``) travels beside it, never inside it: a retry
arrives later but is still the same request.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal

import msgspec

GrantSource = Literal["purchase", "welcome", "promotional", "admin", "dispute"]
RevocationReason = Literal["refund", "dispute"]


class Command(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    def fingerprint(self) -> str:
        """A hash of the canonical encoding: field order is fixed by the class, so equal commands match."""
        return hashlib.sha256(msgspec.json.encode(self)).hexdigest()


class InitializeAccount(Command, frozen=True, kw_only=True):
    user_id: str


class GrantCredits(Command, frozen=True, kw_only=True):
    user_id: str
    amount_millicredits: int
    source: GrantSource
    reference: str | None = None
    description: str | None = None
    granted_by: str | None = None


class DebitUsage(Command, frozen=True, kw_only=True):
    user_id: str
    tokens: int
    input_tokens: int | None = None
    output_tokens: int | None = None
    model: str | None = None
    agent_id: str | None = None
    analysis_id: str | None = None
    occurred_at: datetime | None = None


class ReserveCredits(Command, frozen=True, kw_only=True):
    user_id: str
    estimated_tokens: int
    ttl_seconds: int = 900
    analysis_id: str | None = None


class SettleReservation(Command, frozen=True, kw_only=True):
    """``user_id`` may be left out: the ledger finds the account from the reservation."""

    user_id: str | None = None
    reservation_id: str
    tokens: int
    input_tokens: int | None = None
    output_tokens: int | None = None
    model: str | None = None


class ReleaseReservation(Command, frozen=True, kw_only=True):
    user_id: str | None = None
    reservation_id: str


class AdjustCredits(Command, frozen=True, kw_only=True, omit_defaults=True):
    """An admin's manual correction: a positive amount grants a lot, a negative one removes.

    Defaults are left out of the fingerprint, so a request made before lots keeps its fingerprint.
    """

    user_id: str
    amount_millicredits: int
    reason: str
    admin_id: str
    # The granted lot: ``promo`` unless said, and never expiring unless said.
    kind: Literal["paid", "promo"] | None = None
    expires_at: datetime | None = None


class RevokeCredits(Command, frozen=True, kw_only=True):
    user_id: str
    amount_millicredits: int
    reason: RevocationReason
    reference: str


class ChangeBillingSettings(Command, frozen=True, kw_only=True):
    """A partial update of the billing settings."""

    changes: dict[str, int]
    changed_by: str


class AddPackage(Command, frozen=True, kw_only=True):
    package_id: str
    name: str
    credits: int
    price_amount_minor: int
    currency: str
    active: bool = True
    stripe_price_id: str | None = None
    added_by: str


class ChangePackage(Command, frozen=True, kw_only=True):
    """A partial update of a package: ``changes`` maps package fields to their new values."""

    package_id: str
    changes: dict[str, str | int | bool | None]
    changed_by: str


# The ledger's own commands: no caller sends them with a key; each states a fact of time or of the views.


class ExpireDue(Command, frozen=True, kw_only=True):
    """Record the expiry of every hold and lot of the account past its time (the sweeper's command)."""

    user_id: str


class EvaluateSales(Command, frozen=True, kw_only=True):
    """Record whether sales are paused and the API-usage alert raised, for these figures of the read side."""

    circulation_millicredits: int
    smallest_package_credits: int


class SeedDefaults(Command, frozen=True, kw_only=True):
    """Create the default billing configuration and packages unless they exist."""


class StartCheckout(Command, frozen=True, kw_only=True):
    """Record a Checkout Session just created for a purchase."""

    session_id: str


class IdempotencyKey(msgspec.Struct, frozen=True):
    """Who asked, and the key they chose. Keys are scoped to the principal and the operation."""

    principal: str
    key: str


class Origin(msgspec.Struct, frozen=True, kw_only=True):
    """The role of whoever asked and the request it came in, recorded in the events of an audited change.

    It travels beside the command, like ``now``: a retry comes in another request but is the same command,
    so it must not change the fingerprint.
    """

    actor_role: str
    request_id: str | None = None


class Clock(msgspec.Struct, frozen=True):
    now: datetime
