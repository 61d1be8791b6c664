"""The ledger's refusals. Each names the rule that was broken; the gateway maps them to HTTP."""

from __future__ import annotations

from typing import Literal


class LedgerError(Exception):
    """A command the ledger refused. Nothing was written."""


class InvalidCommandError(LedgerError):
    """A command whose values break a rule of the domain (an amount out of range, for instance)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class StateConflictError(LedgerError):
    """A well-formed command that the current state does not allow (an id already taken, a limit below
    another stored limit): the same command may succeed once the state changes."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class InsufficientCreditsError(LedgerError):
    def __init__(self, *, available_millicredits: int, required_millicredits: int) -> None:
        super().__init__(
            f"available balance {available_millicredits} millicredits is below the required "
            f"{required_millicredits} millicredits"
        )
        self.available_millicredits = available_millicredits
        self.required_millicredits = required_millicredits


QuotaWindow = Literal["hour", "day"]


class QuotaExceededError(LedgerError):
    def __init__(self, *, window: QuotaWindow, limit_tokens: int, used_tokens: int, retry_after_seconds: int) -> None:
        super().__init__(
            f"the {window}ly token quota of {limit_tokens} tokens would be passed "
            f"({used_tokens} tokens used in the rolling {window})"
        )
        self.window: QuotaWindow = window
        self.limit_tokens = limit_tokens
        self.used_tokens = used_tokens
        self.retry_after_seconds = retry_after_seconds


class ReservationNotOpenError(LedgerError):
    def __init__(self, reservation_id: str, status: str) -> None:
        super().__init__(f"reservation {reservation_id} is {status}")
        self.reservation_id = reservation_id
        self.status = status


class NotFoundError(LedgerError):
    def __init__(self, what: str, identifier: str) -> None:
        super().__init__(f"{what} {identifier} does not exist")
        self.what = what
        self.identifier = identifier


class IdempotencyConflictError(LedgerError):
    def __init__(self, key: str) -> None:
        super().__init__(f"idempotency key {key!r} was already used with a different request")
        self.key = key


class ConcurrencyError(LedgerError):
    """Another process kept changing the same account; the command was tried repeatedly and gave up."""


class RemovalExceedsAvailableError(InsufficientCreditsError):
    """An admin removal larger than the available balance (a conflict, not a payment problem)."""


class SalesPausedError(LedgerError):
    """The oversell guard: selling this package would promise more tokens than the upstream API allows."""

    def __init__(self, *, potential_tokens: int, package_tokens: int, allowed_tokens: int) -> None:
        super().__init__(
            f"sales are paused: {potential_tokens} tokens in circulation plus this package's {package_tokens} "
            f"would pass the {allowed_tokens} tokens the alert threshold allows"
        )
        self.potential_tokens = potential_tokens
        self.package_tokens = package_tokens
        self.allowed_tokens = allowed_tokens


class StoreUnavailableError(Exception):
    """The event store did not answer. Not a refusal: the command may be sent again with its key.

    ``outcome_unknown`` is true when the store went away while committing, so the command may or may
    not have been written; its idempotency marker tells, once the store is back.
    """

    def __init__(self, reason: str, *, outcome_unknown: bool) -> None:
        super().__init__(reason)
        self.outcome_unknown = outcome_unknown
