"""Test helper: one appliance process as steering sees it — the real oca.reporter.Reporter, with its
health snapshot and inventory read from a JSON file the test rewrites (to drive a noisy load signal
or change what it holds). Stands in for the appliance daemon until that daemon wires the reporter in.

    python tests/steering/reporter_proc.py --id ams-1 --site ams --interval 0.3 \
        --state /tmp/x/ams-1.json --keys /tmp/x/keys.toml --steering http://127.0.0.1:8100 [--steering ...]

State file: {"egress_bps": .., "capacity_bps": .., "accepting": true, "draining": false,
             "loadavg": 0.5, "version": 3, "keys": ["a/b.mp4", ...], "failed_disks": 0}
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from contracts.heartbeat import DiskReport, DiskState, HealthSnapshot, Load  # noqa: E402
from contracts.keys import derive_keyring, load_keyring  # noqa: E402
from oca.reporter import InventoryState, Reporter  # noqa: E402


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.last: dict = {}

    def read(self) -> dict:
        try:
            self.last = json.loads(self.path.read_text())
        except (OSError, ValueError):
            pass  # mid-rewrite or gone: keep the last good state
        return self.last

    def snapshot(self) -> HealthSnapshot:
        s = self.read()
        failed = int(s.get("failed_disks", 0))
        disks = tuple(DiskReport(path=f"/srv/d{i}", tier="hdd", state=DiskState.FAILED if i < failed else DiskState.OK,
                                 total_bytes=10**12, free_bytes=10**11, files=len(s.get("keys", ())))
                      for i in range(2))
        return HealthSnapshot(accepting=s.get("accepting", True), draining=s.get("draining", False),
                              load=Load(loadavg=float(s.get("loadavg", 0.1)), open_connections=10),
                              egress_bps=int(s.get("egress_bps", 0)), capacity_bps=int(s.get("capacity_bps", 10**10)),
                              disks=disks, popularity={k: (1.0, 1000.0) for k in s.get("keys", ())[:5]})

    def inventory(self) -> InventoryState:
        s = self.last or self.read()
        return InventoryState(version=int(s.get("version", 0)), keys=frozenset(s.get("keys", ())))


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--id", required=True)
    p.add_argument("--site", required=True)
    p.add_argument("--interval", type=float, default=0.5)
    p.add_argument("--state", type=Path, required=True)
    p.add_argument("--steering", action="append", required=True)
    p.add_argument("--keys", type=Path, required=True,
                   help="the fleet's master key file: the stand-in derives its own keys as provisioning would")
    args = p.parse_args()
    state = StateFile(args.state)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    keys = derive_keyring(load_keyring(args.keys), args.id)
    reporter = Reporter(args.id, args.site, args.steering, args.interval, state.snapshot, state.inventory, keys=keys)
    print("reporting", flush=True)
    await reporter.run(stop)


if __name__ == "__main__":
    asyncio.run(main())
