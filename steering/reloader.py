"""Reloading steering's config and files while serving: the fleet, key and GeoIP files are polled for
changes, and SIGHUP reloads everything (the config file too). Files are read in a thread; the swap is a
few reference assignments on the loop (`Replica.adopt`), so no request is dropped or half-served.

A failed reload keeps the running state and raises `ReloadFailed`: the task supervisor logs it with
its traceback, counts it and restarts the loop after a backoff. The broken file's signature is not
recorded as seen, so the next poll retries it — while it stays broken the `reload` task keeps failing
and /healthz shows it degraded (the replica serves a stale fleet: an operator should look), and the
backoff (doubling up to its cap) keeps a big broken file from being re-parsed every poll.

A coverage-zone fleet is read against the running one (steering.czf): a bad zone is skipped, keeping
its last good version, and the reload goes on — one zone must not freeze the rest. With `fleet_url`
the fleet file is the poller's last good download (steering.fleetfetch), reloaded the same way.
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
from steering.core.fleet import Fleet
from steering.fleetconf import FleetInfo
from steering.fleetfetch import log_fleet, read_configured
from steering.geoip import GeoDatabase
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
        # the fleet file as the poller just wrote and imported it (its signature, fleet, info): not parsed twice
        self.prepared: tuple[Any, Fleet, FleetInfo] | None = None

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
            old_info = self.replica.loaded.fleet_info
            try:
                config, loaded = await asyncio.to_thread(self._read, parts)
            except (ValueError, OSError) as exc:  # ConfigError is a ValueError
                self.replica.metrics.reloads.labels("error").inc()
                raise ReloadFailed(f"{', '.join(sorted(parts))}: keeping the running config: {exc}") from exc
            self.replica.adopt(config, loaded)
            if loaded.fleet_info is not old_info:
                log_fleet(loaded.fleet_info)
            self.seen = self._signatures(config)
            self.replica.metrics.reloads.labels("ok").inc()
            log.info("reloaded", extra={"fields": {"parts": sorted(parts), "sites": len(loaded.fleet.sites),
                                                    "signing_key": loaded.keys.signing_id,
                                                    "fleet_revision": loaded.fleet_info.revision,
                                                    "fleet_skipped": len(loaded.fleet_info.skipped)}})
            return True

    def _read(self, parts: set[str]) -> tuple[SteeringConfig, Loaded]:
        old, cur = self.replica.config, self.replica.loaded
        config = steering_config.load(self.config_path) if "config" in parts and self.config_path else old
        if "config" in parts:
            return config, load_all(config, cur.fleet_info)  # (a changed config may name another fleet)
        fleet, info = self._fleet(config, cur.fleet_info) if "fleet" in parts else (cur.fleet, cur.fleet_info)
        if config.default_site not in fleet.sites:
            raise steering_config.ConfigError(f"steering.default_site: {config.default_site!r} not in the fleet")
        keys = load_keyring(config.key_file) if "keys" in parts else cur.keys
        geo = cur.geo
        if "geo" in parts and config.geo.database:
            geo = GeoDatabase(config.geo.database)
        callers = load_callers(config.callers_file) if "callers" in parts else cur.callers
        return config, Loaded(fleet=fleet, keys=keys, geo=geo, callers=callers, fleet_info=info)

    def prepare(self, fleet: Fleet, info: FleetInfo) -> None:
        """The fleet file was just written and imported as `fleet`, `info` (steering.fleetfetch): the
        next reload takes them instead of parsing the file again, if the file is still that one."""
        self.prepared = (file_signature(self.replica.config.fleet_file), fleet, info)

    def _fleet(self, config: SteeringConfig, previous: FleetInfo) -> tuple[Fleet, FleetInfo]:
        prepared, self.prepared = self.prepared, None
        if prepared is not None and prepared[0] == file_signature(config.fleet_file):
            return prepared[1], prepared[2]
        return read_configured(config, previous)


__all__ = ["Reloader", "ReloadFailed"]
