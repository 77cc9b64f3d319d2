#!/usr/bin/env python3
"""The appliance at 100k indexed files: start-up time and worker memory under a long load run.

Measures two requirements of the appliance:
  - start-up with 100k indexed files in under 2 s (process start -> the supervisor's "ready" line);
  - under 150 MB RSS per worker with 100k indexed files, and no growth over a 5-minute load run.

Strategy: every indexed file is a real file. A few thousand are served (`--big-files` of `--big-mib`
on an SSD disk, `--mid-files` of `--mid-kib` on an HDD disk); the rest are tiny tail files, indexed but
never requested. The index is written directly with `Index.upsert_many` (hashes of the bytes
written), as a scan would leave it. `oca serve -c` is started `--startups` times (median reported),
the last one with `--workers` workers on 127.0.0.1 stays up, and wrk (`wrk/scale.lua`) sends 16 KiB
ranges over every served file and 1 MiB ranges over the big ones, at random offsets, through
pre-signed URLs. The served set exceeds a worker's descriptor LRU (2048): descriptors churn all run.

Workers are the children of the supervisor's fork server (tests.support.worker_pids_of). RSS is VmRSS from /proc/PID/status every `--sample-s`; "peak" also counts the kernel's
VmHWM; growth is the least-squares slope over the second half of the run (MB/min).

    python loadtests/oca_scale.py                    # 300 s load run (~6 min in all)
    python loadtests/oca_scale.py --duration 60 --json out.json
PASS/MISS lines are printed; the exit code is 0 unless --strict is given and something missed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import xxhash  # noqa: E402

from contracts.ids import FileKey  # noqa: E402
from contracts.keys import load_keyring, write_new_keyfile  # noqa: E402
from contracts.token import sign_path  # noqa: E402
from oca.config import Tier  # noqa: E402
from oca.store.index import FileEntry, Index  # noqa: E402
from tests.support import cpu_seconds, stop_process, worker_pids_of  # noqa: E402

KiB, MiB = 1 << 10, 1 << 20
SMALL, LARGE = 16 * KiB, MiB  # the two range sizes wrk asks for
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "scale.lua"
TARGET_STARTUP_S, TARGET_RSS_MB, TARGET_SLOPE_MB_MIN = 2.0, 150.0, 1.0


# -- data ----------------------------------------------------------------------------------------

def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def make_files(root: Path, args: argparse.Namespace) -> tuple[list[FileEntry], list[tuple[str, int]]]:
    """Create every file; return the index entries and the served (key, size) list, big files first."""
    ssd, hdd = root / "ssd0", root / "hdd0"
    now = time.time()
    entries: list[FileEntry] = []
    served: list[tuple[str, int]] = []
    big, mid = args.big_mib * MiB, args.mid_kib * KiB
    pool = os.urandom(big + MiB)  # files are distinct slices of one random pool
    groups = (("scale/big", "b", args.big_files, big, ssd, Tier.SSD),
              ("scale/mid", "m", args.mid_files, mid, hdd, Tier.HDD))
    for folder, prefix, count, size, disk, tier in groups:
        (disk / folder).mkdir(parents=True)
        for i in range(count):
            key = f"{folder}/{prefix}{i:05d}.mp4"
            start = (i * 4099 * 16) % MiB
            data = pool[start:start + size]
            _write(str(disk / key), data)
            entries.append(FileEntry(FileKey(key), tier, str(disk), size, xxhash.xxh3_128_hexdigest(data), now))
            served.append((key, size))
    for i in range(args.files - len(entries)):
        if i % 1000 == 0:
            folder = f"scale/tail/t{i // 1000:03d}"
            (hdd / folder).mkdir(parents=True)
        key = f"{folder}/f{i % 1000:03d}.mp4"
        data = ((key.encode() + b"\n") * (args.tail_bytes // (len(key) + 1) + 1))[:args.tail_bytes]
        _write(str(hdd / key), data)
        entries.append(FileEntry(FileKey(key), Tier.HDD, str(hdd), len(data), xxhash.xxh3_128_hexdigest(data), now))
    return entries, served


def build_index(path: Path, entries: list[FileEntry]) -> float:
    """Write the index; return the best of three `Index.snapshot()` times (what each worker does)."""
    index = Index.open(path)
    try:
        index.upsert_many(entries)
    finally:
        index.close()
    best = float("inf")
    for _ in range(3):
        reader = Index.open(path, readonly=True)
        t0 = time.perf_counter()
        snap, _seq = reader.snapshot()
        best = min(best, time.perf_counter() - t0)
        reader.close()
        assert len(snap) == len(entries), (len(snap), len(entries))
    return best


def write_config(root: Path, args: argparse.Namespace) -> Path:
    write_new_keyfile(root / "keys.toml")
    cfg = root / "oca.toml"
    cfg.write_text(f"""appliance = {{id = "scale-test", site = "lab"}}
http = {{listen = "127.0.0.1", port = 0, workers = {args.workers}, access_log = {str(args.access_log).lower()}}}
admin = {{listen = "127.0.0.1", port = 0}}
tokens = {{key_file = "{root / 'keys.toml'}"}}
store = {{index = "{root / 'state' / 'index.db'}"}}
tiers = {{ssd = [{{path = "{root / 'ssd0'}"}}], hdd = [{{path = "{root / 'hdd0'}"}}]}}
mover = {{enabled = false}}
""")
    return cfg


# -- the server ----------------------------------------------------------------------------------

def log_events(log: Path, event: str) -> list[dict]:
    with open(log, "rb") as fh:
        return [json.loads(line) for line in fh if f'"event": "{event}"'.encode() in line
                or f'"event":"{event}"'.encode() in line]


def start_server(cfg: Path, log: Path) -> tuple[subprocess.Popen, float, dict]:
    """Start `oca serve -c`; return the process, its start time (epoch) and the ready line."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    with open(log, "wb") as out:
        t0 = time.time()
        proc = subprocess.Popen([sys.executable, "-m", "oca.cli", "serve", "-c", str(cfg)], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready = [e for e in log_events(log, "ready") if e.get("worker") == "supervisor"]
        if ready:
            return proc, t0, ready[0]
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    stop_process(proc)
    raise SystemExit(f"oca did not start:\n{log.read_text()[-3000:]}")


def worker_pids(supervisor: int) -> list[int]:
    return worker_pids_of(supervisor)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon in kB (empty if the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            fields = [line.split() for line in fh]
    except OSError:
        return {}
    return {f[0][:-1]: int(f[1]) for f in fields if f[0] in ("VmRSS:", "VmHWM:", "RssAnon:")}


def started_at(pid: int) -> float:
    """A process's start time as epoch seconds (/proc/PID/stat field 22, ticks after boot)."""
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    ticks = int(stat[stat.rfind(b")") + 2:].split()[19])
    btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                 if line.startswith("btime "))
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def metrics(admin_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {line.split(" ")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


# -- load ----------------------------------------------------------------------------------------

def write_paths(path: Path, keys_file: Path, served: list[tuple[str, int]], duration_s: float) -> None:
    """The wrk script's input: one "SIZE /key?token" line per served file, big files first."""
    keys = load_keyring(keys_file)
    expires = int(time.time()) + int(duration_s) + 3600
    path.write_text("".join(f"{size} {sign_path('/' + key, keys, expires)}\n" for key, size in served))


def sanity_check(port: int, keys_file: Path, served: list[tuple[str, int]]) -> None:
    keys = load_keyring(keys_file)
    for (key, size), chunk in ((served[0], LARGE), (served[-1], SMALL)):
        url = f"http://127.0.0.1:{port}{sign_path('/' + key, keys, int(time.time()) + 60)}"
        req = urllib.request.Request(url, headers={"Range": f"bytes={size - chunk}-{size - 1}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        if (resp.status, len(body)) != (206, chunk):
            raise SystemExit(f"sanity check failed for {key}: {resp.status}, {len(body)} bytes")


def run_load(port: int, paths_file: Path, nbig: int, pids: list[int], args: argparse.Namespace) -> tuple[dict, list]:
    """Run wrk, sampling each worker's VmRSS every `sample_s`; return wrk's summary and the samples
    [(seconds since start, {pid: kB})]."""
    cmd = ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.duration:g}s",
           "--timeout", "10s", "-s", str(WRK_SCRIPT), f"http://127.0.0.1:{port}/",
           "--", str(paths_file), str(nbig), str(args.large_share), str(args.seed)]
    samples: list[tuple[float, dict[int, int]]] = []
    t0, next_at = time.monotonic(), 0.0
    with tempfile.TemporaryFile() as out:
        wrk = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            while True:
                running, now = wrk.poll() is None, time.monotonic() - t0
                if now >= next_at or (not running and now - samples[-1][0] > 1.0):
                    samples.append((now, {p: proc_status(p).get("VmRSS", 0) for p in pids}))
                    next_at += args.sample_s
                if not running:
                    break
                time.sleep(min(0.2, max(next_at - now, 0.01)))
        finally:
            if wrk.poll() is None:
                wrk.kill()
                wrk.wait()
        out.seek(0)
        text = out.read().decode(errors="replace")
    for line in text.splitlines():
        if line.startswith("WRK_JSON "):
            return json.loads(line[len("WRK_JSON "):]), samples
    raise SystemExit(f"wrk gave no summary (exit {wrk.returncode}):\n{text}")


def slope_mb_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, kB) points, in MB per minute."""
    if len(points) < 2:
        return float("nan")
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    cov = sum((t - mx) * (v - my) for t, v in points)
    return cov / var * 60 / 1024 if var else float("nan")


# -- main ----------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=100_000, help="indexed files in all (default 100000)")
    p.add_argument("--big-files", type=int, default=1000, help="served files on the SSD (default 1000)")
    p.add_argument("--big-mib", type=int, default=2, help="size of a big file in MiB (default 2, at least 1)")
    p.add_argument("--mid-files", type=int, default=3000, help="served files on the HDD (default 3000)")
    p.add_argument("--mid-kib", type=int, default=64, help="size of a mid file in KiB (default 64, at least 16)")
    p.add_argument("--tail-bytes", type=int, default=512, help="size of each unserved tail file")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--startups", type=int, default=3, help="start-ups measured (median reported; default 3)")
    p.add_argument("--duration", type=float, default=300.0, help="load run in seconds (default 300)")
    p.add_argument("--sample-s", type=float, default=10.0, help="RSS sampling interval (default 10)")
    p.add_argument("--large-share", type=float, default=0.2, help="share of 1 MiB ranges (default 0.2)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--connections", type=int, default=32, help="wrk connections")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--access-log", action="store_true", help="keep the access log on (to a temp file)")
    p.add_argument("--tmp", type=Path, default=None, help="parent of the temp dir (default: system temp)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (data, config, server log)")
    p.add_argument("--json", type=Path, help="write every number to this file")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    if (args.big_mib < 1 or args.mid_kib < 16 or args.big_files < 1 or args.startups < 1
            or args.files < args.big_files + args.mid_files):
        p.error("need --big-mib >= 1, --mid-kib >= 16, --big-files >= 1, --startups >= 1, --files >= big + mid files")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found on PATH (Debian package `wrk`)")
    root = Path(tempfile.mkdtemp(prefix="oca-scale-", dir=args.tmp)).resolve()
    proc = None
    try:
        for d in ("ssd0", "hdd0", "state"):
            (root / d).mkdir()
        t = time.perf_counter()
        entries, served = make_files(root, args)
        made_s, t = time.perf_counter() - t, time.perf_counter()
        snapshot_s = build_index(root / "state" / "index.db", entries)
        print(f"data: {len(entries):,} files indexed ({len(served):,} served: {args.big_files} x {args.big_mib} MiB, "
              f"{args.mid_files} x {args.mid_kib} KiB) in {made_s:.1f} s + index {time.perf_counter() - t:.1f} s "
              f"under {root}", flush=True)
        cfg = write_config(root, args)
        startups = []
        for i in range(args.startups):  # the last server started stays up for the load run
            if proc is not None:
                stop_process(proc, timeout_s=40)
            proc, t0, ready = start_server(cfg, root / f"oca-{i}.log")
            startups.append(ready["ts"] - t0)
            print(f"start {i + 1}/{args.startups}: ready after {startups[-1]:.3f} s ({ready.get('files'):,} files)",
                  flush=True)
        r = {"args": {k: str(v) for k, v in vars(args).items()}, "snapshot_s": snapshot_s, "startups_s": startups,
             "startup_s": statistics.median(startups), "ready_files": ready.get("files")}
        r.update(measure(proc.pid, t0, ready, root, root / f"oca-{args.startups - 1}.log", served, args))
        report(r, args)
        if args.json:
            args.json.write_text(json.dumps(r, indent=2, default=str))
        return 1 if args.strict and r["missed"] else 0
    finally:
        if proc is not None:
            stop_process(proc, timeout_s=40)
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def measure(sup: int, t0: float, ready: dict, root: Path, log: Path, served: list[tuple[str, int]],
            args: argparse.Namespace) -> dict:
    pids = sorted(worker_pids(sup), key=lambda p: (started_at(p), p))  # spawned in slot order
    worker_ready = sorted(log_events(log, "worker-ready"), key=lambda e: e["worker"])
    workers = []
    for pid, wr in zip(pids, worker_ready):
        spawn = started_at(pid)
        workers.append({"pid": pid, "slot": wr["worker"], "files": wr.get("files"), "spawned_after_s": spawn - t0,
                        "spawn_to_ready_s": wr["ts"] - spawn, "rss_start_kb": proc_status(pid).get("VmRSS", 0)})
    sanity_check(ready["port"], root / "keys.toml", served)
    paths_file = root / "paths.txt"
    write_paths(paths_file, root / "keys.toml", served, args.duration)
    m0, cpu0 = metrics(ready["admin_port"]), cpu_seconds(pids)
    print(f"load: wrk -t{args.threads} -c{args.connections} for {args.duration:g} s over {len(served):,} files, "
          f"{args.large_share:.0%} 1 MiB ranges, RSS of workers {pids} every {args.sample_s:g} s ...", flush=True)
    result, samples = run_load(ready["port"], paths_file, args.big_files, pids, args)
    cpu, m1 = cpu_seconds(pids) - cpu0, metrics(ready["admin_port"])
    alive = worker_pids(sup)
    half = samples[-1][0] / 2
    for w in workers:
        series = [(t, s[w["pid"]]) for t, s in samples if s.get(w["pid"])]
        status = proc_status(w["pid"])
        w.update(rss_end_kb=status.get("VmRSS", 0), rss_anon_end_kb=status.get("RssAnon", 0),
                 rss_peak_kb=max([v for _, v in series] + [status.get("VmHWM", 0)]),
                 slope_mb_per_min=slope_mb_per_min([(t, v) for t, v in series if t >= half]))
    statuses = {k[len('oca_requests_total{status="'):-2]: m1[k] - m0.get(k, 0.0) for k in m1
                if k.startswith("oca_requests_total{")}
    seconds = result["duration_us"] / 1e6
    return {"workers": workers, "samples": samples, "wrk": result, "server_statuses": statuses,
            "workers_replaced": sorted(alive) != sorted(pids), "rps": result["requests"] / seconds,
            "gbps": result["bytes"] * 8 / seconds / 1e9, "cpu_us_per_req": cpu / max(result["requests"], 1) * 1e6,
            "non_2xx_server": sum(v for k, v in statuses.items() if k not in ("200", "206"))}


def report(r: dict, args: argparse.Namespace) -> None:
    mb = 1 / 1024
    print(f"\nstart-up (process start -> ready line): median {r['startup_s']:.3f} s of "
          + ", ".join(f"{s:.3f}" for s in r["startups_s"]) + f"; Index.snapshot() alone {r['snapshot_s']:.3f} s")
    for w in r["workers"]:
        print(f"  last start, worker {w['slot']}: spawned at +{w['spawned_after_s']:.2f} s, spawn -> worker-ready "
              f"{w['spawn_to_ready_s']:.2f} s ({w['files']:,} files)")
    print("RSS per worker (MB):  start    peak     end   slope, 2nd half (MB/min)")
    for w in r["workers"]:
        print(f"  worker {w['slot']} pid {w['pid']:<7} {w['rss_start_kb'] * mb:6.1f}  {w['rss_peak_kb'] * mb:6.1f}  "
              f"{w['rss_end_kb'] * mb:6.1f}   {w['slope_mb_per_min']:+.3f}  (RssAnon at end {w['rss_anon_end_kb'] * mb:.1f})")
    print("  samples (s: MB per worker): " + "; ".join(
        f"{t:.0f}: " + "/".join(f"{v * mb:.1f}" for v in s.values()) for t, s in r["samples"]))
    wrk, errors = r["wrk"], r["wrk"]["errors"]
    print(f"load: {r['rps']:,.0f} req/s, {r['gbps']:.2f} Gbit/s, p50 {wrk['latency_us']['p50'] / 1000:.2f} ms, "
          f"p99 {wrk['latency_us']['p99'] / 1000:.2f} ms, server CPU {r['cpu_us_per_req']:.0f} us/request "
          "(workers' utime+stime; wrk shares the cores)")
    statuses = ", ".join(f"{k}: {v:,.0f}" for k, v in sorted(r["server_statuses"].items()) if v)
    print(f"  wrk: {wrk['requests']:,} responses, errors {errors}; server statuses: {statuses}")
    peak = max(w["rss_peak_kb"] for w in r["workers"]) * mb
    slope = max(w["slope_mb_per_min"] for w in r["workers"])
    errs = sum(errors.values())
    checks = [
        (f"start-up < {TARGET_STARTUP_S:g} s with {r['ready_files']:,} files (median)",
         r["startup_s"] < TARGET_STARTUP_S, f"{r['startup_s']:.3f} s"),
        (f"RSS < {TARGET_RSS_MB:g} MB per worker (peak)", peak < TARGET_RSS_MB, f"{peak:.1f} MB"),
        (f"no growth: slope < {TARGET_SLOPE_MB_MIN:g} MB/min over the second half", slope < TARGET_SLOPE_MB_MIN,
         f"{slope:+.3f} MB/min over {args.duration / 2:g} s"),
        ("no errors (wrk errors, non-2xx, workers replaced)",
         not errs and not r["non_2xx_server"] and not r["workers_replaced"],
         f"wrk {errs}, server non-2xx {r['non_2xx_server']:.0f}, replaced {r['workers_replaced']}"),
    ]
    print()
    for label, ok, value in checks:
        print(f"{'PASS' if ok else 'MISS'}  {label}: {value}")
    r["missed"] = [label for label, ok, _ in checks if not ok]


if __name__ == "__main__":
    sys.exit(main())
