"""Pure placement decisions for an appliance's disks: popularity decay, which files the mover swaps
between SSD and HDD, which files to evict for room, and which disk takes a new file. No I/O and no
clock (`now` is always a parameter), so every rule is a table test; the store performs the verdicts.

Heat is Open Connect's popularity: decayed bytes served ÷ file size, i.e. how many times over a file
was streamed lately. Counters decay exponentially with a half-life, so one number per file plus the
time it was last brought up to date is enough (no sliding windows to store)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from contracts.ids import FileKey
from oca.config import Tier

# The mover promotes an HDD file only when it is this much hotter than the SSD file it displaces, so
# two files of nearly equal heat don't swap places on every run (each swap costs two copies).
HYSTERESIS = 1.25
POLICIES = ("lowest-popularity", "lru")


# --- decay ---------------------------------------------------------------------------------------

def decayed(score: float, t: float, now: float, half_life_s: float) -> float:
    """`score` as it was at time `t`, decayed to `now`; never grows if `now` is before `t`."""
    if now <= t or score == 0.0:
        return score
    return score * 0.5 ** ((now - t) / half_life_s)


def bump(score: float, t: float, now: float, half_life_s: float, amount: float) -> float:
    """Add `amount` happening at `now` to `score` kept at `t`. The result is valued at max(t, now):
    a hit stamped before `t` (another process's clock, a late flush) is decayed to `t` instead."""
    if now >= t:
        return decayed(score, t, now, half_life_s) + amount
    return score + decayed(amount, now, t, half_life_s)


def heat(bytes_served: float, size: int) -> float:
    return bytes_served / size if size > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Popularity:
    requests: float  # decayed request count
    bytes: float  # decayed bytes served
    last_access: float


# --- verdict and input types ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FileStat:
    key: FileKey
    tier: Tier
    disk: str
    size: int
    heat: float = 0.0
    last_access: float = 0.0
    pinned: bool = False  # in the fill manifest: never evicted (it may still be demoted to HDD)
    busy: bool = False  # being written or moved: never evicted nor moved


@dataclass(frozen=True, slots=True)
class Move:
    key: FileKey
    src_tier: Tier
    dst_tier: Tier
    size: int


@dataclass(frozen=True, slots=True)
class EvictionPlan:
    keys: tuple[FileKey, ...]  # empty when `enough` is False: evicting without making room is waste
    freed_bytes: int
    enough: bool


@dataclass(frozen=True, slots=True)
class DiskSpace:
    path: str
    tier: Tier
    free_bytes: int  # usable now: free space minus reserve minus writes in flight
    healthy: bool = True


@dataclass(frozen=True, slots=True)
class WritePlan:
    disk: DiskSpace
    evict: tuple[FileKey, ...] = ()  # files of that disk to remove first


# --- mover ---------------------------------------------------------------------------------------

def plan_moves(files: Iterable[FileStat], ssd_capacity_bytes: int, ssd_used_bytes: int,
               budget_bytes: int, high_water: float = 0.9,
               hysteresis: float = HYSTERESIS) -> list[Move]:
    """Promote the hottest HDD files to SSD while the SSD tier stays under `high_water`, demoting the
    coldest SSD files when a clearly hotter one (> `hysteresis` × their heat) needs their room.
    Demotions come before the promotion they make room for. Bytes copied (both directions) never
    exceed `budget_bytes`."""
    files = list(files)
    limit = int(ssd_capacity_bytes * high_water)
    room = limit - ssd_used_bytes  # negative when something else filled the SSD past the mark
    hot = sorted((f for f in files if f.tier is Tier.HDD and not f.busy and f.heat > 0 and f.size <= limit),
                 key=lambda f: (-f.heat, f.key))
    cold = sorted((f for f in files if f.tier is Tier.SSD and not f.busy),
                  key=lambda f: (f.heat, f.last_access, f.key))
    moves: list[Move] = []
    budget, taken = budget_bytes, 0  # cold[:taken] are already planned for demotion
    for h in hot:
        if budget <= 0:
            break
        gain, j = 0, taken
        while room + gain < h.size and j < len(cold) and h.heat > hysteresis * cold[j].heat:
            gain += cold[j].size
            j += 1
        if room + gain < h.size or h.size + gain > budget:
            continue  # a smaller, colder file further down may still fit
        moves.extend(Move(v.key, Tier.SSD, Tier.HDD, v.size) for v in cold[taken:j])
        moves.append(Move(h.key, Tier.HDD, Tier.SSD, h.size))
        room += gain - h.size
        budget -= h.size + gain
        taken = j
    return moves


# --- eviction and disk choice --------------------------------------------------------------------

def _eviction_order(policy: str):
    if policy == "lowest-popularity":
        return lambda f: (f.heat, f.last_access, f.key)
    if policy == "lru":
        return lambda f: (f.last_access, f.heat, f.key)
    raise ValueError(f"unknown eviction policy {policy!r}; expected one of {', '.join(POLICIES)}")


def choose_evictions(files: Iterable[FileStat], need_bytes: int, policy: str) -> EvictionPlan:
    """The fewest files, least valuable first under `policy`, whose removal frees `need_bytes`;
    pinned and busy files are never chosen."""
    order = _eviction_order(policy)
    if need_bytes <= 0:
        return EvictionPlan((), 0, True)
    chosen: list[FileKey] = []
    freed = 0
    for f in sorted((f for f in files if not f.pinned and not f.busy), key=order):
        chosen.append(f.key)
        freed += f.size
        if freed >= need_bytes:
            return EvictionPlan(tuple(chosen), freed, True)
    return EvictionPlan((), 0, False)


def choose_disk(disks: Sequence[DiskSpace], size: int, tier: Tier) -> DiskSpace | None:
    """The healthy disk of `tier` with room for `size` bytes and the most free space."""
    fits = [d for d in disks if d.healthy and d.tier is tier and d.free_bytes >= size]
    return max(fits, key=lambda d: (d.free_bytes, d.path), default=None)


def tier_order(tier: Tier | None, fallback: bool = True) -> tuple[Tier, ...]:
    """No preference means the capacity tier first: new content starts on HDD and the mover promotes
    what turns out hot (on an SSD-only appliance the fallback takes SSD)."""
    first = tier or Tier.HDD
    other = Tier.SSD if first is Tier.HDD else Tier.HDD
    return (first, other) if fallback or tier is None else (first,)


def plan_write(disks: Sequence[DiskSpace], files: Sequence[FileStat], size: int, tier: Tier | None,
               policy: str, fallback: bool = True) -> WritePlan | None:
    """Where a new file of `size` bytes goes: a disk with room on the preferred tier, else on the other
    tier, else a disk of the preferred (then other) tier after evicting its least valuable files. Room
    elsewhere beats eviction: a file on the slower tier still serves, an evicted one is a miss."""
    order = tier_order(tier, fallback)
    for t in order:
        disk = choose_disk(disks, size, t)
        if disk is not None:
            return WritePlan(disk)
    for t in order:
        best: tuple[EvictionPlan, DiskSpace] | None = None
        for disk in disks:
            if not disk.healthy or disk.tier is not t:
                continue
            plan = choose_evictions((f for f in files if f.disk == disk.path), size - disk.free_bytes, policy)
            if plan.enough and (best is None or plan.freed_bytes < best[0].freed_bytes):
                best = (plan, disk)
        if best is not None:
            return WritePlan(best[1], best[0].keys)
    return None
