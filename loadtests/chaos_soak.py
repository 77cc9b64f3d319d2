#!/usr/bin/env python3
"""Chaos soak: the lab under steady mixed-range load while its daemons are killed and restarted, a disk is
pulled, the fleet key file is rewritten non-atomically mid-rotation and a fill runs; every byte checked.

Strategy. The lab starts detached in its own temporary state directory (`scripts/lab.py up --detach`).
Player threads act as players do: a "play" asks playback for the master playlist (playback asks steering,
which signs the URLs), the `loc=` URLs of each rendition, in pathway order, are the ranked list; a
request is a byte range (16 KiB, or 1 MiB one time in five, at a random offset) tried on each URL in
turn, and when all fail the player plays again (a re-steer) and tries the new list once. Every answer's
bytes are compared with the origin's copy (the lab's origin is a local directory). Meanwhile the script
below runs its events at fixed fractions of `--duration`; each kill is followed by an orphan check
(anything still LISTENing on the killed daemon's ports, anything left in its session), each restart by a
rejoin watch (its /healthz, and steering naming it up again). A sampler reads every daemon's /metrics for
`*_task_restarts_total` and `*_task_failures_total`. At the end: a table, a JSON summary, and exit code 1
if any byte was wrong or any orphan was seen. Traffic goes to 127.0.0.1 only; every loop is bounded.
The players and the byte check are in chaos_load.py, the events and watches in chaos_events.py; this
file runs them and reports.

    python loadtests/chaos_soak.py                  # 4 minutes
    python loadtests/chaos_soak.py --short          # 60 s smoke run
    python loadtests/chaos_soak.py --duration 120 --json out.json --keep
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from chaos_events import LAB_PY, Chaos, Sampler, lab_cli, schedule, stray_processes
from chaos_load import MiB, Player, Stats


def start_lab(state: Path, seconds: int) -> None:
    began = time.monotonic()
    with open(state.parent / "lab-up.log", "wb") as out:
        code = subprocess.run([sys.executable, str(LAB_PY), "up", "--detach", "--seconds", str(seconds),
                               "--state", str(state)], stdout=out, stderr=subprocess.STDOUT, timeout=900).returncode
    if code != 0:
        raise SystemExit(f"chaos: the lab did not start (see {state.parent / 'lab-up.log'})")
    print(f"chaos: lab up in {time.monotonic() - began:.0f} s ({state})", flush=True)


# ---- the report ---------------------------------------------------------------------------------

def report(stats: Stats, chaos: Chaos, sampler: Sampler, strays: list[dict], after_down: list[dict],
           fill: dict | None, duration_s: float) -> dict:
    orphans = chaos.orphans + [{**s, "found": "end of run"} for s in strays] + \
        [{**s, "found": "after lab down"} for s in after_down]
    summary = summarize(stats, chaos, sampler.totals(), orphans, fill, duration_s)
    print_table(stats, chaos, summary)
    for o in orphans:
        print(f"ORPHAN {o}")
    print("CHAOS_JSON " + json.dumps(summary, separators=(",", ":")), flush=True)
    return summary


def summarize(stats: Stats, chaos: Chaos, tasks: dict[str, dict[str, float]], orphans: list[dict],
              fill: dict | None, duration_s: float) -> dict:
    c = stats.counts
    return {
        "duration_s": round(duration_s, 1), "requests": c["requests"], "ok_first_url": c["ok"],
        "failed_over": c["failover"], "recovered_by_resteer": c["resteered"], "failed_entirely": c["failed"],
        "wrong_bytes": c["wrong"], "bytes_checked": c["bytes"], "plays": c["play"], "plays_failed": c["play-failed"],
        "attempt_failures": dict(stats.reasons.most_common()),
        "rejoin_s": {w.what: w.took_s for w in chaos.watches}, "orphans": len(orphans), "orphan_list": orphans,
        "task_restarts": sum(v["restarts"] for v in tasks.values()),
        "task_failures": sum(v["failures"] for v in tasks.values()), "tasks_by_daemon": tasks,
        "fill": fill, "events": chaos.events, "wrong_examples": stats.wrong,
        "timeline_10s": {k * 10: dict(v) for k, v in sorted(stats.buckets.items())},
    }


def print_table(stats: Stats, chaos: Chaos, summary: dict) -> None:
    c, fill = stats.counts, summary["fill"]
    rows = [("requests", c["requests"]), ("  ok on the first URL", c["ok"]),
            ("  failed over to another URL", c["failover"]), ("  recovered by a re-steer (new play)", c["resteered"]),
            ("  failed entirely", c["failed"]), ("wrong bytes (must be 0)", c["wrong"]),
            ("MiB checked against the origin", f"{c['bytes'] / MiB:,.0f}"),
            ("plays (master playlists) ok / failed", f"{c['play']} / {c['play-failed']}"),
            ("orphans (must be 0)", summary["orphans"]),
            ("task restarts / failures (from /metrics)", f"{summary['task_restarts']:.0f} / {summary['task_failures']:.0f}")]
    rows += [(f"rejoin: {w.what}", "never (within 60 s)" if w.took_s is None else f"{w.took_s:.2f} s")
             for w in chaos.watches]
    if fill:
        rows.append(("oca fill (during the load)", f"exit {fill['exit']}, {fill['took_s']} s"))
    width = max(len(r[0]) for r in rows)
    print("\n" + "\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    print("attempt failures:", ", ".join(f"{k} {v}" for k, v in stats.reasons.most_common()) or "none")
    print("per 10 s (requests/failed over/failed):", "  ".join(
        f"{k * 10}s {v['ok'] + v['failover'] + v['resteered'] + v['failed']}/{v['failover']}/{v['failed']}"
        for k, v in sorted(stats.buckets.items())))


# ---- the run ------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=240.0, help="seconds of load and chaos (default 240)")
    ap.add_argument("--short", action="store_true", help="a 60 s smoke run")
    ap.add_argument("--players", type=int, default=3, help="player threads")
    ap.add_argument("--rate", type=float, default=15.0, help="requests per second per player")
    ap.add_argument("--seconds", type=int, default=20, help="length of the lab's sample title")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, help="write the summary here too")
    ap.add_argument("--keep", action="store_true", help="keep the lab's state directory (logs)")
    args = ap.parse_args()
    duration = 60.0 if args.short else args.duration
    tmp = Path(tempfile.mkdtemp(prefix="chaos-soak-"))
    state = tmp / "lab"
    try:
        summary = soak(state, duration, args)
    except BaseException:
        print(f"chaos: stopped early; the lab's state and logs are in {tmp}", file=sys.stderr)
        raise
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    if args.keep:
        print(f"chaos: state kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if summary["wrong_bytes"] or summary["orphans"] else 0


def soak(state: Path, duration: float, args: argparse.Namespace) -> dict:
    stop = threading.Event()
    try:
        start_lab(state, args.seconds)
        info = json.loads((state / "lab.json").read_text())
        t0 = time.monotonic()
        stats, chaos = Stats(t0), Chaos(state, t0)
        sampler = Sampler(lambda: json.loads((state / "lab.json").read_text()), stop)
        players = [Player(i, info, state / "origin", stats, stop, args.rate, args.seed + i) for i in range(args.players)]
        for p in players:
            p.start()
        for fraction, event in schedule(chaos):
            stop.wait(max(0.0, t0 + fraction * duration - time.monotonic()))
            event()
        fill = chaos.finish_fill()
        stop.wait(max(0.0, t0 + duration - time.monotonic()))
        for w in chaos.watches:  # bounded: each watch gives up after REJOIN_TIMEOUT_S
            w.join(max(0.0, w.since + w.timeout_s - time.monotonic()) + 1)
        sampler.sample()
        stop.set()
        for p in players:
            p.join(15)
        elapsed = time.monotonic() - t0
        strays = stray_processes(state, chaos.info()["daemons"], chaos.sessions)
        print("chaos: status at the end:\n" + chaos.cli("status").replace(" | ", "\n"), flush=True)
    finally:
        stop.set()
        if (state / "lab.json").exists():
            lab_cli(state, "down")
    time.sleep(1.0)
    after_down = stray_processes(state, {}, chaos.sessions)
    return report(stats, chaos, sampler, strays, after_down, fill, elapsed)


if __name__ == "__main__":
    sys.exit(main())
