"""The inventory follower: the supervisor's side of what heartbeats say the appliance holds. It
follows the index's change log (as the serving workers do) and re-reads popularity every few
seconds, both in a thread (`follow`, a supervised task of the daemon), so the reporter
(oca.reporter, which sends the heartbeats) reads both from memory on the event loop."""
from __future__ import annotations

import asyncio
import time
from typing import Callable

from contracts.ids import FileKey
from oca.reporter import InventoryState
from oca.store.index import Index

POPULARITY_EVERY_S = 10.0
INVENTORY_EVERY_S = 1.0


class InventoryFollower:
    def __init__(self, index: Index, half_life_s: Callable[[], float]) -> None:
        self.index = index
        self.half_life_s = half_life_s  # the config's, read at each refresh (SIGHUP may change it)
        self._inventory = InventoryState(version=0, keys=frozenset())
        self.popularity: dict[FileKey, tuple[float, float]] = {}  # (requests, bytes), decayed
        self.ready = asyncio.Event()  # set once the first inventory snapshot is in

    def inventory(self) -> InventoryState:
        return self._inventory

    async def follow(self) -> None:
        index = self.index
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
                self.popularity = await asyncio.to_thread(self._read_popularity)

    def _read_popularity(self) -> dict[FileKey, tuple[float, float]]:
        pop = self.index.popularity(time.time(), self.half_life_s())
        return {k: (p.requests, p.bytes) for k, p in pop.items()}
