"""Offload simulator: replays a week-long request trace against three ways to fill one site's cache of
a given capacity and prints the byte hit ratio (offload) of each:

  fill    nightly fill with fill's own planner (fill.core.placement / popularity): at 02:00 the cache
          becomes the plan — hottest by decayed popularity (half-life 1 day), launches of the coming
          days pre-positioned with a predicted popularity; a miss is steered elsewhere, never pulled in
  lru     pull-through: a miss fetches the whole file and evicts the least recently used ones
  belady  offline optimum for the same cache (evict, or do not admit, the file needed furthest in the
          future; exact for equal sizes, the standard reference for variable sizes)

The trace (pure Python, seeded): a catalog of titles (one file each, log-normal sizes), Zipf popularity
(α) over a ranking that drifts every day (log-normal random walk: daily churn), `--releases` new titles
a day, announced `--announce-days` ahead with their release date and starting among the hottest, decaying
after; each request reads a random share of its file. One warm-up day precedes the measured week
(every policy sees it; only the week is counted). Sizes are absolute, so the capacity-planning mode
answers an ISP's question in TB:

    python loadtests/offload_sim.py                       # the table at 3 cache sizes (~30 s)
    python loadtests/offload_sim.py --plan --target 0.95  # offload vs capacity, SSD/HDD split, plot
    python loadtests/offload_sim.py --signal served       # popularity only from bytes the cache served

`--signal demand` (default) feeds the planner every request of the region (steering sees misses too);
`served` only what the cache itself served, as heartbeats report it. The plot is a PNG when
matplotlib is installed, else an SVG written by hand.
"""
from __future__ import annotations

import argparse
import datetime as dt
import heapq
import math
import random
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contracts.ids import ApplianceId, FileKey  # noqa: E402
from fill.core.model import ApplianceView, CatalogFile, PlanPolicy  # noqa: E402
from fill.core.placement import place_cluster  # noqa: E402
from fill.core.popularity import with_predictions  # noqa: E402

GB, TB = 10**9, 10**12
DAY0 = dt.date(2026, 3, 1)


@dataclass(frozen=True)
class Trace:
    sizes: list[int]  # by file id
    release_day: list[int]  # day the title launches (<= 0: in the catalog from the start)
    requests: list[tuple[int, int]]  # (file id, bytes), in time order
    day_starts: list[int]  # index of the first request of each day (day 0 = warm-up), plus len
    days: int


def make_trace(titles: int, days: int, per_day: int, alpha: float, churn: float, releases: int,
               announce: int, seed: int) -> Trace:
    rng = random.Random(seed)
    total = titles + releases * (days + announce)
    sizes = [int(min(max(rng.lognormvariate(math.log(1.5 * GB), 0.6), 0.2 * GB), 12 * GB)) for _ in range(total)]
    release = [0] * titles + [1 + i // releases for i in range(total - titles)]
    rank = list(range(titles))
    rng.shuffle(rank)
    base = [1.0 / (r + 1) ** alpha for r in rank] + [0.0] * (total - titles)
    for i in range(titles, total):  # a launch starts among the hottest 1-30 ranks, halves every 3 days
        base[i] = 1.0 / rng.uniform(1, 30) ** alpha
    drift = [1.0] * total
    requests: list[tuple[int, int]] = []
    starts = []
    for day in range(days):
        starts.append(len(requests))
        weights = []
        for i in range(total):
            drift[i] *= rng.lognormvariate(0.0, churn)
            age = day - release[i]
            if age < 0:
                weights.append(0.0)
            elif release[i] > 0:
                weights.append(base[i] * drift[i] * 0.5 ** (age / 3.0))
            else:
                weights.append(base[i] * drift[i])
        cum, acc = [], 0.0
        for w in weights:
            acc += w
            cum.append(acc)
        for f in rng.choices(range(total), cum_weights=cum, k=per_day):
            requests.append((f, int(sizes[f] * rng.uniform(0.05, 1.0))))
    starts.append(len(requests))
    return Trace(sizes, release, requests, starts, days)


def catalog_bytes(t: Trace) -> int:
    return sum(s for s, r in zip(t.sizes, t.release_day) if r <= 0)


# --- policies -------------------------------------------------------------------------------------

def run_lru(t: Trace, capacity: int) -> tuple[int, int]:
    cache: OrderedDict[int, int] = OrderedDict()
    used = hit = total = 0
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
            continue
        while used + size > capacity:
            _, s = cache.popitem(last=False)
            used -= s
        cache[f] = size
        used += size
    return hit, total


def next_uses(t: Trace) -> list[int]:
    nxt = [0] * len(t.requests)
    seen: dict[int, int] = {}
    for i in range(len(t.requests) - 1, -1, -1):
        f = t.requests[i][0]
        nxt[i] = seen.get(f, 1 << 62)
        seen[f] = i
    return nxt


def run_belady(t: Trace, capacity: int, nxt: list[int]) -> tuple[int, int]:
    cached: dict[int, int] = {}  # file -> its next use
    heap: list[tuple[int, int]] = []  # (-next use, file), lazily invalidated
    used = hit = total = 0
    first = t.day_starts[1]
    for i, (f, nbytes) in enumerate(t.requests):
        counted = i >= first
        total += nbytes if counted else 0
        n = nxt[i]
        if f in cached:
            hit += nbytes if counted else 0
            cached[f] = n
            heapq.heappush(heap, (-n, f))
            continue
        size = t.sizes[f]
        if n >= 1 << 62 or size > capacity:
            continue  # never needed again, or never fits: do not admit
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
            continue
        for _, v in victims:
            del cached[v]
            used -= t.sizes[v]
        cached[f] = n
        used += size
        heapq.heappush(heap, (-n, f))
    return hit, total


@dataclass
class FillResult:
    hit: int
    total: int
    ssd_needed: int  # SSD bytes that hold the hottest files serving `ssd_share` of hit bytes (max over nights)


def run_fill(t: Trace, capacity: int, signal: str = "demand", predicted: float | None = None,
             announce: int = 7, ssd_share: float = 0.8, half_life_days: float = 1.0,
             pre_release_days: int = 1) -> FillResult:
    files = [CatalogFile(FileKey(str(i)), s, "0" * 32, str(i), DAY0 + dt.timedelta(days=r) if r > 0 else None)
             for i, (s, r) in enumerate(zip(t.sizes, t.release_day))]
    me = ApplianceView(ApplianceId("oca"), "http://oca", capacity, 0)
    heat: dict[FileKey, float] = {}
    hit = total = ssd_needed = 0
    decay = 0.5 ** (1.0 / half_life_days)
    for day in range(t.days):
        today = DAY0 + dt.timedelta(days=day)
        # The catalog lists a title from `announce` days before its launch.
        known = [f for f in files if f.release_date is None or (f.release_date - today).days <= announce]
        pred = predicted if predicted is not None else 0.0
        policy = PlanPolicy(copy_thresholds=(), predicted_popularity=pred, pre_release_days=pre_release_days,
                            post_release_days=2, capacity_fraction=1.0)
        pop = with_predictions(heat, known, today, policy)
        plan = place_cluster([me], known, pop, policy)
        order = {int(p.key): p.rank for p in plan.placed}
        held = set(order)
        ranked = sorted(held, key=order.__getitem__)
        served_by_pos = [0] * len(ranked)
        pos_of = {f: i for i, f in enumerate(ranked)}
        day_bytes: dict[int, int] = {}
        for f, nbytes in t.requests[t.day_starts[day]:t.day_starts[day + 1]]:
            if f in held:
                served_by_pos[pos_of[f]] += nbytes
            if signal == "demand" or f in held:
                day_bytes[f] = day_bytes.get(f, 0) + nbytes
            if day >= 1:
                total += nbytes
                hit += nbytes if f in held else 0
        if day >= 1:
            ssd_needed = max(ssd_needed, _prefix_for_share(ranked, served_by_pos, t.sizes, ssd_share))
        for k in list(heat):
            heat[k] *= decay
        for f, b in day_bytes.items():
            heat[FileKey(str(f))] = heat.get(FileKey(str(f)), 0.0) + b / t.sizes[f]
    return FillResult(hit, total, ssd_needed)


def _prefix_for_share(ranked: list[int], served: list[int], sizes: list[int], share: float) -> int:
    want, acc, need = share * sum(served), 0, 0
    for f, s in zip(ranked, served):
        if acc >= want:
            break
        acc += s
        need += sizes[f]
    return need


def predicted_from_warmup(t: Trace, rank: int = 20) -> float:
    """The 'configured predicted popularity': the heat of the rank-th hottest title on the warm-up day."""
    day_bytes: dict[int, int] = {}
    for f, b in t.requests[:t.day_starts[1]]:
        day_bytes[f] = day_bytes.get(f, 0) + b
    heats = sorted((b / t.sizes[f] for f, b in day_bytes.items()), reverse=True)
    return heats[min(rank, len(heats) - 1)] if heats else 1.0


# --- output ---------------------------------------------------------------------------------------

def table(t: Trace, fractions: list[float], args: argparse.Namespace) -> None:
    cat = catalog_bytes(t)
    pred = predicted_from_warmup(t)
    print(f"trace: {len(t.requests):,} requests over 1 warm-up + {t.days - 1} days, catalog {cat / TB:.2f} TB "
          f"({sum(1 for r in t.release_day if r <= 0):,} titles + {args.releases}/day launches), "
          f"Zipf a={args.alpha}, churn sigma={args.churn}, signal={args.signal}, predicted popularity={pred:.2f}, "
          f"pre_release_days={args.pre_release_days}")
    started = time.monotonic()
    nxt = next_uses(t)
    print(f"{'cache':>14} {'fill':>8} {'lru':>8} {'belady':>8} {'fill/lru':>9} {'fill/belady':>12}")
    rows = []
    for frac in fractions:
        cap = int(cat * frac)
        f = run_fill(t, cap, args.signal, pred, args.announce_days, pre_release_days=args.pre_release_days)
        lh, lt = run_lru(t, cap)
        bh, bt = run_belady(t, cap, nxt)
        fr, lr, br = f.hit / f.total, lh / lt, bh / bt
        rows.append((frac, fr, lr, br))
        print(f"{cap / TB:6.2f} TB {frac:4.0%} {fr:8.3f} {lr:8.3f} {br:8.3f} {fr / lr:9.3f} {fr / br:12.3f}  "
              f"{'PASS' if fr >= lr and fr >= 0.9 * br else 'MISS'}")
    print(f"({time.monotonic() - started:.1f} s; PASS = fill >= lru and fill >= 0.9 x belady)")


def plan_mode(t: Trace, args: argparse.Namespace) -> None:
    cat = catalog_bytes(t)
    pred = predicted_from_warmup(t)
    fracs = [0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8]
    points = []
    print(f"{'capacity':>10} {'fill':>7} {'lru':>7}  {'SSD for ' + format(args.ssd_share, '.0%') + ' of hits':>20}")
    for frac in fracs:
        cap = int(cat * frac)
        f = run_fill(t, cap, args.signal, pred, args.announce_days, args.ssd_share,
                     pre_release_days=args.pre_release_days)
        lh, lt = run_lru(t, cap)
        points.append((cap, f.hit / f.total, lh / lt, f.ssd_needed))
        print(f"{cap / TB:8.2f} TB {f.hit / f.total:7.3f} {lh / lt:7.3f}  {f.ssd_needed / TB:17.2f} TB")
    answer = find_capacity(t, points, args, pred)
    if answer is None:
        print(f"\n{args.target:.0%} offload is not reached below {points[-1][0] / TB:.2f} TB")
    else:
        cap, ratio, ssd = answer
        print(f"\nfor {args.target:.0%} byte offload: {cap / TB:.2f} TB in all ({ratio:.3f}); "
              f"SSD {ssd / TB:.2f} TB serves {args.ssd_share:.0%} of it, HDD {(cap - ssd) / TB:.2f} TB the rest")
    out = Path(args.plot)
    written = plot(points, args.target, out)
    print(f"plot: {written}")


def find_capacity(t: Trace, points: list[tuple[int, float, float, int]], args: argparse.Namespace,
                  pred: float) -> tuple[int, float, int] | None:
    """The smallest capacity (to ~1%) whose fill offload reaches the target: bisection between the
    sweep's bracketing points."""
    above = next((i for i, p in enumerate(points) if p[1] >= args.target), None)
    if above is None:
        return None
    hi = points[above]
    lo_cap = points[above - 1][0] if above > 0 else 0
    best = (hi[0], hi[1], hi[3])
    lo, high = lo_cap, hi[0]
    while high - lo > 0.01 * high:
        mid = (lo + high) // 2
        f = run_fill(t, mid, args.signal, pred, args.announce_days, args.ssd_share,
                     pre_release_days=args.pre_release_days)
        if f.hit / f.total >= args.target:
            high, best = mid, (mid, f.hit / f.total, f.ssd_needed)
        else:
            lo = mid
    return best


def plot(points: list[tuple[int, float, float, int]], target: float, out: Path) -> Path:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return svg_plot(points, target, out.with_suffix(".svg"))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [p[0] / TB for p in points]
    ax.plot(xs, [p[1] for p in points], "o-", label="nightly fill")
    ax.plot(xs, [p[2] for p in points], "s--", label="LRU pull-through")
    ax.axhline(target, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("cache capacity (TB)")
    ax.set_ylabel("byte hit ratio (offload)")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.grid(alpha=0.3)
    path = out.with_suffix(".png")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def svg_plot(points: list[tuple[int, float, float, int]], target: float, path: Path) -> Path:
    w, h, m = 640, 400, 50
    xmax = max(p[0] for p in points) / TB

    def xy(x: float, y: float) -> str:
        return f"{m + (w - 2 * m) * x / xmax:.1f},{h - m - (h - 2 * m) * y:.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
             f'font-size="12"><rect width="100%" height="100%" fill="white"/>',
             f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="black"/>',
             f'<line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>']
    for i in range(6):
        y = i / 5
        parts.append(f'<text x="{m - 8}" y="{h - m - (h - 2 * m) * y + 4:.1f}" text-anchor="end">{y:.1f}</text>')
        x = xmax * i / 5
        parts.append(f'<text x="{m + (w - 2 * m) * i / 5:.1f}" y="{h - m + 18}" text-anchor="middle">{x:.1f}</text>')
    t1, t2 = xy(0, target).split(","), xy(xmax, target).split(",")
    parts.append(f'<line x1="{t1[0]}" y1="{t1[1]}" x2="{t2[0]}" y2="{t2[1]}" stroke="grey" stroke-dasharray="3,3"/>')
    for idx, colour, label in ((1, "#1f77b4", "nightly fill"), (2, "#ff7f0e", "LRU pull-through")):
        pts = " ".join(xy(p[0] / TB, p[idx]) for p in points)
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{w - m - 120}" y="{m + 20 * idx}" fill="{colour}">{label}</text>')
    parts.append(f'<text x="{w / 2}" y="{h - 10}" text-anchor="middle">cache capacity (TB)</text>')
    parts.append(f'<text x="14" y="{h / 2}" transform="rotate(-90 14 {h / 2})" text-anchor="middle">'
                 f'byte hit ratio</text></svg>')
    path.write_text("\n".join(parts))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--titles", type=int, default=3000)
    p.add_argument("--days", type=int, default=7, help="measured days (one warm-up day is added)")
    p.add_argument("--requests-per-day", type=int, default=100_000)
    p.add_argument("--alpha", type=float, default=0.9, help="Zipf exponent")
    p.add_argument("--churn", type=float, default=0.25, help="daily log-normal drift of each title's popularity")
    p.add_argument("--releases", type=int, default=10, help="new titles per day")
    p.add_argument("--announce-days", type=int, default=7, help="days a launch is in the catalog before it")
    p.add_argument("--pre-release-days", type=int, default=PlanPolicy().pre_release_days,
                   help="the planner's pre_release_days: launches this close get the predicted popularity")
    p.add_argument("--signal", choices=("demand", "served"), default="demand")
    p.add_argument("--sizes", default="0.05,0.1,0.2", help="cache sizes as fractions of the catalog")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--plan", action="store_true", help="capacity planning: offload vs capacity and a plot")
    p.add_argument("--target", type=float, default=0.95)
    p.add_argument("--ssd-share", type=float, default=0.8, help="share of hit bytes the SSD tier should serve")
    p.add_argument("--plot", default="offload.png", help="plot file (.png with matplotlib, else .svg)")
    args = p.parse_args(argv)
    t = make_trace(args.titles, args.days + 1, args.requests_per_day, args.alpha, args.churn, args.releases,
                   args.announce_days, args.seed)
    if args.plan:
        plan_mode(t, args)
    else:
        table(t, [float(x) for x in args.sizes.split(",")], args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
