"""Checks of a command's fields: each raises ``InvalidCommandError`` naming the field and the reason."""

from __future__ import annotations

from ledger.amounts import MAX_AMOUNT, is_amount
from ledger.errors import InvalidCommandError

NUL = "\x00"


def check_tokens(field: str, value: int, *, allow_zero: bool = False) -> None:
    if not is_amount(value, allow_zero=allow_zero):
        floor = 0 if allow_zero else 1
        raise InvalidCommandError(field, f"must be an integer from {floor} to {MAX_AMOUNT}")


def check_text(field: str, value: str | None, *, max_length: int, required: bool = False) -> None:
    if value is None:
        if required:
            raise InvalidCommandError(field, "is required")
        return
    if not 1 <= len(value) <= max_length:
        raise InvalidCommandError(field, f"must be 1 to {max_length} characters")
    check_storable(field, value)


def check_storable(field: str, value: str) -> None:
    """PostgreSQL's text cannot hold the NUL character: a view could not store the value, and stops."""
    if NUL in value:
        raise InvalidCommandError(field, "must not contain the NUL character (U+0000)")


def check_usage_split(tokens: int, input_tokens: int | None, output_tokens: int | None) -> None:
    if input_tokens is None and output_tokens is None:
        return
    if input_tokens is None or output_tokens is None:
        raise InvalidCommandError("input_tokens", "input_tokens and output_tokens go together")
    check_tokens("input_tokens", input_tokens, allow_zero=True)
    check_tokens("output_tokens", output_tokens, allow_zero=True)
    if input_tokens + output_tokens != tokens:
        raise InvalidCommandError("tokens", "must equal input_tokens + output_tokens")


def check_labels(*, model: str | None, agent_id: str | None, analysis_id: str | None) -> None:
    check_text("model", model, max_length=128)
    check_text("agent_id", agent_id, max_length=128)
    check_text("analysis_id", analysis_id, max_length=128)
