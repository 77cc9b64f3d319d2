"""Heartbeat wire cost per report: `decode_heartbeat` and `encode_heartbeat` of realistic reports, and
steering's ingest of them in process (`Replica.heartbeat`: signature check, decode, freshness and
replay checks, applying the report to the fleet state, counters) — what POST /v1/heartbeat does
besides HTTP.

    python loadtests/wire_decode.py [--repeat 7] [--min-time 0.3] [--keys 100000] [--popularity 2000]
                                    [--routes 10000] [--cpu N] [--json out.json]

Reports (one appliance each, 4 disks):
  full       the whole inventory (`--keys` file keys) and a popularity map of `--popularity` keys, as
             an appliance sends on start and after a gap
  delta      a few keys added and removed (3 and 2), popularity of 10 keys
  delta+pop  the same with `--popularity` popularity keys: a busy appliance's every round
  bgp        a full routes table of `--routes` routes and 4 BGP sessions; inventory unchanged

Each figure is the median over `--repeat` batches of this process's CPU time per report (the
machine is shared: CPU time does not count the time a neighbour held the core); a batch runs at
least `--min-time` seconds. Ingest bodies are encoded and signed beforehand, each with the next seq,
and a delta chain continues from batch to batch, so every ingested report is accepted.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from contracts.heartbeat import (BgpSession, DiskReport, DiskState, HealthSnapshot, Heartbeat,  # noqa: E402
                                 InventoryUpdate, Load, Route, RoutesUpdate, decode_heartbeat, encode_heartbeat,
                                 sign_body)
from contracts.ids import ApplianceId, FileKey, SiteId  # noqa: E402
from contracts.keys import write_new_keyfile  # noqa: E402
from steering import config as steering_config  # noqa: E402
from steering.service import Replica, load_all  # noqa: E402
from steering_core import make_prefixes  # noqa: E402

CASES = ("full", "delta", "delta+pop", "bgp")
SITE = SiteId("ams")
BOOT = "0123456789abcdef"
RENDITIONS = ("2160p", "1080p", "720p", "480p", "audio-en")


# ---- reports --------------------------------------------------------------------------------

def file_keys(n: int, start: int = 0) -> list[FileKey]:
    return [FileKey(f"titles/{(start + i) // 5:06d}/{RENDITIONS[(start + i) % 5]}.mp4") for i in range(n)]


def health(rng: random.Random, popular: list[FileKey], sessions: tuple[BgpSession, ...] = ()) -> HealthSnapshot:
    disks = tuple(DiskReport(f"/srv/{tier}{i}", tier, DiskState.OK, 4 * 10**12, rng.randrange(10**12), 18_000)
                  for i, tier in enumerate(("ssd", "ssd", "hdd", "hdd")))
    popularity = {k: (rng.uniform(0, 500), rng.uniform(0, 5e9)) for k in popular}
    return HealthSnapshot(accepting=True, draining=False, load=Load(0.7, 1200), egress_bps=3_200_000_000,
                          capacity_bps=10 * 10**9, disks=disks, popularity=popularity, bgp=sessions)


def routes_table(rng: random.Random, n: int) -> RoutesUpdate:
    announced = tuple(Route(p, (64500, rng.randrange(64512, 65000)), rng.choice((None, 0, 10)), None, ("64500:42",))
                      for p in make_prefixes(rng, n))
    return RoutesUpdate(1, True, announced)


class Reports:
    """The heartbeats of one case, each with the next seq (and, for deltas, the next generation)."""

    def __init__(self, case: str, appliance: str, args: argparse.Namespace, rng: random.Random) -> None:
        self.case, self.appliance, self.rng = case, ApplianceId(appliance), rng
        self.keys = file_keys(args.keys)
        popular = self.keys[: args.popularity] if case in ("full", "delta+pop") else self.keys[:10]
        sessions = tuple(BgpSession(f"192.0.2.{i}", 64500 + i, "up", time.time() - 3600, args.routes // 4, 3,
                                    time.time()) for i in range(1, 5)) if case == "bgp" else ()
        self.health = health(rng, popular, sessions)
        self.routes = routes_table(rng, args.routes) if case == "bgp" else None
        self.seq, self.generation, self.next_key = 0, 1, args.keys

    def first(self) -> Heartbeat:
        """The whole set, so a delta has a generation to apply to."""
        return self._hb(InventoryUpdate(generation=self.generation, full=True, added=tuple(self.keys)))

    def next(self) -> Heartbeat:
        if self.case == "full":
            return self.first()
        if self.case == "bgp":
            return self._hb(InventoryUpdate(generation=self.generation, full=False, base=self.generation))
        added = tuple(file_keys(3, self.next_key))
        removed = tuple(self.keys[:2])
        self.keys = self.keys[2:] + list(added)
        self.next_key += 3
        self.generation += 1
        return self._hb(InventoryUpdate(generation=self.generation, full=False, added=added, removed=removed,
                                        base=self.generation - 1))

    def _hb(self, inventory: InventoryUpdate) -> Heartbeat:
        self.seq += 1
        return Heartbeat(self.appliance, SITE, self.seq, time.time(), self.health, inventory, boot=BOOT,
                         routes=self.routes)


# ---- a replica ------------------------------------------------------------------------------

def replica(folder: Path, appliances: list[str]) -> Replica:
    write_new_keyfile(folder / "keys.toml")
    fleet = ['[[sites]]\nid = "ams"\nlatitude = 52.37\nlongitude = 4.9\nprefixes = ["192.0.2.0/24"]\n']
    fleet += [f'[[sites.appliances]]\nid = "{a}"\nbase_url = "http://{a}.oca.test:8080"\ncapacity_gbps = 10\n'
              for a in appliances]
    (folder / "fleet.toml").write_text("\n".join(fleet))
    (folder / "steering.toml").write_text(
        '[steering]\nfleet_file = "fleet.toml"\nkey_file = "keys.toml"\ndefault_site = "ams"\n'
        'log_decisions = false\n[health]\nreport_interval_s = 3600\n')
    config = steering_config.load(folder / "steering.toml")
    return Replica(config, load_all(config))


# ---- timing ---------------------------------------------------------------------------------

def batch_size(fn: Callable[[], Any], min_time: float) -> int:
    started = time.process_time()
    fn()
    once = max(time.process_time() - started, 1e-6)
    return max(1, round(min_time / once))


def timed(run_batch: Callable[[int], None], n: int, repeat: int) -> float:
    """Median CPU seconds per call over `repeat` batches of `n` calls."""
    per_call = []
    for _ in range(repeat):
        gc.collect()
        started = time.process_time()
        run_batch(n)
        per_call.append((time.process_time() - started) / n)
    return statistics.median(per_call)


def _loop(fn: Callable[[Any], Any], arg: Any, k: int) -> None:
    for _ in range(k):  # results dropped as they come, as steering drops a decoded report
        fn(arg)


def bench_case(case: str, reports: Reports, rep: Replica, args: argparse.Namespace) -> dict[str, float]:
    body = encode_heartbeat(reports.next())
    n = batch_size(lambda: decode_heartbeat(body), args.min_time)
    decode = timed(lambda k: _loop(decode_heartbeat, body, k), n, args.repeat)
    hb = decode_heartbeat(body)
    encode = timed(lambda k: _loop(encode_heartbeat, hb, k), n, args.repeat)

    keys = rep.loaded.appliance_keys(reports.appliance)
    assert keys is not None

    def signed(h: Heartbeat) -> tuple[bytes, str]:
        raw = encode_heartbeat(h)
        return raw, sign_body(raw, keys, reports.appliance)

    ack = rep.heartbeat(*signed(reports.first()))
    assert not ack.need_full, ack
    probe = signed(reports.next())
    m = batch_size(lambda: rep.heartbeat(*probe), args.min_time)
    bodies = [signed(reports.next()) for _ in range(m * args.repeat)]
    it = iter(bodies)

    def ingest(k: int) -> None:
        for _ in range(k):
            got = rep.heartbeat(*next(it))
            assert not got.need_full and not got.routes_need_full, got

    ingest_s = timed(ingest, m, args.repeat)
    return {"bytes": len(body), "decode_us": decode * 1e6, "encode_us": encode * 1e6, "ingest_us": ingest_s * 1e6}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--min-time", type=float, default=0.3, help="seconds of CPU per batch, at least")
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--popularity", type=int, default=2000)
    p.add_argument("--routes", type=int, default=10_000)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--cpu", type=int, default=None, help="pin to this core")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    cases = [c for c in args.cases.split(",") if c]
    rng = random.Random(42)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        rep = replica(Path(tmp), [f"ams-{i}" for i in range(1, len(CASES) + 1)])
        for i, case in enumerate(cases, 1):
            results[case] = bench_case(case, Reports(case, f"ams-{i}", args, rng), rep, args)
    print(f"heartbeat wire, median of {args.repeat} batches, CPU time per report "
          f"(keys {args.keys}, popularity {args.popularity}, routes {args.routes})")
    print(f"{'report':<10} {'size':>9} {'decode':>11} {'decode/s':>9} {'encode':>11} {'ingest':>11} {'ingest/s':>9}")
    for case, r in results.items():
        print(f"{case:<10} {r['bytes'] / 1024:>7.0f}KB {_us(r['decode_us']):>11} {1e6 / r['decode_us']:>9,.0f} "
              f"{_us(r['encode_us']):>11} {_us(r['ingest_us']):>11} {1e6 / r['ingest_us']:>9,.0f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def _us(value: float) -> str:
    return f"{value / 1000:,.2f} ms" if value >= 10_000 else f"{value:,.1f} us"


if __name__ == "__main__":
    main()
