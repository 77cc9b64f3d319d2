"""Downloading one manifest file: source failover, parallel ranged GETs into the store's partial file,
resume, pacing, verification.

One attempt uses one source. It opens the key's resumable partial (`begin_write(resume=True)`), reads
the journal of ranges already written, and fetches the gaps as parts of `part_bytes`, up to
`parts_per_file` at once, each writing at its offset with pwrite (1 MiB at a time, off the loop) and
recording its progress in the journal. When every byte is there, `commit` re-reads the file, checks
xxh3-128 against the manifest and publishes it atomically (temp file, fsync, rename, index): no partial
file is ever visible. A fault ends the attempt; the partial and journal stay, so the next source (or
the next night) continues where this one stopped. A hash mismatch deletes the partial, records the
download in the quarantine ledger and excludes that source for the file (if the attempt began from
resumed bytes, whose source is unknown, it starts over from zero instead, once).

Escalation: a source with `wait_s` is a peer filling the file this window. Its 404 means "not yet":
the fetch returns "waiting" (the agent asks again later, without holding a download slot) until
`wait_s` after that source's first 404, then moves on to the next source. What a file has tried
(sources excluded, first "not yet") is kept across those returns, so nothing is asked twice in vain.
"""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import aiohttp

from contracts.manifest import ManifestFile, Source
from oca.fill.config import TransferConfig
from oca.fill.core import rate
from oca.fill.core.parts import Range, clip, content_range_ok, covered, merge, plan_parts
from oca.fill.core.retry import Fault, GiveUp, Use, Wait, backoff_s, choose, classify_status, host_of
from oca.fill.log import log
from oca.fill.metrics import FillMetrics
from oca.fill.sources import NoOrigin, Resolver
from oca.fill.statedir import StateDir
from oca.config import Tier
from oca.store.errors import HashMismatch, NoSpace, SizeMismatch, StoreError, WriteInProgress, from_os_error
from oca.store.store import Store

FLUSH_BYTES = 1 << 20
JOURNAL_EVERY_S = 0.5


class SourceFault(Exception):
    def __init__(self, fault: Fault, message: str) -> None:
        super().__init__(message)
        self.fault = fault


class Stopped(Exception):
    """The window ended or SIGTERM arrived: the attempt stops, its partial stays for the next run."""


@dataclass
class Tried:
    """One file's failover so far, kept while it waits for a pending peer."""
    excluded: set[int] = field(default_factory=set)
    not_yet_since: dict[int, float] = field(default_factory=dict)  # pending source -> its first 404


@dataclass(frozen=True, slots=True)
class Outcome:
    key: str
    status: str  # "published" | "no-room" | "failed" | "stopped" | "busy" | "waiting"
    source: str = ""  # kind of the source that delivered it
    reason: str = ""


class Limiter:
    """The shared token bucket (oca.fill.core.rate) on the event loop."""

    def __init__(self, rate_bps: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.rate_bps = rate_bps
        self.bucket = rate.new_bucket(rate_bps / 8, clock())

    def set_rate(self, rate_bps: float) -> None:
        self.rate_bps = rate_bps
        self.bucket = rate.with_rate(self.bucket, rate_bps / 8, self.clock())

    async def consume(self, nbytes: int) -> None:
        self.bucket, wait = rate.take(self.bucket, nbytes, self.clock())
        if wait > 0:
            await asyncio.sleep(wait)


class Progress:
    """What an attempt has written: ranges done before it, plus each running part's [start, pos)."""

    def __init__(self, state_dir: StateDir, f: ManifestFile, disk: str, done: list[Range]) -> None:
        self.state_dir, self.f, self.disk = state_dir, f, disk
        self.done = list(done)
        self.active: dict[int, Range] = {}
        self._saved_at = 0.0
        self._lock = asyncio.Lock()

    def ranges(self) -> list[Range]:
        return merge(self.done + list(self.active.values()))

    def advance(self, part: int, start: int, pos: int) -> None:
        self.active[part] = (start, pos)

    async def save(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._saved_at >= JOURNAL_EVERY_S:
            self._saved_at = now
            f = self.f
            async with self._lock:  # one writer at a time, the newest ranges last
                await asyncio.to_thread(self.state_dir.save_journal, f.key, f.size, f.xxh3, self.disk, self.ranges())


class Fetcher:
    def __init__(self, store: Store, state_dir: StateDir, session: aiohttp.ClientSession, resolver: Resolver,
                 metrics: FillMetrics, settings: TransferConfig, limiter: Limiter, stop: asyncio.Event) -> None:
        self.store, self.state_dir, self.session, self.resolver = store, state_dir, session, resolver
        self.metrics, self.settings, self.limiter, self.stop = metrics, settings, limiter, stop
        self.retry_at: dict[str, float] = {}  # host -> monotonic time it may be tried again
        self.failures: dict[str, int] = {}  # host -> consecutive failures
        self.tried: dict[str, Tried] = {}  # files waiting for a pending peer
        self.resumed: set[str] = set()  # files whose earlier runs' bytes are counted (once: a retry or a
        # wait for a filling peer starts another attempt, and its journal holds this run's bytes too)

    # --- failover ------------------------------------------------------------------------------

    async def fetch(self, f: ManifestFile) -> Outcome:
        tried = self.tried.pop(f.key, None) or Tried()
        excluded = tried.excluded
        host_faults, restarted = 0, False
        while True:
            if self.stop.is_set():
                return Outcome(f.key, "stopped")
            choice = choose(f.sources, excluded, self.retry_at, time.monotonic())
            if isinstance(choice, GiveUp):
                return Outcome(f.key, "failed", reason=choice.reason)
            if isinstance(choice, Wait):
                await self._sleep(choice.seconds)
                continue
            assert isinstance(choice, Use)
            source = f.sources[choice.index]
            try:
                await self._attempt(f, source)
                self._host_ok(source)
                return Outcome(f.key, "published", source.kind)
            except NoSpace as exc:
                return Outcome(f.key, "no-room", reason=str(exc))
            except WriteInProgress as exc:
                return Outcome(f.key, "busy", reason=str(exc))
            except Stopped:
                return Outcome(f.key, "stopped")
            except StoreError as exc:
                return Outcome(f.key, "failed", reason=str(exc))
            except NoOrigin as exc:
                excluded.add(choice.index)
                self.metrics.inc("fill_source_errors_total", kind=source.kind, fault="no-origin")
                log("source-fault", key=f.key, source="origin", fault="no-origin", error=str(exc))
            except SourceFault as exc:
                if not (exc.fault is Fault.NOT_HERE and source.wait_s > 0):  # a pending peer's "not yet" is no fault
                    self.metrics.inc("fill_source_errors_total", kind=source.kind, fault=exc.fault.value)
                    log("source-fault", key=f.key, source=_describe(source), fault=exc.fault.value, error=str(exc))
                if exc.fault is Fault.NOT_HERE and source.wait_s > 0:
                    now = time.monotonic()
                    since = tried.not_yet_since.setdefault(choice.index, now)
                    if now - since < source.wait_s:  # still filling it: ask again later
                        self.metrics.inc("fill_source_waits_total", kind=source.kind)
                        self.tried[f.key] = tried
                        return Outcome(f.key, "waiting", source.kind, f"{_describe(source)} is still filling it")
                    self.metrics.inc("fill_escalations_total", kind=source.kind)
                    log("escalate", key=f.key, source=_describe(source), waited_s=round(now - since, 1))
                    excluded.add(choice.index)
                elif exc.fault is Fault.HOST:
                    self._host_failed(source)
                    host_faults += 1
                    if host_faults >= self.settings.max_attempts:
                        return Outcome(f.key, "failed", reason=f"{host_faults} host failures, last: {exc}")
                elif exc.fault is Fault.BAD_CONTENT and getattr(exc, "resumed", 0) and not restarted:
                    restarted = True  # the bad bytes may be last night's, from another source
                else:
                    excluded.add(choice.index)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stop.wait(), timeout=max(seconds, 0.01))
        except asyncio.TimeoutError:
            pass

    def _host_failed(self, source: Source) -> None:
        host = host_of(source)
        n = self.failures[host] = self.failures.get(host, 0) + 1
        jitter = (hash((host, n)) & 0xFFFF) / 65536
        self.retry_at[host] = time.monotonic() + backoff_s(n, self.settings.backoff_base_s,
                                                          self.settings.backoff_cap_s, jitter)

    def _host_ok(self, source: Source) -> None:
        host = host_of(source)
        self.failures.pop(host, None)
        self.retry_at.pop(host, None)

    # --- one attempt -----------------------------------------------------------------------------

    async def _attempt(self, f: ManifestFile, source: Source) -> int:
        url, headers = await asyncio.to_thread(self.resolver.request_for, f.key, source)
        pending = await asyncio.to_thread(self.store.begin_write, f.key, f.size, Tier(f.tier), resume=True)
        committed = False
        disk = str(pending.disk.path)
        done = clip(self.state_dir.load_journal(f.key, f.size, f.xxh3, disk), pending.offset)
        resumed = covered(done)
        if resumed and f.key not in self.resumed:
            self.resumed.add(f.key)
            self.metrics.inc("fill_resumed_bytes_total", resumed)
            self.metrics.advance(resumed)
        progress = Progress(self.state_dir, f, disk, done)
        writes: set[asyncio.Future] = set()
        try:
            fd = pending.fileno()
            parts = plan_parts(f.size, done, self.settings.part_bytes)
            await self._parts(f, source, url, headers, fd, parts, progress, writes)
            await progress.save(force=True)
            try:
                await asyncio.to_thread(pending.commit, f.xxh3)
                committed = True
            except (HashMismatch, SizeMismatch) as exc:
                committed = True  # commit aborted it: a mismatch deletes the partial
                await asyncio.to_thread(pending.abort, False)
                await asyncio.to_thread(self.state_dir.drop_journal, f.key)
                self.metrics.inc("fill_hash_mismatches_total", kind=source.kind)
                await asyncio.to_thread(self.state_dir.quarantine, {
                    "key": f.key, "source": _describe(source), "expected": f.xxh3, "size": f.size,
                    "error": str(exc), "resumed_bytes": resumed})
                fault = SourceFault(Fault.BAD_CONTENT, str(exc))
                fault.resumed = resumed  # type: ignore[attr-defined]
                raise fault from None
            await asyncio.to_thread(self.state_dir.drop_journal, f.key)
            return resumed
        finally:
            if writes:
                await asyncio.gather(*writes, return_exceptions=True)
            if not committed:
                await progress.save(force=True)
                await asyncio.to_thread(pending.abort)

    async def _parts(self, f: ManifestFile, source: Source, url: str, headers: dict[str, str], fd: int,
                     parts: list[Range], progress: Progress, writes: set) -> None:
        """Run the parts, `parts_per_file` at a time; the first failure cancels the rest."""
        queue = list(enumerate(parts))
        queue.reverse()

        async def worker() -> None:
            while queue:
                if self.stop.is_set():
                    raise Stopped()
                i, (start, end) = queue.pop()
                await self._part(f, source, url, headers, fd, i, start, end, progress, writes)

        tasks = [asyncio.ensure_future(worker()) for _ in range(min(self.settings.parts_per_file, len(parts)))]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _part(self, f: ManifestFile, source: Source, url: str, headers: dict[str, str], fd: int,
                    part: int, start: int, end: int, progress: Progress, writes: set) -> None:
        whole = start == 0 and end == f.size
        req = dict(headers)
        req["Range"] = f"bytes={start}-{end - 1}"
        try:
            async with self.session.get(url, headers=req) as resp:
                if resp.status == 206:
                    if not content_range_ok(resp.headers.get("Content-Range"), start, end, f.size):
                        raise SourceFault(Fault.BAD_CONTENT, f"{_describe(source)}: Content-Range "
                                          f"{resp.headers.get('Content-Range')!r}, wanted {start}-{end - 1}/{f.size}")
                elif resp.status == 200 and whole and resp.content_length in (None, f.size):
                    pass  # a source that ignores Range but sends the whole file: as good
                elif resp.status == 200:
                    raise SourceFault(Fault.HOST, f"{_describe(source)}: answered 200 to a ranged GET")
                else:
                    raise SourceFault(classify_status(resp.status), f"{_describe(source)}: HTTP {resp.status}")
                await self._body(resp, f, source, fd, part, start, end, progress, writes)
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
            raise SourceFault(Fault.HOST, f"{_describe(source)}: {type(exc).__name__}: {exc}") from None

    async def _body(self, resp: aiohttp.ClientResponse, f: ManifestFile, source: Source, fd: int, part: int,
                    start: int, end: int, progress: Progress, writes: set) -> None:
        pos, buf = start, bytearray()
        async for chunk in resp.content.iter_any():
            n = len(chunk)
            if pos + len(buf) + n > end:
                raise SourceFault(Fault.BAD_CONTENT, f"{_describe(source)}: more bytes than asked for")
            buf += chunk
            self.metrics.inc("fill_bytes_downloaded_total", n, kind=source.kind)
            self.metrics.advance(n)
            await self.limiter.consume(n)
            if len(buf) >= FLUSH_BYTES:
                pos = await self._write(fd, buf, pos, f, writes)
                buf = bytearray()
                progress.advance(part, start, pos)
                await progress.save()
            if self.stop.is_set():
                break
        if buf:
            pos = await self._write(fd, buf, pos, f, writes)
            progress.advance(part, start, pos)
            await progress.save()
        if self.stop.is_set() and pos < end:
            raise Stopped()
        if pos != end:
            raise SourceFault(Fault.HOST, f"{_describe(source)}: body ended at {pos}, wanted {end}")

    async def _write(self, fd: int, buf: bytearray, pos: int, f: ManifestFile, writes: set) -> int:
        fut = asyncio.ensure_future(asyncio.to_thread(_pwrite_all, fd, bytes(buf), pos))
        writes.add(fut)
        try:
            return pos + await asyncio.shield(fut)
        except OSError as exc:
            err = from_os_error(exc, f"writing {f.key}")
            raise (err if isinstance(err, NoSpace) else StoreError(str(err))) from exc
        finally:
            if fut.done():
                writes.discard(fut)


def _pwrite_all(fd: int, data: bytes, pos: int) -> int:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, pos)
        view, pos = view[n:], pos + n
    return len(data)


def _describe(source: Source) -> str:
    where = source.url or source.s3 or "configured origin"
    where = where.split("?", 1)[0]
    return f"{source.kind}:{source.appliance}:{where}" if source.appliance else f"{source.kind}:{where}"
