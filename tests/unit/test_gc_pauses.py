"""`ledger_gc_pause_seconds`: every collection of a watching process is observed, by generation."""

from __future__ import annotations

import gc

from infra import gc_pauses


def count(generation: str) -> float:
    """Collections of `generation` observed so far."""
    return sum(s.value for m in gc_pauses.PAUSES.collect() for s in m.samples
               if s.name.endswith("_count") and s.labels["generation"] == generation)


def test_each_collection_is_observed_by_generation() -> None:
    gc_pauses.watch()
    gc_pauses.watch()  # once: a second watch adds no second callback
    assert gc.callbacks.count(gc_pauses._callback) == 1
    before = count("2")
    gc.collect(2)
    assert count("2") == before + 1
