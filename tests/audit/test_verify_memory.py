"""Verification streams: its peak memory does not grow with the length of the trail."""

from __future__ import annotations

import tracemalloc

import pytest

from audit import chain
from tests.audit.conftest import World, bulk_events, require_postgresql

pytestmark = pytest.mark.postgres


def _peak_while_verifying() -> tuple[chain.Verification, int]:
    tracemalloc.start()
    try:
        result = chain.verify()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_verify_memory_stays_flat_from_1k_to_10k_events(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    require_postgresql()
    # Rows are fetched 200 at a time, so both runs hold at most one chunk however long the trail.
    monkeypatch.setattr(chain, "VERIFY_CHUNK_SIZE", 200)
    bulk_events(1_000, keystore=world.keystore_a, key=world.key_a)
    small, small_peak = _peak_while_verifying()
    bulk_events(9_000, keystore=world.keystore_a, key=world.key_a)
    large, large_peak = _peak_while_verifying()

    assert (small.ok, small.events) == (True, 1_000)
    assert (large.ok, large.events) == (True, 10_000)
    assert large_peak < small_peak * 1.5, (small_peak, large_peak)
