"""Reloading steering's config and files while serving: the fleet, key and GeoIP files are polled for
changes, and SIGHUP reloads everything (the config file too). Files are read in a thread; the swap is a
few reference assignments on the loop (`Replica.adopt`), so no request is dropped or half-served.

A failed reload keeps the running state and raises `ReloadFailed`: the task supervisor logs it with
its traceback, counts it and restarts the loop after a backoff. The broken file's signature is not
recorded as seen, so the next poll retries it — while it stays broken the `reload` task keeps failing
and /healthz shows it degraded (the replica serves a stale fleet: an operator should look), and the
backoff (doubling up to its cap) keeps a big broken file from being re-parsed every poll.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any, Callable

from contracts.keys import load_keyring
from steering import config as steering_config
from steering.config import SteeringConfig
from steering.fleetconf import load_fleet
from steering.geoip import GeoDatabase
from steering.metrics import labels
from steering.service import Loaded, Replica, file_signature, load_all, load_callers

log = logging.getLogger("steering")


class ReloadFailed(Exception):
    """A reload could not read what changed; the replica keeps serving the previous config."""


class Reloader:
    def __init__(self, replica: Replica, config_path: Path | None) -> None:
        self.replica = replica
        self.config_path = config_path
        self.seen = self._signatures(replica.config)  # what the running state was read from
        self.requested = asyncio.Event()  # set by SIGHUP: reload everything now
        self._lock = asyncio.Lock()

    def _signatures(self, config: SteeringConfig) -> dict[str, Any]:
        return {"config": file_signature(self.config_path), "fleet": file_signature(config.fleet_file),
                "keys": file_signature(config.key_file), "geo": file_signature(config.geo.database),
                "callers": file_signature(config.callers_file)}

    async def run(self, succeeded: Callable[[], None]) -> None:
        """The `reload` task: poll every reload_check_interval_s, or reload everything when requested.
        `succeeded` tells the supervisor a pass went cleanly (ends a failure streak)."""
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.requested.wait(), self.replica.config.server.reload_check_interval_s)
            forced = self.requested.is_set()
            self.requested.clear()
            await self.reload(force=forced)
            succeeded()

    async def reload(self, force: bool = False) -> bool:
        """Reload what changed (everything if `force`); True if something was swapped in."""
        async with self._lock:
            now = self._signatures(self.replica.config)
            parts = set(now) if force else {k for k in now if now[k] != self.seen[k]}
            if not parts:
                return False
            try:
                config, loaded = await asyncio.to_thread(self._read, parts)
            except (ValueError, OSError) as exc:  # ConfigError is a ValueError
                self.replica.metrics.inc("steering_reloads_total", labels(result="error"))
                raise ReloadFailed(f"{', '.join(sorted(parts))}: keeping the running config: {exc}") from exc
            self.replica.adopt(config, loaded)
            self.seen = self._signatures(config)
            self.replica.metrics.inc("steering_reloads_total", labels(result="ok"))
            log.info("reloaded", extra={"fields": {"parts": sorted(parts), "sites": len(loaded.fleet.sites),
                                                    "signing_key": loaded.keys.signing_id}})
            return True

    def _read(self, parts: set[str]) -> tuple[SteeringConfig, Loaded]:
        old, cur = self.replica.config, self.replica.loaded
        config = steering_config.load(self.config_path) if "config" in parts and self.config_path else old
        if "config" in parts:
            return config, load_all(config)
        fleet = load_fleet(config.fleet_file) if "fleet" in parts else cur.fleet
        if config.default_site not in fleet.sites:
            raise steering_config.ConfigError(f"steering.default_site: {config.default_site!r} not in the fleet")
        keys = load_keyring(config.key_file) if "keys" in parts else cur.keys
        geo = cur.geo
        if "geo" in parts and config.geo.database:
            geo = GeoDatabase(config.geo.database)
        callers = load_callers(config.callers_file) if "callers" in parts else cur.callers
        return config, Loaded(fleet=fleet, keys=keys, geo=geo, callers=callers)


__all__ = ["Reloader", "ReloadFailed"]
