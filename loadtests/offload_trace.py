"""The offload simulator's request trace (pure Python, seeded): one site's region over a warm-up day and
a measured week.

A catalog of titles (one file each, log-normal sizes), Zipf popularity (α) over a random ranking that
drifts every day (a log-normal random walk of each title's weight: `churn` is its daily σ), `releases`
new titles a day — each in the catalog `announce` days before its release date, starting among the
hottest 1–30 ranks and halving every 3 days after — and each request reads a random share of its file.
A day starts when the fill window opens (02:00 local) and its requests follow a streaming day's
hourly curve (`HOURLY`: a trough before dawn, the peak at 20–22 h), so the decayed counters and the
fill runs see wall-clock time: `hour_starts[day][k]` is the first request of hour k after 02:00.
Titles launch at `release_hour` after the window opens (22: midnight), so a launch not in place by
then misses until the next fill run.

`equal_sizes` and `whole_reads` make a trace on which Belady (with its free nightly prefetch) is the
exact optimum: every file one size, every request the whole file (the smoke test's invariant).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

GB, TB = 10**9, 10**12
NEVER = 1 << 62
# Share of a day's requests in each hour from 02:00 local: 02, 03, ... 01 (a streaming day's curve).
HOURLY = (0.5, 0.3, 0.2, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0, 1.1, 1.1,
          1.1, 1.2, 1.3, 1.5, 1.8, 2.1, 2.4, 2.5, 2.2, 1.6, 1.1, 0.7)


def hour_shares() -> list[float]:
    """The cumulative share of a day's requests at the start of each hour from 02:00 (25 values)."""
    total, acc, out = sum(HOURLY), 0.0, [0.0]
    for w in HOURLY:
        acc += w
        out.append(acc / total)
    return out


@dataclass(frozen=True)
class Trace:
    sizes: list[int]  # by file id
    release_day: list[int]  # day the title launches (<= 0: in the catalog from the start)
    requests: list[tuple[int, int]]  # (file id, bytes), in time order
    day_starts: list[int]  # index of the first request of each day (day 0 = warm-up), plus len
    days: int
    hour_starts: list[list[int]]  # per day, the first request of each hour from 02:00 (25 values)


@dataclass(frozen=True)
class TraceSpec:
    """What `make_trace` takes; `label` names it in reports."""
    titles: int = 3000
    days: int = 8  # warm-up day included
    per_day: int = 100_000
    alpha: float = 0.9
    churn: float = 0.25
    releases: int = 10
    announce: int = 7
    seed: int = 1
    equal_sizes: bool = False
    whole_reads: bool = False
    release_hour: int = 22  # launches go live this many hours after the window opens (22: at midnight)

    @property
    def label(self) -> str:
        extra = "" if self.per_day == 100_000 else f" {self.per_day // 1000}k req/d"
        extra += "" if self.release_hour == 22 else f" live {(self.release_hour + 2) % 24:02d}h eve"
        return f"zipf {self.alpha:g} churn {self.churn:g} launches {self.releases}/d{extra}"


def make_trace(spec: TraceSpec) -> Trace:
    rng = random.Random(spec.seed)
    titles, days, releases = spec.titles, spec.days, spec.releases
    total = titles + releases * (days + spec.announce)
    sizes = [int(min(max(rng.lognormvariate(math.log(1.5 * GB), 0.0 if spec.equal_sizes else 0.6), 0.2 * GB),
                     12 * GB)) for _ in range(total)]
    release = [0] * titles + [1 + i // releases for i in range(total - titles)] if releases else [0] * titles
    rank = list(range(titles))
    rng.shuffle(rank)
    base = [1.0 / (r + 1) ** spec.alpha for r in rank] + [0.0] * (total - titles)
    for i in range(titles, total):  # a launch starts among the hottest 1-30 ranks, halves every 3 days
        base[i] = 1.0 / rng.uniform(1, 30) ** spec.alpha
    drift = [1.0] * total
    requests: list[tuple[int, int]] = []
    starts, hours = [], []
    cdf = hour_shares()
    bounds = [round(spec.per_day * c) for c in cdf]
    for day in range(days):
        starts.append(len(requests))
        hours.append([len(requests) + b for b in bounds])
        before, after = _weights(spec, rng, drift, base, release, day)
        cut = bounds[min(spec.release_hour, 24)]
        for cum, k in ((before, cut), (after, spec.per_day - cut)):
            for f in rng.choices(range(total), cum_weights=cum, k=k):
                nbytes = sizes[f] if spec.whole_reads else int(sizes[f] * rng.uniform(0.05, 1.0))
                requests.append((f, nbytes))
    starts.append(len(requests))
    return Trace(sizes, release, requests, starts, days, hours)


def _weights(spec: TraceSpec, rng: random.Random, drift: list[float], base: list[float], release: list[int],
             day: int) -> tuple[list[float], list[float]]:
    """Cumulative request weights of `day` before and after the launch hour (tomorrow's launches are
    asked for from their release, at full strength); every title's drift takes one step."""
    before, after = [], []
    acc = late = 0.0
    for i in range(len(base)):
        drift[i] *= rng.lognormvariate(0.0, spec.churn)
        age = day - release[i]
        if age < -1:
            w = w_late = 0.0
        elif age == -1:
            w, w_late = 0.0, base[i] * drift[i]
        elif release[i] > 0:
            w = w_late = base[i] * drift[i] * 0.5 ** (age / 3.0)
        else:
            w = w_late = base[i] * drift[i]
        acc += w
        late += w_late
        before.append(acc)
        after.append(late)
    return before, after


def catalog_bytes(t: Trace) -> int:
    return sum(s for s, r in zip(t.sizes, t.release_day) if r <= 0)


def next_uses(t: Trace, points: list[int]) -> tuple[list[int], dict[int, dict[int, int]]]:
    """Per request, the index of the next request for the same file (NEVER if none); and at each of
    `points` (request indices), each file's first request from there on (what an offline fill then knows)."""
    nxt = [0] * len(t.requests)
    seen: dict[int, int] = {}
    at: dict[int, dict[int, int]] = {}
    todo = sorted(points, reverse=True)
    for i in range(len(t.requests) - 1, -1, -1):
        while todo and todo[0] > i:
            at[todo.pop(0)] = dict(seen)
        f = t.requests[i][0]
        nxt[i] = seen.get(f, NEVER)
        seen[f] = i
    for p in todo:
        at[p] = dict(seen)
    return nxt, at
