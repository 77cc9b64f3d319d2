#!/usr/bin/env python3
"""The appliance against nginx, side by side in one run, over the same files, with wrk.

Strategy: both servers run at once over one temporary directory with the same worker count; every
workload is run against each in turn (ABBA order: nginx, oca in even rounds, oca, nginx in odd ones),
so whatever else loads the machine hits both alike; each metric is the median over the rounds and
is reported as the ratio appliance/nginx. Absolute numbers on a shared 2-core box are noise; the
ratios in one run are the result. wrk shares the cores (ARCHITECTURE §4), so server CPU per GB
and per request — utime+stime of the serving processes from /proc/PID/stat — is reported beside
throughput: nginx's workers (children of the master), the appliance's workers (its fork server's children)
(the masters and the supervisor are reported in --json only).

Workloads:
  W1  whole 4 MiB file GETs                               -> Gbit/s
  W2  1 MiB ranges at random offsets of a 200 MiB file    -> Gbit/s
  W3  16 KiB ranges at random offsets of the same file    -> req/s and p99 latency
Targets (appliance/nginx): W1, W2 >= 1.0; W3 req/s >= 0.75; CPU s/GB <= 1.5x. A miss is reported,
never an error exit.

The appliance runs from a config file (`oca serve -c`) over the directory as its one SSD disk, indexed
the way `--dev` indexes it, so its access log can be what operators configure: with --access-log both
servers log every request to a file — nginx `access_log FILE combined buffer=64k flush=1s`, the
appliance `access_log = FILE` (its own 64 KiB buffer, flushed every second) in JSON lines, or in
nginx's combined format with --log-format combined — and the lines each wrote are counted at the end.

    python loadtests/bench_oca_vs_nginx.py --duration 10 --rounds 3 [--json out.json]
    python loadtests/bench_oca_vs_nginx.py --workers 1 --threads 1 --access-log   # the logs-on comparison
    python loadtests/bench_oca_vs_nginx.py --workers 1 --threads 1 --tls          # both HTTPS

With --tls both serve HTTPS only through the same certificate (a throwaway CA's ECDSA P-256 leaf, made
with `cryptography`), TLS 1.2/1.3, and wrk negotiates the same cipher with both (printed): nginx
`listen ... ssl` (no sendfile under TLS without kTLS, as for us), the appliance's [tls] listener (the
plain hot path's verdict, head and body preadv'ed into one reused buffer, OpenSSL via uvloop's SSL
protocol). Targets under TLS: W1, W2 >= 0.9, W3 req/s >= 0.7. CPU per request is the steadiest figure
on a shared machine; loadtests/README.md has the latest.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import cpu_seconds  # noqa: E402
from tests.support.nginx import NginxServer  # noqa: E402
from tests.support.oca_proc import OcaProcess  # noqa: E402

WRK_DIR = Path(__file__).resolve().parent / "wrk"
MiB = 1 << 20
W1_KEY, W1_SIZE = "bench/w1-4mib.mp4", 4 * MiB
BIG_KEY, BIG_SIZE = "bench/w2-200mib.mp4", 200 * MiB


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    key: str
    chunk: int  # 0: whole file
    expect_bytes: int  # body bytes per response

    def wrk_args(self, seed: int) -> tuple[str, list[str]]:
        if self.chunk == 0:
            return str(WRK_DIR / "full.lua"), []
        return str(WRK_DIR / "ranges.lua"), ["--", str(BIG_SIZE), str(self.chunk), str(seed)]


WORKLOADS = [
    Workload("W1", "full 4 MiB GETs", W1_KEY, 0, W1_SIZE),
    Workload("W2", "1 MiB random ranges in 200 MiB", BIG_KEY, MiB, MiB),
    Workload("W3", "16 KiB random ranges in 200 MiB", BIG_KEY, 16 * 1024, 16 * 1024),
]


# -- set-up --------------------------------------------------------------------------------------

class OcaFromConfig(OcaProcess):
    """`oca serve -c FILE` over `root` as its one SSD disk, with the dev appliance's key file and
    index (made and filled by `index_like_dev` first), logging to `access_log` (None: off)."""

    def __init__(self, root: Path, *, access_log: Path | None, log_format: str = "json", **kw) -> None:
        super().__init__(root, access_log=access_log is not None, **kw)
        self.log_file = access_log
        self.log_format = log_format

    def _tls_section(self) -> str:
        if self.tls_cert is None:
            return ""
        return (f'[tls]\nlisten = "127.0.0.1"\nport = {self.tls_port}\n'
                f'[[tls.certificates]]\ncert = "{self.tls_cert}"\nkey = "{self.tls_key}"\n')

    def command(self) -> list[str]:
        state = self.root / ".oca"
        log = json.dumps(str(self.log_file)) if self.log_file is not None else "false"
        config = state / "bench.toml"
        config.write_text(f"""[appliance]
id = "bench"
[http]
listen = "127.0.0.1"
port = {self.port}
workers = {self.workers or 1}
sendfile = {"true" if self.sendfile else "false"}
access_log = {log}
access_log_format = "{self.log_format}"
[admin]
listen = "127.0.0.1"
port = 0
[tokens]
key_file = "{state / 'keys.toml'}"
[store]
index = "{state / 'index.db'}"
[[tiers.ssd]]
path = "{self.root}"
[mover]
enabled = false
{self._tls_section()}""")
        return [sys.executable, "-m", "oca.cli", "serve", "-c", str(config)]


def index_like_dev(root: Path) -> None:
    """What `oca serve --dev root` does before it serves: a key file and an index of root's files."""
    from oca.config import dev_config
    from oca.daemon import prepare_dev
    from oca.store.store import Store

    config = dev_config(root)
    prepare_dev(config)
    store = Store.open(config)
    try:
        store.scan(root)
    finally:
        store.close()


def count_lines(path: Path | None) -> int | None:
    if path is None or not path.exists():
        return None
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))

def make_data(root: Path) -> None:
    for key, size in ((W1_KEY, W1_SIZE), (BIG_KEY, BIG_SIZE)):
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            for _ in range(size // MiB):
                f.write(os.urandom(MiB))


def warm_page_cache(root: Path) -> None:
    for key in (W1_KEY, BIG_KEY):
        with open(root / key, "rb") as f:
            while f.read(8 * MiB):
                pass


def sanity_check(url: str, chunk: int, size: int, tls: ssl.SSLContext | None = None) -> None:
    """One request as wrk will send it: the right status and length, or the numbers mean nothing."""
    req = urllib.request.Request(url, headers={"Range": f"bytes=0-{chunk - 1}"} if chunk else {})
    with urllib.request.urlopen(req, timeout=30, context=tls) as resp:
        body = resp.read()
    want = (206, chunk) if chunk else (200, size)
    if (resp.status, len(body)) != want:
        raise SystemExit(f"sanity check failed for {url}: {resp.status} {len(body)} bytes, want {want}")


# -- one run -------------------------------------------------------------------------------------

def run_wrk(url: str, workload: Workload, args: argparse.Namespace, duration_s: float, seed: int) -> dict:
    script, extra = workload.wrk_args(seed)
    cmd = ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{duration_s:g}s",
           "--timeout", "10s", "-s", script, url, *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60)
    for line in out.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            return json.loads(line[len("WRK_JSON "):])
    raise RuntimeError(f"wrk gave no summary (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")


def measure(server, url: str, workload: Workload, args: argparse.Namespace, seed: int) -> dict:
    pids = server.worker_pids()
    parent = server.proc.pid
    cpu0 = cpu_seconds(pids), cpu_seconds([parent])
    result = run_wrk(url, workload, args, args.duration, seed)
    pids_after = server.worker_pids()
    if sorted(pids_after) != sorted(pids):
        result["warning"] = f"worker set changed during the run: {pids} -> {pids_after}"
    cpu1 = cpu_seconds(pids), cpu_seconds([parent])
    seconds = result["duration_us"] / 1e6
    gb = result["bytes"] / 1e9
    cpu = cpu1[0] - cpu0[0]
    errors = sum(result["errors"].values())
    result.update(
        gbps=result["bytes"] * 8 / seconds / 1e9, rps=result["requests"] / seconds,
        p99_ms=result["latency_us"]["p99"] / 1000, cpu_s=cpu, cpu_s_parent=cpu1[1] - cpu0[1],
        cpu_s_per_gb=cpu / gb if gb else float("nan"),
        cpu_us_per_req=cpu / result["requests"] * 1e6 if result["requests"] else float("nan"),
        bytes_per_response=result["bytes"] / result["requests"] if result["requests"] else 0.0,
        error_count=errors,
    )
    return result


# -- reporting -----------------------------------------------------------------------------------

METRICS = [  # (workload, metric, label, unit, target kind, target)
    ("W1", "gbps", "W1 full 4 MiB GET", "Gbit/s", ">=", 1.0),
    ("W1", "cpu_s_per_gb", "W1 server CPU", "s/GB", "<=", 1.5),
    ("W2", "gbps", "W2 1 MiB random ranges", "Gbit/s", ">=", 1.0),
    ("W2", "cpu_s_per_gb", "W2 server CPU", "s/GB", "<=", 1.5),
    ("W3", "rps", "W3 16 KiB random ranges", "req/s", ">=", 0.75),
    ("W3", "p99_ms", "W3 p99 latency", "ms", None, None),
    ("W3", "cpu_s_per_gb", "W3 server CPU", "s/GB", "<=", 1.5),
    ("W3", "cpu_us_per_req", "W3 server CPU", "us/req", None, None),
]


TLS_TARGETS = {("W1", "gbps"): 0.9, ("W2", "gbps"): 0.9, ("W3", "rps"): 0.7}  # issue 17's, over HTTPS


def summarize(runs: dict[tuple[str, str], list[dict]], present: set[str], tls: bool = False) -> list[dict]:
    rows = []
    for wl, metric, label, unit, kind, target in METRICS:
        if wl not in present:
            continue
        if tls:
            target = TLS_TARGETS.get((wl, metric), target)
        ngx = statistics.median(r[metric] for r in runs[(wl, "nginx")])
        ours = statistics.median(r[metric] for r in runs[(wl, "oca")])
        ratio = ours / ngx if ngx else float("nan")
        verdict = "" if kind is None else ("PASS" if (ratio >= target if kind == ">=" else ratio <= target) else "MISS")
        rows.append(dict(workload=wl, metric=metric, label=label, unit=unit, nginx=ngx, oca=ours, ratio=ratio,
                         target=None if kind is None else f"{kind} {target:g}", verdict=verdict))
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\n{'metric':<28}{'unit':>8}{'nginx':>12}{'oca':>12}{'oca/nginx':>11}  {'target':<8}check")
    print("-" * 86)
    for r in rows:
        print(f"{r['label']:<28}{r['unit']:>8}{_num(r['nginx']):>12}{_num(r['oca']):>12}{r['ratio']:>11.2f}  "
              f"{r['target'] or '':<8}{r['verdict']}")


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"


def print_problems(runs: dict[tuple[str, str], list[dict]], args: argparse.Namespace) -> None:
    for (wl, server), results in sorted(runs.items()):
        expect = next(w for w in WORKLOADS if w.name == wl).expect_bytes
        for i, r in enumerate(results):
            if r["error_count"]:
                print(f"WARNING {wl} {server} run {i}: wrk errors {r['errors']}")
            # wrk also counts the bytes of responses still in flight when the run ends
            slack = 2048 + args.connections * expect / max(r["requests"], 1)
            if not expect <= r["bytes_per_response"] <= expect + slack:
                print(f"WARNING {wl} {server} run {i}: {r['bytes_per_response']:.0f} bytes per response, "
                      f"expected ~{expect} + headers")
            if "warning" in r:
                print(f"WARNING {wl} {server} run {i}: {r['warning']}")


# -- main ----------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="runs per server and workload; medians (default 3)")
    p.add_argument("--workers", type=int, default=2, help="worker processes of each server (default 2)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--sendfile", action=argparse.BooleanOptionalAction, default=True,
                   help="the appliance's sendfile (nginx always uses sendfile; default on)")
    p.add_argument("--access-log", action="store_true",
                   help="log every request to a file on both (nginx: combined, buffer=64k flush=1s; "
                        "oca: access_log = FILE, its 64 KiB buffer, flushed every second)")
    p.add_argument("--log-format", choices=("json", "combined"), default="json",
                   help="the appliance's access_log_format with --access-log (default json)")
    p.add_argument("--nginx-reuseport", action="store_true", help="nginx: listen ... reuseport")
    p.add_argument("--tls", action="store_true", help="both over HTTPS: same certificate, TLS 1.2/1.3, same cipher")
    p.add_argument("--nginx-open-file-cache", action="store_true", help="nginx: open_file_cache max=1000")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per server (default 2)")
    p.add_argument("--workloads", default="W1,W2,W3", help="subset, e.g. W3 (default W1,W2,W3)")
    p.add_argument("--seed", type=int, default=1, help="random offsets seed (same for both servers)")
    p.add_argument("--json", type=Path, help="write every run and the summary here")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found on PATH")
    workloads = [w for w in WORKLOADS if w.name in args.workloads.upper().split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-oca-nginx-"))
    root = tmp / "data"
    try:
        print(f"data: {root} (4 MiB + 200 MiB random files)", flush=True)
        make_data(root)
        index_like_dev(root)
        warm_page_cache(root)
        nginx_log = tmp / "nginx-access.log" if args.access_log else None
        oca_log = tmp / "oca-access.log" if args.access_log else None
        cert = key = None
        if args.tls:
            from tests.support.tlsca import TestCA

            args.ca = TestCA(tmp / "ca")
            cert, key = args.ca.issue("localhost", "127.0.0.1")
        with NginxServer(root, workers=args.workers, access_log=nginx_log, reuseport=args.nginx_reuseport,
                         open_file_cache="max=1000 inactive=60s" if args.nginx_open_file_cache else "off",
                         ssl_cert=cert, ssl_key=key) as ngx, \
             OcaFromConfig(root, workers=args.workers, sendfile=args.sendfile, access_log=oca_log,
                           log_format=args.log_format, log_path=tmp / "oca-stdout.log",
                           tls_cert=cert, tls_key=key) as oca:
            runs = bench(ngx, oca, workloads, args)
            rows = summarize(runs, {w.name for w in workloads}, args.tls)
            describe_setup(args, ngx, oca)
            print_table(rows)
            print_problems(runs, args)
        if args.access_log:  # both stopped: every buffered line is written
            print(f"access log lines: nginx {count_lines(nginx_log)}, oca {count_lines(oca_log)} "
                  f"(requests answered: nginx {_answered(runs, 'nginx')}, oca {_answered(runs, 'oca')}, "
                  f"plus warm-up and sanity requests)")
        if args.json:
            args.json.write_text(json.dumps({"config": _config(args), "summary": rows,
                                             "runs": {f"{k[0]}/{k[1]}": v for k, v in runs.items()}}, indent=1))
            print(f"\nwrote {args.json}")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def bench(ngx: NginxServer, oca: OcaFromConfig, workloads: list[Workload], args: argparse.Namespace):
    urls = {("nginx", w.name): ngx.url(w.key) for w in workloads}
    if args.tls:
        urls.update({("oca", w.name): f"https://127.0.0.1:{oca.tls_port}{oca.signed_path(w.key)}" for w in workloads})
    else:
        urls.update({("oca", w.name): oca.signed_url(w.key) for w in workloads})
    servers = {"nginx": ngx, "oca": oca}
    tls = ssl.create_default_context(cafile=str(args.ca.root_path)) if args.tls else None
    for w in workloads:
        for name in servers:
            sanity_check(urls[(name, w.name)], w.chunk, W1_SIZE if w.chunk == 0 else BIG_SIZE, tls)
    if tls is not None:  # what a default OpenSSL client (wrk) gets from each
        args.negotiated = {name: negotiated(port, tls) for name, port in (("nginx", ngx.port), ("oca", oca.tls_port))}
        print(f"negotiated: {args.negotiated}", flush=True)
    if args.warmup > 0:
        for name in servers:
            for w in workloads:
                run_wrk(urls[(name, w.name)], w, args, args.warmup, args.seed + 1000)
    runs: dict[tuple[str, str], list[dict]] = {(w.name, s): [] for w in workloads for s in servers}
    total = args.rounds * len(workloads) * 2
    done = 0
    for rnd in range(args.rounds):
        order = ["nginx", "oca"] if rnd % 2 == 0 else ["oca", "nginx"]
        for w in workloads:
            for name in order:
                done += 1
                r = measure(servers[name], urls[(name, w.name)], w, args, args.seed + rnd)
                runs[(w.name, name)].append(r)
                print(f"[{done:>2}/{total}] round {rnd + 1} {w.name} {name:<5} {r['gbps']:7.2f} Gbit/s "
                      f"{r['rps']:9.0f} req/s p99 {r['p99_ms']:7.2f} ms  cpu {r['cpu_s']:5.2f} s "
                      f"({r['cpu_s_per_gb']:.3f} s/GB)", flush=True)
    return runs


def negotiated(port: int, tls: ssl.SSLContext) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            tls.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        return f"{s.version()} {s.cipher()[0]}"


def _answered(runs: dict[tuple[str, str], list[dict]], server: str) -> int:
    return sum(r["requests"] for (_, name), results in runs.items() if name == server for r in results)


def describe_setup(args: argparse.Namespace, ngx: NginxServer, oca: OcaFromConfig) -> None:
    logs = (f"ON for both, to files (nginx: combined, buffer=64k flush=1s; oca: {args.log_format}, "
            "access_log_buffer_bytes 65536, access_log_flush_s 1)"
            if args.access_log else "OFF for both (nginx access_log off; oca access_log = false)")
    nginx_extra = ", ".join(filter(None, ["reuseport" if args.nginx_reuseport else "",
                                          "open_file_cache" if args.nginx_open_file_cache else ""])) or "stock"
    print(f"\n== appliance/nginx, medians of {args.rounds} round(s) x {args.duration:g} s, ABBA order ==")
    print(f"workers: {args.workers} each (nginx {len(ngx.worker_pids())} worker processes, oca "
          f"{oca.ready.get('workers')} workers); wrk -t{args.threads} -c{args.connections}; cores: {os.cpu_count()}")
    if args.tls:
        print(f"HTTPS on both, one certificate (ECDSA P-256, throwaway CA), {args.negotiated}; no sendfile on either "
              f"(no kTLS); nginx {nginx_extra}; access logs: {logs}")
    else:
        print(f"oca sendfile: {'on' if args.sendfile else 'OFF (--no-sendfile)'}; nginx: sendfile on, tcp_nopush on, "
              f"{nginx_extra}; access logs: {logs}")
    print("CPU = utime+stime of the serving processes (nginx workers; oca workers = children of its fork server); "
          "Gbit/s counts headers too")


def _config(args: argparse.Namespace) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "ca"} | {
        "cpus": os.cpu_count(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


if __name__ == "__main__":
    sys.exit(main())
