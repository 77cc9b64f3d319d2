"""Inventory generations: which updates apply, which are gaps, and what the index holds."""
from __future__ import annotations

import pytest

from contracts.heartbeat import InventoryUpdate
from steering.core.inventory import InventoryIndex, Verdict, judge


def full(gen: int, *keys: str) -> InventoryUpdate:
    return InventoryUpdate(generation=gen, full=True, added=keys)


def delta(base: int, gen: int, added: tuple[str, ...] = (), removed: tuple[str, ...] = ()) -> InventoryUpdate:
    return InventoryUpdate(generation=gen, full=False, added=added, removed=removed, base=base)


@pytest.mark.parametrize("held, update, verdict", [
    (None, full(5), Verdict.REPLACE),
    (9, full(5), Verdict.REPLACE),
    (5, delta(5, 6), Verdict.APPLY),
    (5, delta(5, 5), Verdict.APPLY),  # nothing changed
    (6, delta(5, 6), Verdict.APPLY),  # a retransmission of the delta that made 6
    (4, delta(5, 6), Verdict.GAP),  # lost the delta 4 -> 5
    (7, delta(5, 6), Verdict.GAP),
    (None, delta(5, 6), Verdict.GAP),  # a restarted replica
], ids=["first-full", "full-replaces", "next-delta", "unchanged", "retransmitted", "gap-behind",
        "gap-ahead", "gap-restarted-replica"])
def test_judge(held: int | None, update: InventoryUpdate, verdict: Verdict) -> None:
    assert judge(held, update) is verdict


def test_index_applies_full_delta_and_refuses_gaps() -> None:
    idx = InventoryIndex()
    r = idx.apply("a1", full(10, "x", "y"))
    assert (r.generation, r.need_full) == (10, False)
    idx.apply("a2", full(3, "y"))
    assert idx.holders == {"x": {"a1"}, "y": {"a1", "a2"}}
    idx.apply("a1", delta(10, 11, added=("z",), removed=("x",)))
    assert idx.holders == {"y": {"a1", "a2"}, "z": {"a1"}}
    idx.apply("a1", delta(10, 11, added=("z",), removed=("x",)))  # duplicate: harmless
    assert idx.files_of("a1") == {"y", "z"}
    gap = idx.apply("a1", delta(12, 13, added=("w",)))
    assert (gap.verdict, gap.generation, gap.need_full) == (Verdict.GAP, 11, True)
    assert "w" not in idx.holders  # stale but consistent: the old set keeps serving
    idx.apply("a1", full(13, "w"))
    assert idx.holders == {"y": {"a2"}, "w": {"a1"}}
    assert (idx.count("a1"), idx.generation("a1"), idx.holds("a1", "w")) == (1, 13, True)
    idx.drop("a2")
    assert idx.holders == {"w": {"a1"}} and idx.generation("a2") is None


def test_a_full_set_over_a_held_one_keeps_the_overlap_and_drops_the_rest() -> None:
    idx = InventoryIndex()
    idx.apply("a1", full(1, "x", "y", "z"))
    idx.apply("a2", full(1, "y"))
    idx.apply("a1", full(2, "y", "z", "w"))  # resent whole (a gap): x gone, w new, y and z kept
    assert idx.holders == {"y": {"a1", "a2"}, "z": {"a1"}, "w": {"a1"}}
    assert idx.files_of("a1") == {"y", "z", "w"} and idx.generation("a1") == 2
    idx.apply("a1", full(3))
    assert idx.holders == {"y": {"a2"}} and idx.count("a1") == 0
