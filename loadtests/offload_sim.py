"""Offload simulator: replays seeded week-long request traces against ways to fill one site's cache of a
given capacity and prints the byte hit ratio (offload) of each. The first column is the product as it
ships by default; the others are the references it is judged against:

  shipped  the product's defaults, read from the code: fill's planner (`fill.core.plan.plan`) with
           `PlanPolicy()`, fed the demand signal (steering's decayed count of every request of the region,
           hits and misses, beside heartbeats' bytes served), filling at 02:00 and every hour of the
           window (systemd/oca-fill.timer; the planner runs at half past, fill-plan.timer), and the
           appliance pulling a file on the site's 8th miss of it in a day (steering's [pull_through]
           admission, `PullPolicy()`; the appliance's pull-through as config/oca.example.toml turns it
           on) into the room the plan leaves, with the store's default eviction (`PULL_THROUGH` below)
  nopull   the same without pull-through (an appliance configured without a parent): nightly fill alone
  served   the old product, for the record: the old launch window (2 days either side, a fixed
           prediction) and heartbeats' bytes served as the only signal
  lru      pull-through alone: every miss fetches the whole file, least recently used files go
  belady   the offline reference: the same free fill runs, with hindsight, then Belady's rule

Traces (loadtests/offload_trace.py): Zipf popularity drifting daily (churn), launches a day, a streaming
day's hourly curve, one warm-up day before the measured week. `--tune` picks the policy's knobs on three
tuning traces (2 seeds); `--report` judges the shipped policy on traces it was not tuned on (other Zipf
exponents, churns, launch rates, traffic and seeds):

    python loadtests/offload_sim.py                        # the default trace at 3 cache sizes (~30 s)
    python loadtests/offload_sim.py --report               # tuning + judge traces, 3 seeds (~3.5 min, 2 cores)
    python loadtests/offload_sim.py --report --quick       # smoke: tiny traces (~2 s)
    python loadtests/offload_sim.py --tune                 # the knob sweep behind the defaults (~5 min)
    python loadtests/offload_sim.py --plan --target 0.95   # capacity for a target offload, SSD/HDD, plot
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fill.core.model import PlanPolicy  # noqa: E402
from steering.core.admission import PullPolicy  # noqa: E402
from loadtests.offload_policies import FillSim, Result, refill_points, run_belady, run_fill, run_lru  # noqa: E402
from loadtests.offload_trace import TB, TraceSpec, catalog_bytes, make_trace, next_uses  # noqa: E402
from oca.config import StoreConfig, load as load_oca_config  # noqa: E402
from steering.config import PullThroughConfig as SteeringPull  # noqa: E402

SIZES = (0.05, 0.1, 0.2)
TUNING = (TraceSpec(seed=1), TraceSpec(alpha=0.9, churn=0.75, releases=40, per_day=30_000, seed=1),
          TraceSpec(alpha=0.9, churn=0.25, releases=10, per_day=10_000, seed=1))
JUDGE = (TraceSpec(alpha=0.6, churn=0.5, releases=20), TraceSpec(alpha=0.8, churn=1.0, releases=60),
         TraceSpec(alpha=1.2, churn=0.1, releases=5), TraceSpec(alpha=0.8, churn=0.1, releases=60),
         TraceSpec(alpha=1.2, churn=1.0, releases=20), TraceSpec(alpha=0.6, churn=1.0, releases=5, release_hour=16),
         TraceSpec(alpha=0.8, churn=0.5, releases=60, per_day=20_000))
TUNE_SEEDS = (1, 2)
TIE = 0.002  # hit ratios closer than this are a tie in --tune (about one seed's noise)
JUDGE_SEEDS = (3, 4, 5)
QUICK = dict(titles=300, per_day=6000, days=4)


def store_eviction() -> str:
    return next(f.default for f in msgspec.structs.fields(StoreConfig) if f.name == "eviction")


# The first column is what ships: pull-through admitted by steering (its [pull_through] default) and
# done by the appliance as the example config an operator installs turns it on.
EXAMPLE_OCA = Path(__file__).resolve().parents[1] / "config" / "oca.example.toml"
PULL_THROUGH = SteeringPull().enabled and load_oca_config(EXAMPLE_OCA).pull_through.enabled


def shipped() -> FillSim:
    """The product's defaults: PlanPolicy(), the demand signal, the fill runs of systemd/oca-fill.timer,
    and pull-through with steering's admission policy and the store's default eviction."""
    return FillSim(PlanPolicy(), "demand", SteeringPull().policy if PULL_THROUGH else None, store_eviction())


# The planner as it shipped before the demand signal, for the record (--tune: the launch window lost).
OLD_POLICY = PlanPolicy(pre_release_days=2, post_release_days=2, pre_release_weight=1.0, learn_days=0)


def columns() -> dict[str, FillSim | None]:
    """The policy columns, shipped first; None: computed by run_lru / run_belady."""
    return {"shipped": shipped(), "nopull": FillSim(PlanPolicy(), "demand", None, store_eviction()),
            "served": FillSim(OLD_POLICY, "served"), "lru": None, "belady": None}


@dataclass(frozen=True)
class Row:
    fraction: float
    capacity: int
    results: dict[str, Result]

    def ratio(self, name: str) -> float:
        return self.results[name].ratio

    def upstream(self, name: str) -> float:
        return self.results[name].upstream / self.results[name].total


def evaluate(spec: TraceSpec, fractions: tuple[float, ...], sims: dict[str, FillSim | None]) -> list[Row]:
    """Every policy on one trace at each cache size (a fraction of the catalog's bytes)."""
    t = make_trace(spec)
    uses = next_uses(t, refill_points(t, shipped().fill_hours)) if "belady" in sims else None
    rows = []
    for frac in fractions:
        cap = int(catalog_bytes(t) * frac)
        out = {}
        for name, sim in sims.items():
            if name == "lru":
                out[name] = run_lru(t, cap)
            elif name == "belady":
                out[name] = run_belady(t, cap, uses)
            else:
                out[name] = run_fill(t, cap, sim)
        rows.append(Row(frac, cap, out))
    return rows


# --- output ---------------------------------------------------------------------------------------

def describe_shipped() -> str:
    p, sim = PlanPolicy(), shipped()
    room = 1 - p.capacity_fraction * (1 - p.reactive_share)
    knobs = ", ".join(f"{k}={getattr(p, k)}" for k in (
        "capacity_fraction", "reactive_share", "pre_release_days", "pre_release_weight", "post_release_days",
        "learn_days", "learn_factor", "predicted_popularity"))
    pull = (f"pull-through on miss into the unplanned {room:.0%}: {sim.pull}, eviction {sim.eviction}"
            if sim.pull else "no pull-through")
    hours = f"{sim.fill_hours[0] + 2:02d}..{sim.fill_hours[-1] + 2:02d}h"
    return (f"shipped = PlanPolicy({knobs}) + demand signal + fill runs at {hours} + {pull}"
            f"\nnopull = shipped without pull-through (nightly and hourly fill alone)")


HEAD = (f"{'cache':>14} {'shipped':>8} {'nopull':>8} {'served':>8} {'lru':>8} {'belady':>8} "
        f"{'ship/lru':>9} {'ship/bel':>9} {'up ship':>8} {'up lru':>7}")


def print_rows(rows: list[Row]) -> None:
    for r in rows:
        print(f"{r.capacity / TB:6.2f} TB {r.fraction:4.0%} " + " ".join(f"{r.ratio(n):8.3f}" for n in
              ("shipped", "nopull", "served", "lru", "belady")) +
              f" {r.ratio('shipped') / r.ratio('lru'):9.3f} {r.ratio('shipped') / r.ratio('belady'):9.3f}"
              f" {r.upstream('shipped'):8.3f} {r.upstream('lru'):7.3f}")


UP = "up = daytime upstream (misses served elsewhere, and whole files pulled on miss) ÷ bytes asked"


def table(spec: TraceSpec, fractions: tuple[float, ...]) -> None:
    started = time.monotonic()
    print(f"trace: {spec.label}, seed {spec.seed}, {spec.titles} titles, {spec.per_day:,} requests/day, "
          f"1 warm-up + {spec.days - 1} days")
    print(describe_shipped())
    print(HEAD)
    print_rows(evaluate(spec, fractions, columns()))
    print(f"({time.monotonic() - started:.1f} s; {UP})")


def _job(args: tuple[TraceSpec, tuple[float, ...]]) -> tuple[TraceSpec, list[Row]]:
    spec, fractions = args
    return spec, evaluate(spec, fractions, columns())


def report(quick: bool, procs: int) -> None:
    """The tuning traces (seed 1) and the judge traces (3 other seeds): mean byte hit ratios over seeds,
    the ratios shipped/LRU and shipped/Belady, and the worst seed's shipped/LRU."""
    started = time.monotonic()
    groups = [("tuning", [_scaled(s, quick)]) for s in (TUNING[:1] if quick else TUNING)]
    seeds = JUDGE_SEEDS[:1] if quick else JUDGE_SEEDS
    groups += [("judge", [_scaled(replace(s, seed=seed), quick) for seed in seeds])
               for s in (JUDGE[:2] if quick else JUDGE)]
    jobs = [(spec, SIZES) for _, specs in groups for spec in specs]
    results = dict(_map(_job, jobs, procs))
    print(describe_shipped())
    print(f"{'trace':<52} {'cache':>5} {'shipped':>8} {'nopull':>8} {'served':>8} {'lru':>8} {'belady':>8} "
          f"{'ship/lru':>9} {'(worst)':>8} {'ship/bel':>9} {'up ship':>8} {'up lru':>7}")
    for kind, specs in groups:
        name = f"{kind}: {specs[0].label} s{','.join(str(s.seed) for s in specs)}"
        for i, frac in enumerate(SIZES):
            rows = [results[s][i] for s in specs]
            mean = {n: statistics.fmean(r.ratio(n) for r in rows) for n in rows[0].results}
            up = {n: statistics.fmean(r.upstream(n) for r in rows) for n in ("shipped", "lru")}
            worst = min(r.ratio("shipped") / r.ratio("lru") for r in rows)
            print(f"{name if i == 0 else '':<52} {frac:5.0%} " +
                  " ".join(f"{mean[n]:8.3f}" for n in ("shipped", "nopull", "served", "lru", "belady")) +
                  f" {mean['shipped'] / mean['lru']:9.3f} {worst:8.3f} {mean['shipped'] / mean['belady']:9.3f}"
                  f" {up['shipped']:8.3f} {up['lru']:7.3f}")
    print(f"({time.monotonic() - started:.0f} s; byte hit ratios are means over the seeds, ratios of those means; "
          f"worst = the lowest seed's shipped/lru; {UP})")


def _scaled(spec: TraceSpec, quick: bool) -> TraceSpec:
    """--quick: a tenth of the catalog and its launches, a few days."""
    return replace(spec, releases=max(1, spec.releases // 10), **QUICK) if quick else spec


def _map(fn, jobs: list, procs: int) -> list:
    if procs <= 1:
        return [fn(j) for j in jobs]
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(procs) as pool:
        return pool.map(fn, jobs, chunksize=1)


# --- tuning ---------------------------------------------------------------------------------------

def _tune_job(args: tuple[TraceSpec, dict[str, FillSim | None]]) -> tuple[str, list[Row]]:
    spec, sims = args
    return spec.label, evaluate(spec, SIZES, sims)


def sweep(variants: dict[str, FillSim], quick: bool, procs: int) -> list[tuple[str, float, float, float]]:
    """Each variant on the tuning traces: (name, worst fill/LRU over traces and sizes, mean, upstream),
    the winner first: the best worst fill/LRU, then mean fill/LRU, then the least daytime upstream
    (misses served elsewhere + pulls ÷ bytes asked), each to within TIE; then the first given."""
    specs = [_scaled(replace(s, seed=seed), quick) for s in (TUNING[:1] if quick else TUNING)
             for seed in (TUNE_SEEDS[:1] if quick else TUNE_SEEDS)]
    out = _map(_tune_job, [(s, {"lru": None, **variants}) for s in specs], procs)
    rows = [r for _, trace_rows in out for r in trace_rows]
    scored = []
    for name in variants:
        ratios = [r.ratio(name) / r.ratio("lru") for r in rows]
        up = statistics.fmean(r.results[name].upstream / r.results[name].total for r in rows)
        scored.append((name, min(ratios), statistics.fmean(ratios), up))
    scored.sort(key=lambda x: (-x[1], -x[2]))
    for name, worst, mean, up in scored:
        print(f"  {name:<36} fill/lru worst {worst:6.3f} mean {mean:6.3f}   upstream {up:5.3f}")
    top = max(x[1] for x in scored)  # the objective: worst, then mean, then upstream, each to within TIE;
    near = [x for x in scored if x[1] >= top - TIE]  # then the first in the order given (the incumbent)
    best_mean = max(x[2] for x in near)
    near = [x for x in near if x[2] >= best_mean - TIE]
    least = min(x[3] for x in near)
    order = list(variants)
    winner = min((x for x in near if x[3] <= least + TIE), key=lambda x: order.index(x[0]))
    print(f"  -> {winner[0]}")
    scored.remove(winner)
    scored.insert(0, winner)
    return scored


def tune(quick: bool, procs: int) -> None:
    """Staged: the planner's launch window and prediction (fill runs only), then the reactive share and
    its admission, then eviction and TinyLFU admission; each stage keeps `sweep`'s winner."""
    started = time.monotonic()
    base = PlanPolicy()
    print(f"tuning traces: {'; '.join(s.label for s in TUNING)} (seeds {TUNE_SEEDS}), sizes {SIZES}")
    print("1. launch window and prediction (fill runs only, no pull-through)")
    windows = [(0, 1.0, 0), (0, 1.0, 2), (2, 1.0, 2)] + [(1, w, post) for w in (1.0, 0.25, 0.1) for post in (0, 2)]
    stage1 = {f"pre {pre} weight {w} post {post}": FillSim(replace(
        base, reactive_share=0.0, pre_release_days=pre, pre_release_weight=w, post_release_days=post))
        for pre, w, post in windows}
    best = stage1[sweep(stage1, quick, procs)[0][0]].policy
    stage1b = {f"learn_days {d}": FillSim(replace(best, learn_days=d)) for d in (7, 0)}
    best = stage1b[sweep(stage1b, quick, procs)[0][0]].policy
    print("2. pull-through into the unplanned room x admission (pull on the n-th miss within a day)")
    stage2 = {"no pull-through": FillSim(best)}
    stage2 |= {f"reactive_share {share} miss {n}": FillSim(replace(best, reactive_share=share), pull=PullPolicy(n))
               for share in (0.0, 0.1, 0.2) for n in (1, 4, 8, 16)}
    top = stage2[sweep(stage2, quick, procs)[0][0]]
    if top.pull is None:
        print(f"({time.monotonic() - started:.0f} s) pull-through does not win")
        return
    print("3. eviction inside the unplanned room, TinyLFU admission")
    stage3 = {"as stage 2": top, "eviction lru": replace(top, eviction="lru"),
              "TinyLFU (hotter than its victims)": replace(top, tinylfu=True)}
    sweep(stage3, quick, procs)
    print(f"({time.monotonic() - started:.0f} s)")


# --- capacity planning ----------------------------------------------------------------------------

def plan_mode(spec: TraceSpec, args: argparse.Namespace) -> None:
    from loadtests.offload_plot import plot

    t = make_trace(spec)
    cat = catalog_bytes(t)
    sim = replace(shipped(), ssd_share=args.ssd_share)
    print(describe_shipped())
    print(f"{'capacity':>10} {'shipped':>8} {'lru':>7}  {'SSD for ' + format(args.ssd_share, '.0%') + ' of hits':>20}")
    points = []
    for frac in (0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8):
        cap = int(cat * frac)
        f, lru = run_fill(t, cap, sim), run_lru(t, cap)
        points.append((cap, f.ratio, lru.ratio, f.ssd_needed))
        print(f"{cap / TB:8.2f} TB {f.ratio:8.3f} {lru.ratio:7.3f}  {f.ssd_needed / TB:17.2f} TB")
    answer = find_capacity(t, points, args.target, sim)
    if answer is None:
        print(f"\n{args.target:.0%} offload is not reached below {points[-1][0] / TB:.2f} TB")
    else:
        cap, ratio, ssd = answer
        print(f"\nfor {args.target:.0%} byte offload: {cap / TB:.2f} TB in all ({ratio:.3f}); "
              f"SSD {ssd / TB:.2f} TB serves {args.ssd_share:.0%} of it, HDD {(cap - ssd) / TB:.2f} TB the rest")
    print(f"plot: {plot(points, args.target, Path(args.plot))}")


def find_capacity(t, points: list[tuple[int, float, float, int]], target: float,
                  sim: FillSim) -> tuple[int, float, int] | None:
    """The smallest capacity (to ~1%) whose offload reaches the target: bisection between the sweep's
    bracketing points."""
    above = next((i for i, p in enumerate(points) if p[1] >= target), None)
    if above is None:
        return None
    hi = points[above]
    lo, high = (points[above - 1][0] if above > 0 else 0), hi[0]
    best = (hi[0], hi[1], hi[3])
    while high - lo > 0.01 * high:
        mid = (lo + high) // 2
        f = run_fill(t, mid, sim)
        if f.ratio >= target:
            high, best = mid, (mid, f.ratio, f.ssd_needed)
        else:
            lo = mid
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = TraceSpec()
    p.add_argument("--report", action="store_true", help="tuning and judge traces, 3 seeds each")
    p.add_argument("--tune", action="store_true", help="the knob sweep on the tuning traces")
    p.add_argument("--quick", action="store_true", help="with --report/--tune: tiny traces (a smoke test)")
    p.add_argument("--procs", type=int, default=2, help="worker processes for --report/--tune")
    p.add_argument("--titles", type=int, default=d.titles)
    p.add_argument("--days", type=int, default=d.days - 1, help="measured days (one warm-up day is added)")
    p.add_argument("--requests-per-day", type=int, default=d.per_day)
    p.add_argument("--alpha", type=float, default=d.alpha, help="Zipf exponent")
    p.add_argument("--churn", type=float, default=d.churn, help="daily log-normal drift of each title's popularity")
    p.add_argument("--releases", type=int, default=d.releases, help="new titles per day")
    p.add_argument("--announce-days", type=int, default=d.announce, help="days a launch is in the catalog before it")
    p.add_argument("--release-hour", type=int, default=d.release_hour,
                   help="launches go live this many hours after the window opens (22: midnight)")
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="cache sizes as fractions of the catalog")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--plan", action="store_true", help="capacity planning: offload vs capacity and a plot")
    p.add_argument("--target", type=float, default=0.95)
    p.add_argument("--ssd-share", type=float, default=0.8, help="share of hit bytes the SSD tier should serve")
    p.add_argument("--plot", default="offload.png", help="plot file (.png with matplotlib, else .svg)")
    args = p.parse_args(argv)
    if args.report:
        report(args.quick, args.procs)
        return 0
    if args.tune:
        tune(args.quick, args.procs)
        return 0
    spec = TraceSpec(args.titles, args.days + 1, args.requests_per_day, args.alpha, args.churn, args.releases,
                     args.announce_days, args.seed, release_hour=args.release_hour)
    if args.plan:
        plan_mode(spec, args)
    else:
        table(spec, tuple(float(x) for x in args.sizes.split(",")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
