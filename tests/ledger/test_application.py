"""Every use case of the ledger application, run on in-memory persistence and on PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest

from ledger.account import CreditAccount
from ledger.application import Ledger
from ledger.commands import (
    AddPackage,
    AdjustCredits,
    ChangeBillingSettings,
    ChangePackage,
    DebitUsage,
    GrantCredits,
    IdempotencyKey,
    InitializeAccount,
    ReleaseReservation,
    ReserveCredits,
    RevokeCredits,
    SettleReservation,
)
from ledger.config import DEFAULT_PACKAGES
from ledger.errors import (
    IdempotencyConflictError,
    InsufficientCreditsError,
    InvalidCommandError,
    NotFoundError,
    QuotaExceededError,
    RemovalExceedsAvailableError,
    ReservationNotOpenError,
)
from ledger.ids import account_id
from tests.conftest import T0

SERVICE = "svc-analysis"
ADMIN = "admin-1"


def key(value: str, principal: str = SERVICE) -> IdempotencyKey:
    return IdempotencyKey(principal, value)


def fund(ledger: Ledger, user_id: str, millicredits: int) -> None:
    ledger.grant_credits(
        GrantCredits(user_id=user_id, amount_millicredits=millicredits, source="admin"),
        idempotency=None,
        now=T0,
    )


def debit(ledger: Ledger, user_id: str, tokens: int, idem: str | None = None, at: int = 0) -> object:
    return ledger.debit_usage(
        DebitUsage(user_id=user_id, tokens=tokens),
        idempotency=key(idem) if idem else None,
        now=T0 + timedelta(seconds=at),
    )


def test_a_user_with_no_events_has_zero_balances(ledger: Ledger) -> None:
    balance = ledger.get_balance("nobody", now=T0)
    assert (balance.balance_millicredits, balance.reserved_millicredits, balance.available_millicredits) == (
        0,
        0,
        0,
    )
    assert balance.updated_at is None


def test_initialize_grants_welcome_credits_once(ledger: Ledger) -> None:
    ledger.change_billing_settings(ChangeBillingSettings(changes={"welcome_credits": 5}, changed_by=ADMIN), now=T0)
    first = ledger.initialize_account(InitializeAccount(user_id="u1"), now=T0)
    second = ledger.initialize_account(InitializeAccount(user_id="u1"), now=T0)
    assert (first.created, first.welcome_millicredits, first.balance_after_millicredits) == (
        True,
        5_000,
        5_000,
    )
    assert (second.created, second.welcome_millicredits, second.balance_after_millicredits) == (
        False,
        0,
        5_000,
    )
    assert first.position > 0


def test_grant_returns_new_balance_and_position(ledger: Ledger) -> None:
    receipt = ledger.grant_credits(
        GrantCredits(user_id="u1", amount_millicredits=7_500, source="promotional", description="launch"),
        idempotency=key("g1", ADMIN),
        now=T0,
    )
    assert receipt.balance_after_millicredits == 7_500
    assert receipt.available_after_millicredits == 7_500
    assert receipt.position > 0
    assert not receipt.replayed


def test_debit_charges_one_millicredit_per_token_by_default(ledger: Ledger) -> None:
    fund(ledger, "u1", 10_000)
    receipt = ledger.debit_usage(
        DebitUsage(user_id="u1", tokens=1_500, input_tokens=1_000, output_tokens=500, model="gemini"),
        idempotency=key("d1"),
        now=T0,
    )
    assert (receipt.amount_millicredits, receipt.balance_after_millicredits) == (1_500, 8_500)


def test_debit_above_available_is_refused_and_writes_nothing(ledger: Ledger) -> None:
    fund(ledger, "u1", 1_000)
    version = ledger.get_account("u1").version  # type: ignore[union-attr]
    with pytest.raises(InsufficientCreditsError):
        debit(ledger, "u1", 1_001, "d1")
    assert ledger.get_account("u1").version == version  # type: ignore[union-attr]
    assert ledger.get_balance("u1", now=T0).balance_millicredits == 1_000


def test_debit_over_the_hourly_quota_is_refused(ledger: Ledger) -> None:
    fund(ledger, "u1", 10_000_000)
    debit(ledger, "u1", 500_000, "d1")
    with pytest.raises(QuotaExceededError) as refused:
        debit(ledger, "u1", 1, "d2", at=60)
    assert refused.value.window == "hour"
    assert refused.value.retry_after_seconds == 3_540


def test_a_replayed_debit_is_not_counted_twice_against_the_quota(ledger: Ledger) -> None:
    fund(ledger, "u1", 10_000_000)
    debit(ledger, "u1", 300_000, "d1")
    debit(ledger, "u1", 300_000, "d1")  # The same request again.
    debit(ledger, "u1", 200_000, "d2")  # Fits only if d1 counted once.
    assert ledger.get_account("u1").tokens_used(T0) == (500_000, 500_000)  # type: ignore[union-attr]


def test_reserve_settle_below_the_hold_releases_the_rest(ledger: Ledger) -> None:
    fund(ledger, "u1", 200_000)
    hold = ledger.reserve_credits(
        ReserveCredits(user_id="u1", estimated_tokens=150_000, ttl_seconds=600), idempotency=key("r1"), now=T0
    )
    assert hold.held_millicredits == 150_000
    assert hold.available_after_millicredits == 50_000
    assert hold.expires_at == T0 + timedelta(seconds=600)
    settled = ledger.settle_reservation(
        SettleReservation(user_id="u1", reservation_id=hold.reservation_id, tokens=100_000),
        idempotency=key("s1"),
        now=T0 + timedelta(seconds=30),
    )
    assert (settled.debited_millicredits, settled.released_millicredits) == (100_000, 50_000)
    assert settled.balance_after_millicredits == 100_000
    assert ledger.get_balance("u1", now=T0 + timedelta(seconds=30)).available_millicredits == 100_000


def test_settle_above_the_hold_may_go_below_zero_and_then_blocks_new_usage(ledger: Ledger) -> None:
    fund(ledger, "u1", 100_000)
    hold = ledger.reserve_credits(ReserveCredits(user_id="u1", estimated_tokens=100_000), idempotency=key("r1"), now=T0)
    settled = ledger.settle_reservation(
        SettleReservation(user_id="u1", reservation_id=hold.reservation_id, tokens=130_000),
        idempotency=key("s1"),
        now=T0,
    )
    assert settled.balance_after_millicredits == -30_000
    with pytest.raises(InsufficientCreditsError):
        debit(ledger, "u1", 1, "d1")


def test_reserve_needs_the_minimum_balance_for_an_analysis(ledger: Ledger) -> None:
    fund(ledger, "u1", 99_999)
    with pytest.raises(InsufficientCreditsError) as refused:
        ledger.reserve_credits(ReserveCredits(user_id="u1", estimated_tokens=10), idempotency=key("r1"), now=T0)
    assert refused.value.required_millicredits == 100_000


def test_release_returns_the_hold_and_a_second_release_is_refused(ledger: Ledger) -> None:
    fund(ledger, "u1", 200_000)
    hold = ledger.reserve_credits(ReserveCredits(user_id="u1", estimated_tokens=120_000), idempotency=None, now=T0)
    released = ledger.release_reservation(
        ReleaseReservation(user_id="u1", reservation_id=hold.reservation_id), idempotency=None, now=T0
    )
    assert (released.released_millicredits, released.available_after_millicredits) == (120_000, 200_000)
    with pytest.raises(ReservationNotOpenError):
        ledger.release_reservation(
            ReleaseReservation(user_id="u1", reservation_id=hold.reservation_id), idempotency=None, now=T0
        )


def test_a_hold_expires_by_itself_and_cannot_be_settled_after(ledger: Ledger) -> None:
    fund(ledger, "u1", 200_000)
    hold = ledger.reserve_credits(
        ReserveCredits(user_id="u1", estimated_tokens=150_000, ttl_seconds=60), idempotency=None, now=T0
    )
    later = T0 + timedelta(seconds=60)
    assert ledger.get_balance("u1", now=later).available_millicredits == 200_000
    with pytest.raises(ReservationNotOpenError) as refused:
        ledger.settle_reservation(
            SettleReservation(user_id="u1", reservation_id=hold.reservation_id, tokens=1),
            idempotency=None,
            now=later,
        )
    assert refused.value.status == "expired"
    # The expiry is recorded once: every command, a refused one too, first records what has fallen due
    # (a fact of time, not of the request), so the sweeper finds nothing left.
    assert ledger.expire_due("u1", now=later) == 0
    events = list(ledger.repository.event_store.get(account_id("u1")))
    assert [type(event) for event in events].count(CreditAccount.ReservationExpired) == 1


def test_the_sweeper_records_a_hold_expiry_that_no_command_noticed(ledger: Ledger) -> None:
    fund(ledger, "u1", 200_000)
    ledger.reserve_credits(
        ReserveCredits(user_id="u1", estimated_tokens=150_000, ttl_seconds=60), idempotency=None, now=T0
    )
    later = T0 + timedelta(seconds=60)
    assert ledger.expire_due("u1", now=later) == 1
    assert ledger.expire_due("u1", now=later) == 0
    assert ledger.expire_due("nobody", now=later) == 0
    assert ledger.get_account("nobody") is None


def test_settle_of_an_unknown_reservation_is_not_found(ledger: Ledger) -> None:
    fund(ledger, "u1", 1_000)
    with pytest.raises(NotFoundError):
        ledger.settle_reservation(
            SettleReservation(user_id="u1", reservation_id="nope", tokens=1), idempotency=None, now=T0
        )


def test_settle_again_with_the_same_key_replays_the_first_answer(ledger: Ledger) -> None:
    fund(ledger, "u1", 200_000)
    hold = ledger.reserve_credits(ReserveCredits(user_id="u1", estimated_tokens=1_000), idempotency=None, now=T0)
    command = SettleReservation(user_id="u1", reservation_id=hold.reservation_id, tokens=500)
    first = ledger.settle_reservation(command, idempotency=key("s1"), now=T0)
    again = ledger.settle_reservation(command, idempotency=key("s1"), now=T0)
    assert again.replayed
    assert msgspec.structs.replace(again, position=0, replayed=False) == msgspec.structs.replace(first, position=0)
    with pytest.raises(ReservationNotOpenError):
        ledger.settle_reservation(command, idempotency=key("s2"), now=T0)


def test_admin_adjustment_grants_and_removes(ledger: Ledger) -> None:
    added = ledger.adjust_credits(
        AdjustCredits(user_id="u1", amount_millicredits=5_000, reason="goodwill", admin_id=ADMIN),
        idempotency=key("a1", ADMIN),
        now=T0,
    )
    removed = ledger.adjust_credits(
        AdjustCredits(user_id="u1", amount_millicredits=-2_000, reason="correction", admin_id=ADMIN),
        idempotency=key("a2", ADMIN),
        now=T0,
    )
    assert (added.balance_after_millicredits, removed.balance_after_millicredits) == (5_000, 3_000)
    assert removed.amount_millicredits == -2_000


def test_admin_removal_beyond_available_is_refused(ledger: Ledger) -> None:
    fund(ledger, "u1", 1_000)
    with pytest.raises(RemovalExceedsAvailableError):
        ledger.adjust_credits(
            AdjustCredits(user_id="u1", amount_millicredits=-1_001, reason="x", admin_id=ADMIN),
            idempotency=key("a1", ADMIN),
            now=T0,
        )


def test_admin_adjustment_of_zero_is_invalid(ledger: Ledger) -> None:
    with pytest.raises(InvalidCommandError):
        ledger.adjust_credits(
            AdjustCredits(user_id="u1", amount_millicredits=0, reason="x", admin_id=ADMIN),
            idempotency=None,
            now=T0,
        )


def test_revocation_may_take_the_balance_below_zero(ledger: Ledger) -> None:
    fund(ledger, "u1", 1_000)
    receipt = ledger.revoke_credits(
        RevokeCredits(user_id="u1", amount_millicredits=3_000, reason="dispute", reference="dp_1"),
        idempotency=key("evt_1", "stripe"),
        now=T0,
    )
    assert receipt.balance_after_millicredits == -2_000


def test_same_key_same_body_replays_the_first_receipt(ledger: Ledger) -> None:
    fund(ledger, "u1", 10_000)
    first = debit(ledger, "u1", 100, "d1")
    again = debit(ledger, "u1", 100, "d1", at=5)
    assert again.replayed  # type: ignore[attr-defined]
    assert again.debit_id == first.debit_id  # type: ignore[attr-defined]
    assert again.balance_after_millicredits == first.balance_after_millicredits == 9_900  # type: ignore[attr-defined]
    assert ledger.get_balance("u1", now=T0).balance_millicredits == 9_900


def test_a_replay_returns_the_first_answer_even_when_the_account_moved_on(ledger: Ledger) -> None:
    fund(ledger, "u1", 1_000)
    first = debit(ledger, "u1", 1_000, "d1")
    again = debit(ledger, "u1", 1_000, "d1")  # Would now be refused for lack of credits.
    assert again.replayed  # type: ignore[attr-defined]
    assert again.debit_id == first.debit_id  # type: ignore[attr-defined]


def test_same_key_different_body_is_a_conflict(ledger: Ledger) -> None:
    fund(ledger, "u1", 10_000)
    debit(ledger, "u1", 100, "d1")
    with pytest.raises(IdempotencyConflictError):
        debit(ledger, "u1", 101, "d1")
    assert ledger.get_balance("u1", now=T0).balance_millicredits == 9_900


def test_keys_are_scoped_to_the_principal_and_the_operation(ledger: Ledger) -> None:
    fund(ledger, "u1", 200_000)
    ledger.debit_usage(DebitUsage(user_id="u1", tokens=100), idempotency=key("k", "svc-a"), now=T0)
    ledger.debit_usage(DebitUsage(user_id="u1", tokens=100), idempotency=key("k", "svc-b"), now=T0)
    ledger.reserve_credits(ReserveCredits(user_id="u1", estimated_tokens=1), idempotency=key("k", "svc-a"), now=T0)
    assert ledger.get_balance("u1", now=T0).balance_millicredits == 199_800


def test_a_refused_command_leaves_no_marker_so_a_retry_is_judged_again(ledger: Ledger) -> None:
    with pytest.raises(InsufficientCreditsError):
        debit(ledger, "u1", 100, "d1")
    fund(ledger, "u1", 1_000)
    receipt = debit(ledger, "u1", 100, "d1")
    assert not receipt.replayed  # type: ignore[attr-defined]


def test_billing_settings_change_and_apply_at_once(ledger: Ledger) -> None:
    receipt = ledger.change_billing_settings(
        ChangeBillingSettings(changes={"tokens_per_credit": 2_000, "hourly_token_limit": 600_000}, changed_by=ADMIN),
        now=T0,
    )
    settings = receipt.settings
    assert (settings["tokens_per_credit"], settings["hourly_token_limit"], settings["daily_token_limit"]) == (
        2_000,
        600_000,
        2_000_000,
    )
    assert sorted(receipt.changed) == ["hourly_token_limit", "tokens_per_credit"]
    assert receipt.position > 0
    fund(ledger, "u1", 10_000)
    assert debit(ledger, "u1", 1_001, "d1").amount_millicredits == 501  # type: ignore[attr-defined]


def test_packages_are_seeded_and_can_be_added_and_changed(ledger: Ledger) -> None:
    assert [p.id for p in ledger.list_packages()] == [p.id for p in DEFAULT_PACKAGES]
    ledger.add_package(
        AddPackage(
            package_id="mega", name="Mega", credits=10_000, price_amount_minor=300_000, currency="BRL", added_by=ADMIN
        ),
        now=T0,
    )
    changed = ledger.change_package(
        ChangePackage(package_id="starter", changes={"active": False, "price_amount_minor": 3_500}, changed_by=ADMIN),
        now=T0,
    )
    assert (changed.active, changed.price_amount_minor, sorted(changed.changed)) == (
        False,
        3_500,
        ["active", "price_amount_minor"],
    )
    assert ledger.get_package("mega").credits == 10_000


def test_catalogue_and_settings_changes_are_idempotent_too(ledger: Ledger) -> None:
    key = IdempotencyKey(ADMIN, "pkg-1")
    command = AddPackage(
        package_id="mega", name="Mega", credits=10_000, price_amount_minor=300_000, currency="BRL", added_by=ADMIN
    )
    first = ledger.add_package(command, idempotency=key, now=T0)
    again = ledger.add_package(command, idempotency=key, now=T0)
    assert (first.replayed, again.replayed) == (False, True)
    assert msgspec.structs.replace(again, position=0, replayed=False) == msgspec.structs.replace(first, position=0)
    with pytest.raises(IdempotencyConflictError):
        ledger.add_package(msgspec.structs.replace(command, credits=1), idempotency=key, now=T0)
    change = ChangeBillingSettings(changes={"welcome_credits": 3}, changed_by=ADMIN)
    ledger.change_billing_settings(change, idempotency=IdempotencyKey(ADMIN, "cfg-1"), now=T0)
    assert ledger.change_billing_settings(change, idempotency=IdempotencyKey(ADMIN, "cfg-1"), now=T0).replayed


def test_seed_twice_changes_nothing(ledger: Ledger) -> None:
    assert not ledger.seed(now=T0)
    assert len(ledger.list_packages()) == 3


def test_a_reservation_is_settled_or_released_by_its_id_alone(ledger: Ledger) -> None:
    fund(ledger, "u1", 500_000)
    first = ledger.reserve_credits(ReserveCredits(user_id="u1", estimated_tokens=1_000), idempotency=None, now=T0)
    second = ledger.reserve_credits(ReserveCredits(user_id="u1", estimated_tokens=2_000), idempotency=None, now=T0)
    settled = ledger.settle_reservation(
        SettleReservation(reservation_id=first.reservation_id, tokens=400), idempotency=None, now=T0
    )
    assert (settled.user_id, settled.debited_millicredits, settled.released_millicredits) == ("u1", 400, 600)
    released = ledger.release_reservation(
        ReleaseReservation(reservation_id=second.reservation_id), idempotency=None, now=T0
    )
    assert (released.user_id, released.released_millicredits) == ("u1", 2_000)
    with pytest.raises(NotFoundError):
        ledger.release_reservation(ReleaseReservation(reservation_id="nope"), idempotency=None, now=T0)
