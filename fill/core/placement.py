"""Which appliances of a cluster hold which file, on which tier.

Files are taken hottest first. Each gets copies(popularity) appliances: the first ones of the cluster
in weighted rendezvous order for its key (the same hash and weights steering ranks with, so the
appliance steering tries first is the one that holds the file), skipping an appliance with no room
left — the copy spills to the next in order. On each appliance the SSD takes files until full, then
the HDD: since the hottest come first, the hottest sit on SSD ("media-aware placement"). A file that
fits nowhere is left out (its requests go to another site). Rendezvous means adding or removing an
appliance moves only the files it wins or won, so a night's plan changes little of the last one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping, Sequence

import xxhash

from contracts.ids import ApplianceId, FileKey
from fill.core.model import ApplianceView, CatalogFile, PlanPolicy
from fill.core.popularity import copies_for

_TWO_64 = float(1 << 64)


@lru_cache(maxsize=4096)
def seed_of(name: str) -> int:
    """An appliance's rendezvous seed: steering.core.hashing's, so both orders agree."""
    return xxhash.xxh64_intdigest(name.encode(), 0x5EED)


def rendezvous_order(key: str, members: Sequence[ApplianceView]) -> list[ApplianceView]:
    """Members best first for `key`: score weight / -ln(u), u from xxh64(key, seed of the member)."""
    kb = key.encode()

    def cost(m: ApplianceView) -> tuple[float, str]:
        u = (xxhash.xxh64_intdigest(kb, seed_of(m.id)) + 0.5) / _TWO_64
        return (-math.log(u) / max(m.weight, 1e-12), m.id)

    return sorted(members, key=cost)


@dataclass(frozen=True, slots=True)
class Placed:
    key: FileKey
    appliance: ApplianceId
    tier: str  # "ssd" | "hdd"
    rank: int  # position of the file in the cluster's popularity order (0 hottest)


@dataclass(frozen=True)
class ClusterPlan:
    placed: tuple[Placed, ...]
    left_out: tuple[FileKey, ...]  # wanted but fitting nowhere
    short: tuple[FileKey, ...]  # placed with fewer copies than wanted (no room for more)


def planned_bytes(tier_bytes: int, policy: PlanPolicy) -> int:
    """Of a tier's bytes, what the manifest may fill: `capacity_fraction` of it (the rest is slack),
    less the `reactive_share` of that left to pull-through."""
    return int(tier_bytes * policy.capacity_fraction * (1.0 - policy.reactive_share))


def hottest_first(files: Sequence[CatalogFile], popularity: Mapping[FileKey, float]) -> list[CatalogFile]:
    """Popularity descending; ties: newer release first, then key (deterministic)."""
    def order(f: CatalogFile) -> tuple:
        released = f.release_date.toordinal() if f.release_date is not None else 0
        return (-popularity.get(f.key, 0.0), -released, f.key)

    return sorted(files, key=order)


def place_cluster(appliances: Sequence[ApplianceView], files: Sequence[CatalogFile],
                  popularity: Mapping[FileKey, float], policy: PlanPolicy) -> ClusterPlan:
    members = [a for a in appliances if a.known]
    room = {a.id: [planned_bytes(a.ssd_bytes or 0, policy), planned_bytes(a.hdd_bytes or 0, policy)]
            for a in members}
    placed: list[Placed] = []
    left_out: list[FileKey] = []
    short: list[FileKey] = []
    if not members:
        return ClusterPlan((), tuple(f.key for f in files), ())
    for rank, f in enumerate(hottest_first(files, popularity)):
        pop = popularity.get(f.key, 0.0)
        if pop <= 0 and not policy.include_cold:
            continue
        want = copies_for(pop, policy, len(members))
        got = 0
        for a in rendezvous_order(f.key, members):
            if got >= want:
                break
            tier = _fit(room[a.id], f.size)
            if tier is None:
                continue
            placed.append(Placed(f.key, a.id, tier, rank))
            got += 1
        if got == 0 and want > 0:
            left_out.append(f.key)
        elif got < want:
            short.append(f.key)
    return ClusterPlan(tuple(placed), tuple(left_out), tuple(short))


def _fit(room: list[int], size: int) -> str | None:
    """Take `size` bytes from the SSD room if it fits, else the HDD's; None if neither."""
    for i, tier in ((0, "ssd"), (1, "hdd")):
        if size <= room[i]:
            room[i] -= size
            return tier
    return None
