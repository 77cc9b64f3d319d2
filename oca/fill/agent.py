"""One fill run (`oca fill -c FILE`; a systemd timer starts it when the window opens).

    window? ─► manifest (steering / file) ─► refuse? keep the current set, stop
          └─► pin its keys ─► diff against the index ─► download the missing, hottest first
              (max_files at once, each in parallel ranged parts; the manifest's sources in order —
              peers holding it, a peer still filling it (waited for, without a slot, up to its
              wait_s), other sites, the origin; paced by a token bucket that slows down while
              serving is busy) ─► complete? delete what left it

It stops cleanly when the window ends or on SIGTERM/SIGINT: downloads in flight stop after their
current chunk, their partial files and journals stay, and the next run continues from there. Disk full:
the file that did not fit and every lower-priority one wait for the next run; nothing pinned or being
written is evicted (the store never evicts those). Exit codes: 0 the manifest is in place, 1 some files
failed, 3 stopped or deferred with work left, 4 manifest refused, 5 no manifest to act on, 2 usage.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from contracts.keys import load_keyring
from contracts.token import Keyring
from contracts.manifest import Manifest, ManifestFile
from oca.fill import manifest_client
from oca.fill.config import FillConfig, local_zone
from oca.fill.core import rate
from oca.fill.core.diff import Held, complete, deletions, diff
from oca.fill.core.window import state as window_state
from oca.fill.fetch import Fetcher, Limiter, Outcome
from oca.fill.log import log
from oca.fill.metrics import FillMetrics
from oca.fill.sources import Resolver
from oca.fill.statedir import StateDir
from oca.config import OcaConfig
from oca.store.errors import WriteInProgress
from oca.store.store import Store

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_REFUSED, EXIT_NO_MANIFEST = 0, 1, 2, 3, 4, 5
METRICS_EVERY_S = 2.0


@dataclass(frozen=True)
class RunOptions:
    steering: tuple[str, ...] = ()
    manifest_file: Path | None = None
    ignore_window: bool = False
    progress: bool = True
    max_run_s: float | None = None  # stop after this many seconds even inside the window
    admin_url: str | None = None


def state_dir(oca: OcaConfig, cfg: FillConfig) -> Path:
    return cfg.agent.state_dir or oca.store.index_path.parent / "fill"


def admin_url(oca: OcaConfig, cfg: FillConfig, opts: RunOptions) -> str | None:
    if opts.admin_url or cfg.serving.admin_url:
        return opts.admin_url or cfg.serving.admin_url
    if oca.admin.port == 0:
        return None
    host = "127.0.0.1" if oca.admin.listen in ("0.0.0.0", "", "::") else oca.admin.listen
    return f"http://{host}:{oca.admin.port}"


def time_left(cfg: FillConfig, now: dt.datetime | None = None) -> float | None:
    """Seconds left in the window now, or None when outside it."""
    zone = local_zone(cfg.window.timezone)
    local = now or (dt.datetime.now(zone) if zone else dt.datetime.now())
    st = window_state(local.replace(tzinfo=None), cfg.window.window)
    return st.remaining_s if st.inside else None


class Run:
    def __init__(self, oca: OcaConfig, cfg: FillConfig, opts: RunOptions) -> None:
        self.oca, self.cfg, self.opts = oca, cfg, opts
        self.state_dir = StateDir(state_dir(oca, cfg))
        self.metrics = FillMetrics(self.state_dir.root / "fill-metrics.prom", progress=opts.progress)
        self.stop = asyncio.Event()
        self.stop_reason = ""

    def request_stop(self, reason: str) -> None:
        if not self.stop.is_set():
            self.stop_reason = reason
            log("stopping", reason=reason)
            self.stop.set()

    async def main(self) -> int:
        self.state_dir.lock()
        try:
            return await self._main()
        finally:
            self.metrics.set("fill_run_end_timestamp_seconds", round(time.time(), 3))
            self.metrics.close_progress()
            await asyncio.to_thread(self.metrics.write)
            self.state_dir.unlock()

    async def _main(self) -> int:
        left = None if self.opts.ignore_window else time_left(self.cfg)
        if left is None and not self.opts.ignore_window:
            log("outside-window")
            return EXIT_OK
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        limits = [x for x in (left, self.opts.max_run_s) if x is not None]
        if limits:
            loop.call_later(min(limits), self.request_stop, "window-end")
        t = self.cfg.transfer
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=t.connect_timeout_s, sock_read=t.read_timeout_s)
        connector = aiohttp.TCPConnector(limit=t.max_files * t.parts_per_file + 4, limit_per_host=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector, auto_decompress=False) as session:
            keys = await asyncio.to_thread(load_keyring, self.oca.tokens.key_file)
            resolver = Resolver(self.cfg.origin)
            manifest = await self._manifest(session, resolver, keys)
            if isinstance(manifest, int):
                return manifest
            store = await asyncio.to_thread(Store.open, self.oca)
            try:
                return await self._fill(session, resolver, store, manifest)
            finally:
                await asyncio.to_thread(store.close)

    async def _manifest(self, session: aiohttp.ClientSession, resolver: Resolver, keys: Keyring) -> Manifest | int:
        appliance = self.oca.appliance_id
        try:
            if self.opts.manifest_file is not None:
                raw, manifest = await asyncio.to_thread(manifest_client.read_file, self.opts.manifest_file,
                                                        appliance, keys)
            else:
                saved = await asyncio.to_thread(self.state_dir.saved_manifest)
                raw, manifest, _ = await manifest_client.from_steering(session, self.opts.steering, appliance, saved,
                                                                       keys)
            resolver.credentials = manifest.credentials  # each source's own, for this run
            if self.cfg.origin.verify_catalog:
                catalog = await manifest_client.catalog_index(self.cfg.origin, session, resolver)
                if catalog is None:
                    log("catalog-not-checked", why="no [origin] configured")
                else:
                    manifest_client.check_against_catalog(manifest, catalog)
        except manifest_client.ManifestRefused as exc:
            self.metrics.set("fill_manifest_refused", 1)
            log("manifest-refused", error=str(exc))
            return EXIT_REFUSED
        except manifest_client.NoManifest as exc:
            log("no-manifest", error=str(exc))
            return EXIT_NO_MANIFEST
        await asyncio.to_thread(self.state_dir.save_manifest, raw)
        log("manifest", version=manifest.version, files=len(manifest.files), bytes=manifest.total_bytes())
        return manifest

    async def _fill(self, session: aiohttp.ClientSession, resolver: Resolver, store: Store, manifest: Manifest) -> int:
        managed = self.state_dir.managed() | manifest.keys()
        await asyncio.to_thread(self.state_dir.save_managed, managed)
        await asyncio.to_thread(store.index.set_pins, manifest.keys())
        held = await asyncio.to_thread(_held, store)
        d = diff(manifest, held, managed)
        await asyncio.to_thread(self.state_dir.drop_journals_except, [f.key for f in d.fetch])
        m = self.metrics
        m.set("fill_manifest_files", len(manifest.files))
        m.set("fill_manifest_bytes", manifest.total_bytes())
        log("plan", fetch=len(d.fetch), fetch_bytes=d.fetch_bytes, keep=len(d.keep), replace=len(d.replace),
            delete_when_complete=len(d.delete_later))
        m.start_progress(d.fetch_bytes, len(d.fetch))
        limiter = Limiter(self.cfg.transfer.rate_limit_bps)
        m.set("fill_rate_limit_bits_per_second", self.cfg.transfer.rate_limit_bps)
        fetcher = Fetcher(store, self.state_dir, session, resolver, m, self.cfg.transfer, limiter, self.stop)
        chores = [asyncio.ensure_future(self._write_metrics())]
        url = admin_url(self.oca, self.cfg, self.opts)
        if url is not None:
            chores.append(asyncio.ensure_future(self._yield_to_serving(session, url, limiter)))
        try:
            outcomes = await self._download(d.fetch, fetcher)
        finally:
            for c in chores:
                c.cancel()
            await asyncio.gather(*chores, return_exceptions=True)
            m.close_progress()
        return await self._finish(store, manifest, managed, outcomes)

    async def _download(self, files: tuple[ManifestFile, ...], fetcher: Fetcher) -> list[Outcome]:
        slots = asyncio.Semaphore(self.cfg.transfer.max_files)
        barrier: list[int] = []  # priority of the first file that found no room
        outcomes: list[Outcome] = []
        tasks = []

        async def one(f: ManifestFile) -> None:
            while True:
                try:
                    out = await fetcher.fetch(f)
                finally:
                    slots.release()
                if out.status != "waiting":
                    break
                # a peer is still filling it: ask again later, leaving the slot to other files meanwhile
                await fetcher._sleep(pending_poll_s(f))
                if self.stop.is_set():
                    out = Outcome(f.key, "stopped")
                    break
                await slots.acquire()
            outcomes.append(out)
            self._count(f, out)
            if out.status == "no-room":
                barrier.append(f.priority)

        for f in files:
            await slots.acquire()
            if self.stop.is_set() or (barrier and f.priority > min(barrier)):
                slots.release()
                reason = "stopped" if self.stop.is_set() else "no-room"
                outcomes.append(Outcome(f.key, "deferred", reason=reason))
                self.metrics.inc("fill_files_deferred_total", reason=reason)
                continue
            tasks.append(asyncio.ensure_future(one(f)))
        await asyncio.gather(*tasks)
        return outcomes

    def _count(self, f: ManifestFile, out: Outcome) -> None:
        m = self.metrics
        if out.status == "published":
            m.inc("fill_files_published_total", kind=out.source)
            log("published", key=f.key, size=f.size, tier=f.tier, source=out.source)
        elif out.status == "failed":
            m.inc("fill_files_failed_total", reason="sources")
            log("fetch-failed", key=f.key, reason=out.reason)
        else:
            m.inc("fill_files_deferred_total", reason=out.status)
            log("deferred", key=f.key, why=out.status, reason=out.reason)

    async def _finish(self, store: Store, manifest: Manifest, managed: set, outcomes: list[Outcome]) -> int:
        held = await asyncio.to_thread(_held, store)
        gone, waiting = [], []
        for key in deletions(manifest, held, managed):
            try:
                await asyncio.to_thread(store.remove, key)
                gone.append(key)
            except WriteInProgress:  # the mover (or a pull) has it now: deleted on the next run
                waiting.append(key)
        if gone:
            self.metrics.inc("fill_files_deleted_total", len(gone))
            log("deleted", files=len(gone))
        if waiting:
            log("delete-deferred", files=len(waiting), why="being written or moved")
        done = complete(manifest, held)
        if done:
            await asyncio.to_thread(self.state_dir.save_managed, manifest.keys())
        missing = [f for f in manifest.files if f.key not in held or held[f.key].xxh3 != f.xxh3]
        m = self.metrics
        m.set("fill_complete", int(done))
        m.set("fill_missing_files", len(missing))
        m.set("fill_missing_bytes", sum(f.size for f in missing))
        failed = sum(1 for o in outcomes if o.status == "failed")
        code = EXIT_OK if done else EXIT_FAILED if failed else EXIT_INCOMPLETE
        log("fill-done", complete=done, failed=failed, missing=len(missing), stop=self.stop_reason or None,
            exit_code=code, metrics=m.summary())
        return code

    async def _write_metrics(self) -> None:
        while True:
            await asyncio.sleep(METRICS_EVERY_S)
            await asyncio.to_thread(self.metrics.write)

    async def _yield_to_serving(self, session: aiohttp.ClientSession, url: str, limiter: Limiter) -> None:
        s, cap = self.cfg.serving, self.cfg.transfer.rate_limit_bps
        while True:
            try:
                async with session.get(f"{url}/v1/health", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    health = await resp.json()
                want = rate.budget_bps(cap, health.get("egress_bps"), health.get("capacity_bps"),
                                       s.busy_fraction, s.floor_fraction)
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                want = cap
            if cap and abs(want - limiter.rate_bps) > 0.01 * cap:
                limiter.set_rate(want)
                self.metrics.set("fill_rate_limit_bits_per_second", round(want))
            await asyncio.sleep(s.poll_s)


def pending_poll_s(f: ManifestFile) -> float:
    """How long to wait before asking a peer that is still filling `f` again: a tenth of the longest
    wait its sources allow, between 0.5 s and 30 s."""
    longest = max((s.wait_s for s in f.sources), default=0.0)
    return min(30.0, max(0.5, longest / 10))


def _held(store: Store) -> dict:
    return {e.key: Held(e.key, e.size, e.xxh3, e.tier.value) for e in store.index.all()}


async def run(oca: OcaConfig, cfg: FillConfig, opts: RunOptions) -> int:
    return await Run(oca, cfg, opts).main()
