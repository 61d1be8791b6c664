"""A command's fingerprint is what a retried request is compared with: a key used once must replay for as
long as the marker lives, so a fingerprint never changes for a request that could be made before.

The expected values are the fingerprints the code before lots (commit ae7e886) gave: hard-coded, so that any
change of the encoding (a field, the tag, msgspec's output) fails here instead of turning a retry into a 409.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ledger.commands import AdjustCredits, DebitUsage

# AdjustCredits(user_id="u-1", amount_millicredits=-2500, reason="goodwill", admin_id="ops-1") before lots,
# whose encoding is {"type":"AdjustCredits","user_id":"u-1","amount_millicredits":-2500,"reason":"goodwill",
# "admin_id":"ops-1"}.
ADJUST_BEFORE_LOTS = "f73d3ebd6ddd1d1e2c87ab60b085709866b42f8cba272737b8099c3b995ee88a"


def test_an_adjustment_without_a_lot_has_the_fingerprint_it_had_before_lots() -> None:
    command = AdjustCredits(user_id="u-1", amount_millicredits=-2500, reason="goodwill", admin_id="ops-1")
    assert command.fingerprint() == ADJUST_BEFORE_LOTS


def test_an_adjustment_naming_its_lot_is_another_request() -> None:
    plain = AdjustCredits(user_id="u-1", amount_millicredits=2500, reason="goodwill", admin_id="ops-1")
    paid = AdjustCredits(user_id="u-1", amount_millicredits=2500, reason="goodwill", admin_id="ops-1", kind="paid")
    expiring = AdjustCredits(
        user_id="u-1",
        amount_millicredits=2500,
        reason="goodwill",
        admin_id="ops-1",
        expires_at=datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert len({plain.fingerprint(), paid.fingerprint(), expiring.fingerprint()}) == 3


def test_equal_commands_have_equal_fingerprints_and_the_time_of_handling_is_not_in_them() -> None:
    first = DebitUsage(user_id="u-1", tokens=1_000, model="m")
    again = DebitUsage(user_id="u-1", tokens=1_000, model="m")
    other = DebitUsage(user_id="u-1", tokens=1_001, model="m")
    assert first.fingerprint() == again.fingerprint() != other.fingerprint()
