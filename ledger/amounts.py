"""Integer amounts and the one conversion from tokens to millicredits.

Every amount in the ledger is an ``int`` of the smallest unit: millicredits for credits (1 credit is
1,000 millicredits), tokens for usage, minor units (centavos) for money. JSON consumers in JavaScript
lose precision above 2^53 - 1, so that is the bound on every amount, checked at the HTTP schema and
again here.
"""

from __future__ import annotations

from typing import Final

MAX_AMOUNT: Final = 2**53 - 1
MILLICREDITS_PER_CREDIT: Final = 1_000


def is_amount(value: object, *, allow_zero: bool = False) -> bool:
    """Tell whether a value is an integer amount in range (a bool is not an amount)."""
    if type(value) is not int:
        return False
    lower = 0 if allow_zero else 1
    return lower <= value <= MAX_AMOUNT


def cost_millicredits(tokens: int, tokens_per_credit: int) -> int:
    """Price a number of tokens, rounding any fraction of a millicredit up.

    With the default 1,000 tokens per credit one token costs exactly one millicredit. Rounding up means
    usage is never given away by truncation; the rate used is recorded in every debit event.
    """
    return -(-tokens * MILLICREDITS_PER_CREDIT // tokens_per_credit)


def credits_text(millicredits: int) -> str:
    """Format millicredits as a decimal credit figure for people, e.g. ``-12.345``."""
    sign = "-" if millicredits < 0 else ""
    whole, fraction = divmod(abs(millicredits), MILLICREDITS_PER_CREDIT)
    return f"{sign}{whole}.{fraction:03d}"
