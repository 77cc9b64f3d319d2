"""The supervisor's side of the heartbeats: what `oca.reporter.Reporter` sends to every steering
replica. The reporter calls its two callables on the event loop, so everything they return is kept
ready in memory: the inventory follows the index's change log (as the workers do), popularity is
re-read every few seconds, both in a thread (`follow`, a supervised task of the daemon); the health
snapshot is built from the supervisor's own disk checks, counters and degraded tasks."""
from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING

from contracts.heartbeat import DiskReport, DiskState, HealthSnapshot, Load
from contracts.ids import FileKey
from contracts.keys import load_keyring
from contracts.logs import log_event
from contracts.tomlconf import ConfigError
from contracts.token import Keyring
from oca.reporter import InventoryState

if TYPE_CHECKING:
    from oca.daemon import Supervisor

log = logging.getLogger("oca.heartbeat")
POPULARITY_EVERY_S = 10.0
INVENTORY_EVERY_S = 1.0


class HeartbeatSource:
    def __init__(self, supervisor: "Supervisor") -> None:
        self.sup = supervisor
        self.keys_path = supervisor.config.tokens.key_file
        self._keys: tuple[float, Keyring] | None = None
        self._inventory = InventoryState(version=0, keys=frozenset())
        self._popularity: dict[FileKey, tuple[float, float]] = {}
        self.ready = asyncio.Event()  # set once the first inventory snapshot is in

    # ---- what the reporter reads -----------------------------------------------------------
    def snapshot(self) -> HealthSnapshot:
        report = self.sup.health_report()
        disks = tuple(DiskReport(path=d["path"], tier=d["tier"], state=DiskState.OK if d["ok"] else DiskState.FAILED,
                                 total_bytes=int(d["total_bytes"]), free_bytes=int(d["free_bytes"]),
                                 files=int(d["files"])) for d in report["disks"])
        return HealthSnapshot(
            accepting=report["accepting"], draining=report["draining"],
            load=Load(loadavg=report["load"]["loadavg"][0], open_connections=int(report["load"]["open_connections"])),
            egress_bps=int(report["egress_bps"]), capacity_bps=int(report["capacity_bps"]),
            disks=disks, popularity=self._popularity, degraded=tuple(report["degraded"]),
            pull_through=self.sup.config.pull_through.enabled,
            bgp=tuple(self.sup.bgp.table.public()) if self.sup.bgp is not None else ())

    def inventory(self) -> InventoryState:
        return self._inventory

    def keys(self) -> Keyring:
        """The key file, re-read when it changes (rotation without restart). A file caught half
        rewritten (rotation done with a plain editor) keeps the last good ring until it parses."""
        try:
            mtime = os.stat(self.keys_path).st_mtime
            if self._keys is None or self._keys[0] != mtime:
                self._keys = (mtime, load_keyring(self.keys_path))
        except (OSError, ConfigError) as exc:
            if self._keys is None:
                raise
            log_event(log, "keys-reload-failed", logging.WARNING, error=str(exc), keeping="last good keys")
        return self._keys[1]

    # ---- keeping it fresh --------------------------------------------------------------------
    async def follow(self) -> None:
        index = self.sup.store.index
        entries, seq = await asyncio.to_thread(index.snapshot)
        keys = set(entries)
        self._inventory = InventoryState(version=seq, keys=frozenset(keys))
        self.ready.set()
        last_popularity = 0.0
        while True:
            await asyncio.sleep(INVENTORY_EVERY_S)
            changed = await asyncio.to_thread(index.changes_since, seq)
            if changed is None:
                entries, seq = await asyncio.to_thread(index.snapshot)
                keys = set(entries)
            else:
                changes, seq = changed
                for key, entry in changes.items():
                    (keys.add if entry is not None else keys.discard)(key)
            if seq != self._inventory.version:
                self._inventory = InventoryState(version=seq, keys=frozenset(keys))
            if time.monotonic() - last_popularity > POPULARITY_EVERY_S:
                last_popularity = time.monotonic()
                self._popularity = await asyncio.to_thread(self._read_popularity)

    def _read_popularity(self) -> dict[FileKey, tuple[float, float]]:
        half_life = self.sup.config.store.popularity_half_life_s
        pop = self.sup.store.index.popularity(time.time(), half_life)
        return {k: (p.requests, p.bytes) for k, p in pop.items()}
