#!/usr/bin/env python3
"""Soak: mixed W2/W3 load against the lab's appliances with steering and fill running.

Starts the lab (scripts/lab.py up --detach) unless one is up, then drives every appliance of site
lab-a with wrk (`wrk/scale.lua`: 16 KiB ranges, and 1 MiB ranges on files that large, at random
offsets, through pre-signed URLs of the files each appliance holds) in one-minute slices for
`--duration` seconds, while steering takes heartbeats and a fill run is started on every appliance
half-way. Per slice: requests/s, p99, errors; per appliance worker: RSS. It reports PASS/MISS for
the issue's properties — no errors, RSS flat (end within 5% + 5 MB of the first slice), p99 of every
slice within 2x the first minute's — and stops the lab it started. Traffic goes to 127.0.0.1 only;
every wrk run is bounded in time.

    python loadtests/soak_lab.py                  # 5 minutes
    python loadtests/soak_lab.py --duration 120   # quicker
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from contracts.keys import load_keyring  # noqa: E402
from contracts.token import sign_path  # noqa: E402
from tests.support import worker_pids_of  # noqa: E402

SCALE_LUA = REPO / "loadtests" / "wrk" / "scale.lua"
MiB = 1 << 20


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def paths_file(info: dict, keys, out: Path) -> int:
    """Pre-signed paths of the files this appliance holds, big ones (>= 1 MiB) first."""
    entries = [json.loads(line) for line in subprocess.run(
        [sys.executable, "-m", "oca.cli", "ls", "-c", info["config"], "--json"],
        capture_output=True, text=True, check=True).stdout.splitlines()]
    entries = [e for e in entries if e["size"] >= 16384]
    entries.sort(key=lambda e: -e["size"])
    expires = int(time.time()) + 6 * 3600
    out.write_text("".join(f"{e['size']} {sign_path('/' + e['key'], keys, expires)}\n" for e in entries))
    return max(1, sum(e["size"] >= MiB for e in entries))


def wrk_slice(url: str, paths: Path, nbig: int, seconds: int, seed: int) -> subprocess.Popen:
    return subprocess.Popen(["wrk", "-t1", "-c8", f"-d{seconds}s", "--latency", "-s", str(SCALE_LUA), url, "--",
                             str(paths), str(nbig), "0.2", str(seed)], stdout=subprocess.PIPE, text=True)


def wrk_result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=600)
    for line in out.splitlines():
        if line.startswith("WRK_JSON "):
            return json.loads(line[len("WRK_JSON "):])
    raise RuntimeError(f"wrk printed no WRK_JSON line:\n{out[-1500:]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=300, help="seconds of load (one-minute slices)")
    ap.add_argument("--state", type=Path, default=REPO / "lab-state")
    args = ap.parse_args()
    state = args.state.resolve()
    started_lab = not (state / "lab.json").exists()
    if started_lab:
        subprocess.run([sys.executable, str(REPO / "scripts" / "lab.py"), "up", "--detach", "--state", str(state)],
                       check=True)
    lab = json.loads((state / "lab.json").read_text())
    keys = load_keyring(state / "keys.toml")
    targets = {n: i for n, i in lab["appliances"].items() if n.startswith("lab-a")}
    files = {n: paths_file(i, keys, state / f"soak-{n}.paths") for n, i in targets.items()}
    workers = {n: worker_pids_of(lab["pids"][n]) for n in targets}
    slices, slice_s = [], 60
    remaining, k = args.duration, 0
    fills: list[subprocess.Popen] = []
    try:
        while remaining > 0:
            seconds = min(slice_s, remaining)
            runs = {n: wrk_slice(targets[n]["url"], state / f"soak-{n}.paths", files[n], seconds, 17 + k)
                    for n in targets}
            if k == (args.duration // slice_s) // 2:  # half-way: a fill run on every appliance
                fills = [subprocess.Popen([sys.executable, "-m", "oca.cli", "fill", "-c", info["config"], "--steering",
                                           lab["steering"], "--origin", lab["origin"], "--ignore-window",
                                           "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                         for info in lab["appliances"].values()]
            results = {n: wrk_result(p) for n, p in runs.items()}
            rss = {pid: rss_mb(pid) for pids in workers.values() for pid in pids}
            req = sum(r["requests"] for r in results.values())
            p99 = max(r["latency_us"]["p99"] for r in results.values()) / 1000
            errors = sum(sum(r["errors"].values()) for r in results.values())
            slices.append({"t": k, "req_s": req / seconds, "p99_ms": p99, "errors": errors, "rss_mb": rss})
            print(f"minute {k + 1}: {req / seconds:,.0f} req/s, p99 {p99:.1f} ms, errors {errors}, "
                  f"worker RSS {', '.join(f'{v:.1f}' for v in rss.values())} MB", flush=True)
            remaining -= seconds
            k += 1
    finally:
        for f in fills:
            f.wait(120)
        if started_lab:
            subprocess.run([sys.executable, str(REPO / "scripts" / "lab.py"), "down", "--state", str(state)])
    first, last = slices[0], slices[-1]
    flat = all(last["rss_mb"][pid] <= first["rss_mb"][pid] * 1.05 + 5 for pid in first["rss_mb"])
    p99_ok = all(s["p99_ms"] <= 2 * first["p99_ms"] for s in slices)
    no_errors = all(s["errors"] == 0 for s in slices)
    for ok, what in ((no_errors, "no errors"), (flat, "RSS flat (end <= first minute x 1.05 + 5 MB)"),
                     (p99_ok, f"p99 within 2x the first minute's ({first['p99_ms']:.1f} ms)")):
        print(f"{'PASS' if ok else 'MISS'}  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
