"""Demand, counted: per content region and file, exponentially decayed (requests, bytes) — what steering
saw clients ask for (hits and misses alike) and what playback saw them watch. Pure: no clock, no I/O.

Strategy. A count costs one dict lookup and one tuple add, whatever the table's size. Counts are kept
*scaled* to one instant, `base`: an amount counted at time t is stored as amount x growth(t), where
growth(t) = 2^((t - base) / half_life) is what a count at t is worth valued at `base`. Older counts then
never need touching as time passes: the whole table is a `contracts.demand.DemandReport` valued at
`base`, and `decay_to` — the one decay rule, the same the planner merges replicas with — gives the
counts at any instant. growth is memoised per quantum of half_life / 2^16 (its error is at most
2^(2^-17) - 1 ~ 5e-6 of a count). Past REBASE_AFTER half-lives the scale is large and the table is
revalued at a newer base (once every 64 days at a one-day half-life).

Bounded. At most `max_entries` (region, file) pairs: past it a new pair is refused (counted in
`dropped`), never an older one silently pushed out. A trim, run off the hot path, drops the coldest pairs
— fewest decayed requests, oldest first among equals — down to KEEP of the cap once the table is over
TRIM_ABOVE of it. The threshold comes from a strided sample (the stride is skipped in C), and the trim
goes one region per step (`trim_steps`) so a caller can yield between steps: a trim of 10^6 pairs done
at once measured ~0.7 s of CPU, too long to stall a loop that answers thousands of requests a second.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from itertools import islice
from sys import intern
from typing import Iterable, Iterator

from contracts.demand import Counts, DemandReport, decay_to
from contracts.ids import FileKey

QUANTUM_SHARE = 1 / 65536  # growth is memoised over this share of a half-life
REBASE_AFTER = 64  # half-lives: growth reaches 2^64, far below a float's range, then the table is revalued
TRIM_ABOVE = 0.9  # a trim starts once the table holds this share of max_entries ...
KEEP = 0.75  # ... and leaves this share, the hottest pairs
SAMPLE = 4096  # values sampled to place the trim's threshold

_UNIT = FileKey("unit")


def growth(base: float, t: float, half_life_s: float) -> float:
    """What one count at time `t` is worth valued at `base` (more than 1 for t after base):
    contracts.demand.decay_to of a single count, so this table and the planner decay alike."""
    unit = DemandReport("unit", "steering", t, half_life_s, {"": {_UNIT: (1.0, 0.0)}})
    return decay_to(unit, base)[""][_UNIT][0]


def decayed(report: DemandReport, at: float) -> DemandReport:
    """`report` (e.g. a `snapshot`) with its counts decayed to `at`: what goes on the wire."""
    return DemandReport(report.source, report.kind, at, report.half_life_s, decay_to(report, at))


@dataclass(frozen=True, slots=True)
class TrimPlan:
    threshold: float  # pairs with fewer (scaled) requests go ...
    tie_share: float  # ... and this share of those with exactly `threshold`, oldest first
    target: int  # pairs to drop in all (an estimate: the threshold comes from a sample)


class DemandTable:
    """region -> file -> (requests, bytes), scaled to `base`. Not thread-safe: one owner (the event
    loop) mutates it; `snapshot` hands out copies another thread may decay and encode."""

    def __init__(self, half_life_s: float, max_entries: int, now: float) -> None:
        if half_life_s <= 0 or max_entries < 1:
            raise ValueError("half_life_s and max_entries must be positive")
        # settings (`reconfigure` changes them)
        self.half_life_s = half_life_s
        self.max_entries = max_entries
        # the counts, valued at `base`
        self.base = now
        self.regions: dict[str, dict[FileKey, tuple[float, float]]] = {}
        self.entries = 0
        self.dropped = 0  # counts of a new pair refused at the cap (a trim had not caught up yet)
        # growth memo: self._w is the growth of counts at times in [self._w_from, self._w_until)
        self._w = 1.0
        self._w_from = self._w_until = 0.0

    # ---- the hot path ---------------------------------------------------------------------------

    def add(self, region: str, keys: Iterable[FileKey], requests: float, nbytes: float, now: float) -> None:
        """Count `requests` and `nbytes` at `now` for each of `keys` in `region`."""
        if not self._w_from <= now < self._w_until:
            self._weigh(now)
        w = self._w
        files = self.regions.get(region)
        if files is None:
            files = self.regions[region] = {}
        r, b = requests * w, nbytes * w
        for key in keys:
            old = files.get(key)
            if old is not None:
                files[key] = (old[0] + r, old[1] + b)
            elif self.entries < self.max_entries:
                files[intern(key)] = (r, b)  # one string per file, however many regions ask for it
                self.entries += 1
            else:
                self.dropped += 1

    def _weigh(self, now: float) -> None:
        quantum = self.half_life_s * QUANTUM_SHARE
        start = math.floor(now / quantum) * quantum
        self._w = growth(self.base, start + quantum / 2, self.half_life_s)
        self._w_from, self._w_until = start, start + quantum

    # ---- reading, restoring, revaluing ----------------------------------------------------------

    def snapshot(self, source: str, kind: str) -> DemandReport:
        """The counts valued at `base`, in copied dicts (values are immutable tuples): cheap on the
        owner's thread; `decayed(snapshot, now)` then does the O(n) work anywhere."""
        return DemandReport(source, kind, self.base, self.half_life_s,
                            {region: dict(files) for region, files in self.regions.items() if files})

    def restore(self, report: DemandReport) -> None:
        """Add a saved report's counts (decayed to `base`); the hottest first if they exceed the cap."""
        counts = decay_to(report, self.base)
        pairs = [(region, key, value) for region, files in counts.items() for key, value in files.items()]
        if self.entries + len(pairs) > self.max_entries:
            pairs.sort(key=lambda p: -p[2][0])
        for region, key, (r, b) in pairs:
            files = self.regions.setdefault(region, {})
            old = files.get(key)
            if old is not None:
                files[key] = (old[0] + r, old[1] + b)
            elif self.entries < self.max_entries:
                files[intern(key)] = (r, b)
                self.entries += 1
            else:
                self.dropped += 1

    def needs_rebase(self, now: float) -> bool:
        return now - self.base > REBASE_AFTER * self.half_life_s

    def rebase(self, now: float) -> None:
        """Revalue every count at `now` (O(n), rare: see REBASE_AFTER)."""
        counts: Counts = decay_to(DemandReport("self", "steering", self.base, self.half_life_s, self.regions), now)
        self.regions = {region: files for region, files in counts.items() if files}
        self.base = now
        self._w_from = self._w_until = 0.0

    def reconfigure(self, half_life_s: float, max_entries: int, now: float) -> None:
        """New settings (a reload). Counts valued at `now` are plain counts, whatever the half-life:
        revalue at `now` with the old one, then decay with the new one from there."""
        if half_life_s != self.half_life_s:
            self.rebase(now)
            self.half_life_s = half_life_s
            self._w_from = self._w_until = 0.0
        self.max_entries = max_entries

    # ---- trimming -------------------------------------------------------------------------------

    def trim_plan(self) -> TrimPlan | None:
        """Where to cut, if the table is over TRIM_ABOVE of the cap (None: nothing to do)."""
        if self.entries <= TRIM_ABOVE * self.max_entries:
            return None
        target = self.entries - int(KEEP * self.max_entries)
        stride = max(1, self.entries // SAMPLE)
        sample = sorted(v[0] for files in self.regions.values() for v in islice(files.values(), 0, None, stride))
        if not sample:
            return None
        wanted = target / self.entries * len(sample)  # sampled values that should go
        threshold = sample[min(len(sample) - 1, int(wanted))]
        below = bisect.bisect_left(sample, threshold)
        ties = bisect.bisect_right(sample, threshold) - below
        tie_share = min(1.0, max(0.0, (wanted - below) / ties)) if ties else 0.0
        return TrimPlan(threshold, tie_share, target)

    def trim_region(self, region: str, plan: TrimPlan) -> int:
        """Drop `region`'s pairs colder than the plan's threshold; returns how many went."""
        files = self.regions.get(region)
        if not files:
            return 0
        threshold = plan.threshold
        cold = [k for k, v in files.items() if v[0] < threshold]
        if plan.tie_share > 0:
            ties = [k for k, v in files.items() if v[0] == threshold]
            cold += ties[:round(len(ties) * plan.tie_share)]
        for key in cold:
            del files[key]
        if not files:
            del self.regions[region]
        self.entries -= len(cold)
        return len(cold)

    def trim_steps(self) -> Iterator[int]:
        """A trim one region at a time (pairs dropped per step); the caller may yield between steps
        (counts that arrive meanwhile are kept or dropped by the same threshold)."""
        plan = self.trim_plan()
        if plan is None:
            return
        for region in list(self.regions):
            yield self.trim_region(region, plan)

    def trim(self) -> int:
        """A whole trim at once (tests, small tables)."""
        return sum(self.trim_steps())


__all__ = ["DemandTable", "TrimPlan", "growth", "decayed", "TRIM_ABOVE", "KEEP", "REBASE_AFTER"]
