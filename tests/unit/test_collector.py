"""The `ledger` processes collect garbage less often, and leave what they built at start out of it."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from gateway import collector


@pytest.fixture
def restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored")
def test_the_young_generation_waits_for_ten_thousand_allocations_and_a_full_collection_for_a_hundred() -> None:
    collector.tune()
    assert gc.get_threshold() == (10_000, 50, 100)


@pytest.mark.usefixtures("restored")
def test_what_exists_at_start_is_frozen_out_of_collections() -> None:
    built_at_start = [object() for _ in range(1_000)]
    collector.freeze_startup()
    assert gc.get_freeze_count() >= len(built_at_start)
