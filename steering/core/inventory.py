"""Which appliances hold which file, kept from the inventories in heartbeats.

`judge` decides what an update means against the generation this replica holds (pure); the index
applies it. A delta applies when it starts from the held generation, or is the one that produced it
(a retransmission: applying the same delta twice is harmless); anything else is a gap and the
appliance is asked for its whole set, while the stale set keeps serving meanwhile (mostly right is
better than empty). Keys are interned: the same file on many appliances shares one string.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import Enum
from typing import AbstractSet, Mapping

from contracts.heartbeat import InventoryUpdate
from contracts.ids import ApplianceId, FileKey

_EMPTY: frozenset[ApplianceId] = frozenset()


class Verdict(str, Enum):
    REPLACE = "replace"  # a full set
    APPLY = "apply"  # a delta from what we hold
    GAP = "gap"  # a delta we cannot apply: ask for the full set


@dataclass(frozen=True, slots=True)
class InventoryResult:
    verdict: Verdict
    generation: int | None  # what this replica holds now
    need_full: bool


def judge(held: int | None, update: InventoryUpdate) -> Verdict:
    if update.full:
        return Verdict.REPLACE
    if held is not None and held in (update.base, update.generation):
        return Verdict.APPLY
    return Verdict.GAP


class InventoryIndex:
    def __init__(self) -> None:
        self.holders: dict[FileKey, set[ApplianceId]] = {}
        self._held: dict[ApplianceId, set[FileKey]] = {}
        self._generation: dict[ApplianceId, int] = {}

    def generation(self, appliance: ApplianceId) -> int | None:
        return self._generation.get(appliance)

    def count(self, appliance: ApplianceId) -> int:
        return len(self._held.get(appliance, ()))

    def holds(self, appliance: ApplianceId, key: FileKey) -> bool:
        return appliance in self.holders.get(key, _EMPTY)

    def files_of(self, appliance: ApplianceId) -> AbstractSet[FileKey]:
        return self._held.get(appliance, frozenset())

    def apply(self, appliance: ApplianceId, update: InventoryUpdate) -> InventoryResult:
        verdict = judge(self._generation.get(appliance), update)
        if verdict is Verdict.GAP:
            return InventoryResult(verdict, self._generation.get(appliance), need_full=True)
        held = self._held.setdefault(appliance, set())
        if verdict is Verdict.REPLACE and held:
            # a full set replaces the held one: touch only the difference (a resent full set after a
            # replica's restart or a gap is mostly what it holds already; 10^5 keys dropped and re-added
            # cost ten times the comparison)
            fresh = set(update.added)
            for key in held - fresh:
                self._unhold(key, appliance)
            held &= fresh
        for key in update.removed:
            if key in held:
                held.discard(key)
                self._unhold(key, appliance)
        intern, holders = sys.intern, self.holders
        for key in update.added:
            if key not in held:
                key = FileKey(intern(key))
                held.add(key)
                holders.setdefault(key, set()).add(appliance)
        self._generation[appliance] = update.generation
        return InventoryResult(verdict, update.generation, need_full=False)

    def drop(self, appliance: ApplianceId) -> None:
        """Forget an appliance's set (a full replaces it; a removed appliance loses it)."""
        for key in self._held.pop(appliance, ()):
            self._unhold(key, appliance)
        self._generation.pop(appliance, None)

    def _unhold(self, key: FileKey, appliance: ApplianceId) -> None:
        owners = self.holders.get(key)
        if owners is not None:
            owners.discard(appliance)
            if not owners:
                del self.holders[key]

    def view(self) -> Mapping[FileKey, AbstractSet[ApplianceId]]:
        return self.holders
