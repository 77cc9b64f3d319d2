"""The offload simulator's policies: ways to run one site's cache of a given capacity over a trace, each
returning the bytes it served (hits) of the bytes asked for, and its daytime upstream.

  run_fill    the product: fill's own planner (`fill.core.plan.plan`, what `fill plan` calls) plans half
              an hour before each fill run (`fill_hours`: 02:00 and hourly to 13:00, as the systemd
              timers do) from the signals the product feeds it — heartbeats' decayed bytes served and,
              with `signal="demand"`, steering's decayed count of every request of the region, hits and
              misses. A run makes the cache hold the manifest (fill is off-peak and free here; the old
              set's files go, as the agent deletes them). The manifest is pinned; what the planner leaves
              unplanned (1 - capacity_fraction × (1 - reactive_share)) is filled on miss by pull-through
              when `pull` is given, admitted by `fill.core.popularity.admit_on_miss`, and evicted there
              only, as the appliance's store does (`lowest-popularity` or `lru`, pinned files never).
              Without `pull` a miss is steered elsewhere and nothing but the manifest is held.
  run_lru     pull-through alone: every miss fetches the whole file, the least recently used files go.
  run_belady  the offline reference: at every fill run the cache becomes, for free, the files needed
              soonest (hindsight), then Belady between runs (evict, or do not admit, the file needed
              furthest in the future). The exact optimum for equal sizes and whole-file reads (then no
              policy here can beat it); for variable sizes the standard reference, not a proven bound.

Upstream counts what crosses into the site during the day: a miss's bytes served elsewhere, or the
whole file when the miss pulls it (the waiting request is served from the pull). Counters decay
continuously (half-life 1 day, the store's and the demand reports' default) as `value × 2^(t / half-life)`
accumulators: one multiply per request, decayed once at plan time.
"""
from __future__ import annotations

import datetime as dt
import heapq
from collections import OrderedDict
from dataclasses import dataclass, field

from contracts.ids import ApplianceId, FileKey
from fill.core.model import ApplianceView, CatalogFile, ClusterView, FleetView, PlanPolicy
from fill.core.plan import plan
from steering.core.admission import PullPolicy, admit_on_miss
from loadtests.offload_trace import NEVER, Trace

DAY0 = dt.date(2026, 3, 1)
FILL_HOURS = tuple(range(12))  # systemd/oca-fill.timer: 02:00 and every hour to 13:00 (fill-plan.timer: at :30)
DAY_S = 86400.0
ME = ApplianceId("oca")
REGION = "region"


@dataclass(frozen=True)
class Result:
    hit: int  # bytes served by the site's cache during the measured days
    total: int  # bytes asked for
    pulled: int = 0  # bytes fetched on miss during the day (whole files)
    upstream: int = 0  # bytes from outside the site during the day: misses served elsewhere, and pulls
    ssd_needed: int = 0  # SSD bytes whose files serve `ssd_share` of the hit bytes (max over days)

    @property
    def ratio(self) -> float:
        return self.hit / self.total if self.total else 0.0


@dataclass(frozen=True)
class FillSim:
    """One way to run the site with fill's planner (see the module docstring)."""
    policy: PlanPolicy = field(default_factory=PlanPolicy)
    signal: str = "demand"  # "demand": steering's counts and heartbeats; "served": heartbeats only
    pull: PullPolicy | None = None  # None: pull-through off, a miss is steered elsewhere
    eviction: str = "lowest-popularity"  # the appliance's store.eviction (inside the unplanned room)
    fill_hours: tuple[int, ...] = FILL_HOURS  # fill runs, hours after the window opens (02:00)
    tinylfu: bool = False  # tried, not shipped: pull only a file hotter than everything it would evict
    half_life_days: float = 1.0
    ssd_share: float = 0.8


# --- LRU and Belady ------------------------------------------------------------------------------

def run_lru(t: Trace, capacity: int) -> Result:
    cache: OrderedDict[int, int] = OrderedDict()
    used = hit = total = pulled = upstream = 0
    first = t.day_starts[1]
    for i, (f, nbytes) in enumerate(t.requests):
        counted = i >= first
        total += nbytes if counted else 0
        if f in cache:
            cache.move_to_end(f)
            hit += nbytes if counted else 0
            continue
        size = t.sizes[f]
        if size > capacity:
            upstream += nbytes if counted else 0
            continue
        while used + size > capacity:
            _, s = cache.popitem(last=False)
            used -= s
        cache[f] = size
        used += size
        pulled += size if counted else 0
        upstream += size if counted else 0  # the request waits for the pull and is served from it
    return Result(hit, total, pulled, upstream)


def run_belady(t: Trace, capacity: int, uses: tuple[list[int], dict[int, dict[int, int]]]) -> Result:
    """`uses` from `next_uses(t, refill_points(t, hours))`: at each of those points the cache becomes,
    for free, the files needed soonest (as many as fit)."""
    nxt, refills = uses
    cached: dict[int, int] = {}  # file -> its next use
    heap: list[tuple[int, int]] = []  # (-next use, file), lazily invalidated
    used = hit = total = pulled = upstream = 0
    first = t.day_starts[1]
    for i, (f, nbytes) in enumerate(t.requests):
        if i in refills:
            cached.clear()
            used = 0
            for g, n in sorted(refills[i].items(), key=lambda kv: kv[1]):
                if used + t.sizes[g] <= capacity:
                    cached[g] = n
                    used += t.sizes[g]
            heap = [(-n, g) for g, n in cached.items()]
            heapq.heapify(heap)
        counted = i >= first
        total += nbytes if counted else 0
        n = nxt[i]
        if f in cached:
            hit += nbytes if counted else 0
            cached[f] = n
            heapq.heappush(heap, (-n, f))
            continue
        size = t.sizes[f]
        if n < NEVER and size <= capacity:  # else never needed again, or never fits: do not admit
            used = _belady_admit(t, capacity, cached, heap, used, f, n, size)
        got = size if f in cached else 0
        pulled += got if counted else 0
        upstream += (got or nbytes) if counted else 0
    return Result(hit, total, pulled, upstream)


def refill_points(t: Trace, hours: tuple[int, ...] = FILL_HOURS) -> list[int]:
    """The request indices at which fill runs start (the free refills Belady gets too)."""
    return sorted({t.hour_starts[day][h] for day in range(t.days) for h in hours})


def _belady_admit(t: Trace, capacity: int, cached: dict[int, int], heap: list[tuple[int, int]], used: int,
                  f: int, n: int, size: int) -> int:
    victims = []
    free = capacity - used
    while free < size and heap:
        neg, v = heap[0]
        if cached.get(v) != -neg:
            heapq.heappop(heap)
            continue
        if -neg <= n:
            break  # everything left is needed sooner than f
        heapq.heappop(heap)
        victims.append((neg, v))
        free += t.sizes[v]
    if free < size:
        for item in victims:
            heapq.heappush(heap, item)
        return used
    for _, v in victims:
        del cached[v]
        used -= t.sizes[v]
    cached[f] = n
    heapq.heappush(heap, (-n, f))
    return used + size


# --- the planner, nightly fill and the reactive share ----------------------------------------------

def catalog_of(t: Trace) -> list[CatalogFile]:
    return [CatalogFile(FileKey(str(i)), s, "0" * 32, str(i), DAY0 + dt.timedelta(days=r) if r > 0 else None)
            for i, (s, r) in enumerate(zip(t.sizes, t.release_day))]


class Site:
    """One appliance's disk: the pinned manifest and the pulled files around it. State in one place."""

    def __init__(self, t: Trace, capacity: int, sim: FillSim) -> None:
        # configuration
        self.t, self.capacity, self.sim = t, capacity, sim
        self.hl_days = sim.half_life_days
        # the disk
        self.pinned: dict[int, int] = {}  # manifest files (file -> size), priority order
        self.unpinned: dict[int, int] = {}  # pulled files
        self.used = 0
        self.pinned_bytes = 0
        self.score: dict[int, float] = {}  # held files: the store's heat (bytes served ÷ size), growth-normalised
        self.last: dict[int, int] = {}  # held files: last access (request index)
        self.heap: list[tuple[float, int, int]] = []  # unpinned (score, last, file), lazily invalidated
        self.lru: OrderedDict[int, None] = OrderedDict()  # unpinned, least recently used first
        # the planner's signals (growth-normalised plays) and the pull-through admission state
        self.demand: dict[int, float] = {}
        self.served: dict[int, float] = {}
        self.misses: dict[int, tuple[float, ...]] = {}

    def grow(self, day: float) -> float:
        return 2.0 ** (day / self.hl_days)

    # -- the night: a plan becomes the pinned set
    def apply(self, manifest: list[int]) -> None:
        sizes = self.t.sizes
        keep = set(manifest)
        for f in [f for f in self.pinned if f not in keep]:  # managed files that left the manifest go
            self._drop(f, self.pinned)
        new: dict[int, int] = {}
        for f in manifest:
            if f in self.unpinned:  # pulled before, planned now: kept, pinned
                del self.unpinned[f]
                self.lru.pop(f, None)
            elif f not in self.pinned:
                self.used += sizes[f]
                self.score.setdefault(f, 0.0)
            new[f] = sizes[f]
        self.pinned = new
        self.pinned_bytes = sum(new.values())
        while self.used > self.capacity and self._evict_one() is not None:
            pass

    def _drop(self, f: int, where: dict[int, int]) -> None:
        self.used -= where.pop(f)
        self.score.pop(f, None)
        self.last.pop(f, None)
        self.lru.pop(f, None)

    def _evict_one(self) -> int | None:
        """Remove the least valuable unpinned file; None when none is left."""
        got = self._victims(1)
        if not got:
            return None
        self._drop(got[0], self.unpinned)
        return got[0]

    def _victims(self, need: int) -> list[int] | None:
        """The least valuable unpinned files, in eviction order, whose sizes add up to `need` bytes;
        None if there are not enough."""
        out, freed = [], 0
        if self.sim.eviction == "lru":
            for f in self.lru:
                if freed >= need:
                    break
                out.append(f)
                freed += self.unpinned[f]
            return out if freed >= need else None
        popped = []
        while freed < need and self.heap:
            entry = heapq.heappop(self.heap)
            s, last, f = entry
            if f not in self.unpinned or self.score.get(f) != s or self.last.get(f) != last or f in out:
                continue
            popped.append(entry)
            out.append(f)
            freed += self.unpinned[f]
        for entry in popped:
            heapq.heappush(self.heap, entry)
        return out if freed >= need else None

    # -- the day
    def request(self, i: int, f: int, nbytes: int, now_days: float) -> bool:
        x = nbytes / self.t.sizes[f] * self.grow(now_days)
        self.demand[f] = self.demand.get(f, 0.0) + x
        if f in self.pinned or f in self.unpinned:
            self.served[f] = self.served.get(f, 0.0) + x
            self._touch(f, i, x)
            return True
        return False

    def _touch(self, f: int, i: int, x: float) -> None:
        self.score[f] = self.score.get(f, 0.0) + x
        self.last[f] = i
        if f in self.unpinned:
            if self.sim.eviction == "lru":
                self.lru.move_to_end(f)
            else:
                heapq.heappush(self.heap, (self.score[f], i, f))

    def miss(self, i: int, f: int, nbytes: int, now_days: float) -> int:
        """Pull-through on a miss: the bytes pulled (0 when not admitted or no room)."""
        pull = self.sim.pull
        size = self.t.sizes[f]
        if pull is None or size > self.capacity - self.pinned_bytes:
            return 0
        verdict = admit_on_miss(self.misses.get(f, ()), now_days * DAY_S, pull)
        self.misses[f] = verdict.misses
        if not verdict.admit:
            return 0
        victims = self._victims(size - (self.capacity - self.used))
        if victims is None:
            return 0
        if self.sim.tinylfu and any(self.score[v] >= self.demand[f] for v in victims):
            return 0  # what would have to go is worth more
        for v in victims:
            self._drop(v, self.unpinned)
        self.misses.pop(f, None)
        self.unpinned[f] = size
        self.used += size
        self.served[f] = self.served.get(f, 0.0) + nbytes / size * self.grow(now_days)  # the waiting request
        self.score[f] = 0.0
        if self.sim.eviction == "lru":
            self.lru[f] = None
        self._touch(f, i, nbytes / size * self.grow(now_days))
        return size

    # -- the planner's inputs at time `now_days`
    def signals(self, now_days: float) -> tuple[dict, dict | None]:
        decay = 1.0 / self.grow(now_days)
        sizes = self.t.sizes
        reports = {ME: {FileKey(str(f)): (0.0, v * decay * sizes[f]) for f, v in self.served.items()}}
        demand = None
        if self.sim.signal == "demand":
            demand = {REGION: {FileKey(str(f)): v * decay for f, v in self.demand.items()}}
        return reports, demand


def run_fill(t: Trace, capacity: int, sim: FillSim = FillSim(), announce: int = 7) -> Result:
    files = catalog_of(t)
    fleet = FleetView((ClusterView("site", REGION, (ApplianceView(ME, "http://oca", capacity, 0),)),))
    site = Site(t, capacity, sim)
    known_on: dict[dt.date, list[CatalogFile]] = {}

    def make_plan(now: float, today: dt.date) -> list[int]:
        if today not in known_on:  # the catalog lists a title from `announce` days before its launch
            known_on[today] = [f for f in files if f.release_date is None or (f.release_date - today).days <= announce]
        reports, demand = site.signals(now)
        return [int(m.key) for m in plan(fleet, known_on[today], reports, today, sim.policy, demand).files.get(ME, ())]

    fills = set(sim.fill_hours)
    plans = {(h - 1) % 24 for h in sim.fill_hours}  # the planner runs at half past the hour before a fill
    pending: list[int] | None = None
    hit = total = pulled = upstream = ssd_needed = 0
    first = t.day_starts[1]
    for day in range(t.days):
        day_hits: dict[int, int] = {}
        for k in range(24):
            a, b = t.hour_starts[day][k], t.hour_starts[day][k + 1]
            today = DAY0 + dt.timedelta(days=day + (1 if k >= 22 else 0))  # 00:00-02:00 is tomorrow's date
            if k in fills:
                site.apply(pending if pending is not None else make_plan(day + k / 24, today))
                pending = None
            mid, span = (a + (b - a) // 2 if k in plans else -1), max(1, b - a)
            for i in range(a, b):
                now = day + (k + (i - a) / span) / 24
                if i == mid:
                    pending = make_plan(now, today)
                f, nbytes = t.requests[i]
                counted = i >= first
                total += nbytes if counted else 0
                if site.request(i, f, nbytes, now):
                    hit += nbytes if counted else 0
                    day_hits[f] = day_hits.get(f, 0) + nbytes
                else:
                    got = site.miss(i, f, nbytes, now)
                    pulled += got if counted else 0
                    upstream += (got or nbytes) if counted else 0
        if day >= 1:
            ssd_needed = max(ssd_needed, _ssd_for_share(site, day_hits, sim.ssd_share))
    return Result(hit, total, pulled, upstream, ssd_needed)


def _ssd_for_share(site: Site, hits: dict[int, int], share: float) -> int:
    """SSD bytes for the files serving `share` of the day's hit bytes: planned files in priority order
    (the planner puts the first ones on SSD), then pulled ones, busiest first (the mover promotes)."""
    order = [f for f in site.pinned if f in hits] + sorted((f for f in hits if f not in site.pinned),
                                                           key=lambda f: -hits[f])
    want, acc, need = share * sum(hits.values()), 0, 0
    for f in order:
        if acc >= want:
            break
        acc += hits[f]
        need += site.t.sizes[f]
    return need

