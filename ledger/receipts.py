"""Receipts: what the ledger answers after a command committed (or was replayed).

Every receipt carries ``position``, the event-log position of the command's last event, so a reader
can wait until a view has caught up with it, and ``replayed``, true when an idempotency key matched
an earlier request and its original receipt is returned unchanged.
"""

from __future__ import annotations

from datetime import datetime

import msgspec


class Receipt(msgspec.Struct, frozen=True, kw_only=True):
    position: int
    replayed: bool = False


class InitializeReceipt(Receipt, frozen=True, kw_only=True):
    user_id: str
    created: bool
    welcome_millicredits: int
    balance_after_millicredits: int


class GrantReceipt(Receipt, frozen=True, kw_only=True):
    grant_id: str
    user_id: str
    amount_millicredits: int
    balance_after_millicredits: int
    available_after_millicredits: int


class DebitReceipt(Receipt, frozen=True, kw_only=True):
    debit_id: str
    user_id: str
    tokens: int
    amount_millicredits: int
    balance_after_millicredits: int
    available_after_millicredits: int


class ReservationReceipt(Receipt, frozen=True, kw_only=True):
    reservation_id: str
    user_id: str
    held_millicredits: int
    expires_at: datetime
    available_after_millicredits: int


class SettlementReceipt(Receipt, frozen=True, kw_only=True):
    reservation_id: str
    user_id: str
    tokens: int
    debited_millicredits: int
    released_millicredits: int
    balance_after_millicredits: int
    available_after_millicredits: int


class ReleaseReceipt(Receipt, frozen=True, kw_only=True):
    reservation_id: str
    user_id: str
    released_millicredits: int
    balance_after_millicredits: int
    available_after_millicredits: int


class AdjustmentReceipt(Receipt, frozen=True, kw_only=True):
    adjustment_id: str
    user_id: str
    amount_millicredits: int
    balance_after_millicredits: int


class RevocationReceipt(Receipt, frozen=True, kw_only=True):
    revocation_id: str
    user_id: str
    amount_millicredits: int
    balance_after_millicredits: int


class ExpiryReceipt(Receipt, frozen=True, kw_only=True):
    expired: int


class ChangeReceipt(Receipt, frozen=True, kw_only=True):
    """The answer to one of the ledger's own commands: whether it changed anything."""

    changed: bool


class SettingsReceipt(Receipt, frozen=True, kw_only=True):
    settings: dict[str, int]
    changed: list[str]


class PackageReceipt(Receipt, frozen=True, kw_only=True):
    package_id: str
    name: str
    credits: int
    price_amount_minor: int
    currency: str
    active: bool
    stripe_price_id: str | None
    changed: list[str]


class PaymentReceipt(Receipt, frozen=True, kw_only=True):
    """The checkout after a Stripe fact: its status, and what the buyer holds from it."""

    session_id: str
    user_id: str
    status: str
    granted_millicredits: int
    refund_clawback_millicredits: int
    dispute_clawback_millicredits: int
    balance_after_millicredits: int | None


class LotView(msgspec.Struct, frozen=True, kw_only=True):
    """An open lot, as the balance shows it."""

    lot_id: str
    kind: str
    granted_millicredits: int
    remaining_millicredits: int
    expires_at: datetime | None


class Balance(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    balance_millicredits: int
    reserved_millicredits: int
    available_millicredits: int
    updated_at: datetime | None
    # Open lots, in the order usage consumes them.
    lots: list[LotView] = []
