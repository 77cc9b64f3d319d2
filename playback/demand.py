"""Playback's demand: accepted viewing events as watched bytes per (region, file), for the fill planner.

What counts: exactly what popularity counts — `watched` feeds an event to playback.core.events'
Popularity and reads what that added per file (watched seconds x the rendition's bit rate; requests:
the steps counted), so there is one rule. Kept in a contracts.demandtable.DemandTable (decayed by
contracts.demand's rule, bounded), served at GET /v1/demand as contracts.demand JSON, kind "playback".

Region: the site steering located the client in for the play (steering's answer names it; playback
remembers it per client and title while the play's URLs are valid: playback.core.plays). An event with
no play remembered (another replica served the manifest, the client's address changed) counts in the
replica's configured `[demand] region` (default "all": not attributed to one region). The planner sums
sites into its content regions ([regions] of fill-plan.toml).

Durable: an accepted event is never lost on restart, a SIGKILL included. Each batch is appended to a
diskcache spool (`[demand] state_dir`, this replica's alone) and committed — synced with `fsync` — before
the 2xx; then it is counted in memory. One writer appends for every request waiting (a group commit:
one transaction, one sync, for all of them). The `demand-compact` chore folds the log into one
snapshot: snapshot and deletion of the folded entries in one transaction, never behind a newer snapshot.
At start: the snapshot, then the log entries after it, replayed in order with their own times.
A spool that cannot be written refuses events (503, Retry-After) rather than accept what it may lose.
"""
from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import diskcache

from contracts.callers import Caller, authenticate
from contracts.catalog import TitleEntry
from contracts.demand import DemandError, decode, encode
from contracts.demandtable import DemandTable, decayed
from contracts.ids import FileKey, InvalidFileKey, validate_file_key
from contracts.logs import log_event
from playback.config import PlaybackConfig
from playback.core.events import Event, Popularity

log = logging.getLogger("playback.demand")
Watched = tuple[FileKey, float, float]  # (file, requests, bytes) one event added
DISK_ERRORS = (OSError, sqlite3.Error, diskcache.Timeout)
SNAPSHOT_KEY, UPTO_KEY, LOG_PREFIX = "snapshot", "snapshot-upto", "log:"
# Never evicted; values inside SQLite (committed, and synced, with their row).
CACHE_SETTINGS: dict[str, Any] = {"eviction_policy": "none", "disk_min_file_size": 1 << 30}


class SpoolUnavailable(ValueError):
    status_hint = 503
    reason = "demand-spool-unavailable"


def watched(popularity: Popularity, event: Event, entry: TitleEntry, now: float) -> list[Watched]:
    """Count `event` in `popularity`; return what that added per file (its decayed per-file counters
    read before and after: the difference is exactly the amount added at `now`)."""
    keys = [r.key for r in entry.renditions]
    before = [_pair(popularity, k, now) for k in keys]
    popularity.add(event, entry, now)
    out = []
    for key, (r0, b0) in zip(keys, before):
        r1, b1 = _pair(popularity, key, now)
        if r1 > r0 or b1 > b0:
            try:
                out.append((validate_file_key(key), max(0.0, r1 - r0), max(0.0, b1 - b0)))
            except InvalidFileKey:  # the catalog names it; the wire could not carry it
                continue
    return out


def _pair(popularity: Popularity, key: str, now: float) -> tuple[float, float]:
    h = popularity.half_life_s
    r, b = popularity.file_requests.get(key), popularity.file_bytes.get(key)
    return (r.get(now, h) if r is not None else 0.0, b.get(now, h) if b is not None else 0.0)


def authorize(config: PlaybackConfig, authorization: str | None, method: str, target: str) -> Caller:
    """The caller of GET /v1/demand, with the role "demand" (contracts.callers: Unauthorized 401,
    Forbidden 403). Playback has no appliance callers."""
    return authenticate(authorization, method, target, time.time(), config.callers, lambda _appliance: None
                        ).require("demand")


class Spool:
    """The spool on disk (blocking calls: run them in a thread). Keys: `log:<seq, 20 digits>` -> a JSON
    list of records; `snapshot` -> an encoded DemandReport holding every record up to `snapshot-upto`."""

    def __init__(self, directory: Path, fsync: bool) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.cache = diskcache.Cache(str(directory), **CACHE_SETTINGS, sqlite_synchronous=2 if fsync else 1)

    def read(self) -> tuple[bytes | None, int, list[tuple[int, str]]]:
        """(snapshot, the last seq it holds, the log entries after it in order)."""
        with self.cache.transact():
            snapshot, upto = self.cache.get(SNAPSHOT_KEY), int(self.cache.get(UPTO_KEY, 0))
            entries = [(int(k[len(LOG_PREFIX):]), self.cache.get(k)) for k in self.cache.iterkeys()
                       if isinstance(k, str) and k.startswith(LOG_PREFIX)]
        return snapshot, upto, sorted((seq, blob) for seq, blob in entries if seq > upto and blob is not None)

    def append(self, seq: int, blob: str) -> None:
        self.cache.set(f"{LOG_PREFIX}{seq:020d}", blob)

    def compact(self, blob: bytes, upto: int) -> bool:
        """Replace the snapshot with `blob` (records up to `upto`) and drop the log entries it holds, at
        once; never behind a newer snapshot (False then)."""
        with self.cache.transact():
            current = int(self.cache.get(UPTO_KEY, 0))
            if upto <= current:
                return False
            self.cache.set(SNAPSHOT_KEY, blob)
            self.cache.set(UPTO_KEY, upto)
            for seq in range(current + 1, upto + 1):
                self.cache.delete(f"{LOG_PREFIX}{seq:020d}")
        return True

    def close(self) -> None:
        self.cache.close()


class PlaybackDemand:
    def __init__(self, config: Callable[[], PlaybackConfig]) -> None:
        # settings: read through `config` each time, so a reload's region, source or half-life apply
        # (the spool's directory is opened once: a new state_dir needs a restart)
        self.config = config
        d = config().demand
        # the counts, in memory
        self.table = DemandTable(d.half_life_s, d.max_entries, time.time())
        # the spool and its writer
        self.durable = d.state_dir is not None  # else counts live in memory only (no config file: tests)
        self.spool: Spool | None = None
        self.broken: str | None = None  # why the spool could not be opened (events are refused meanwhile)
        self._waiting: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._next_seq = 1  # the next log entry's number
        self._last_seq = 0  # the last log entry counted in memory
        self._compacted = 0  # the last log entry folded into the snapshot on disk
        self.spool_failures = 0

    # ---- start and stop -----------------------------------------------------------------------

    async def open(self) -> None:
        """At start, before the listener opens: the spool's snapshot and log, replayed. A spool that
        cannot be opened is logged and retried by the compaction chore; events are refused meanwhile."""
        d = self.config().demand
        if not self.durable or d.state_dir is None:
            return
        try:
            spool, table, seqs = await asyncio.to_thread(self._load, d.state_dir, d.fsync)
        except DISK_ERRORS as exc:
            self.broken = f"{d.state_dir}: {type(exc).__name__}: {exc}"[:500]
            log_event(log, "demand-spool-unavailable", logging.ERROR, error=self.broken)
            return
        self.spool, self.table, self.broken = spool, table, None
        self._compacted, self._last_seq = seqs
        self._next_seq = self._last_seq + 1
        log_event(log, "demand-restored", pairs=table.entries, replayed=self._last_seq - self._compacted,
                  dir=str(d.state_dir))

    def _load(self, directory: Path, fsync: bool) -> tuple[Spool, DemandTable, tuple[int, int]]:
        spool = Spool(directory, fsync)
        snapshot, upto, entries = spool.read()
        d, now = self.config().demand, time.time()
        table = DemandTable(d.half_life_s, d.max_entries, now)
        if snapshot is not None:
            try:
                table.restore(decode(snapshot))
            except DemandError as exc:  # keep the log; say what was lost
                log_event(log, "demand-snapshot-unreadable", logging.ERROR, error=str(exc)[:500])
        last = upto
        for seq, blob in entries:
            try:
                for record in json.loads(blob):
                    _apply(table, record)
            except (ValueError, KeyError, TypeError) as exc:  # one bad entry costs itself, not the rest
                log_event(log, "demand-log-entry-unreadable", logging.ERROR, seq=seq, error=str(exc)[:500])
            last = seq
        return spool, table, (upto, last)

    async def close(self) -> None:
        """At shutdown (requests finished): a last compaction, then the spool is closed."""
        if self.spool is None:
            return
        try:
            await self.compact()
        finally:
            self.spool.close()
            self.spool = None

    # ---- counting -----------------------------------------------------------------------------

    async def record(self, files: list[tuple[str, FileKey, float, float]], now: float) -> None:
        """Count `files` ((region, file, requests, bytes) one request's accepted events added); durable when
        this returns: the caller answers 2xx after. SpoolUnavailable (503) if it could not be written:
        nothing was counted then."""
        if not files:
            return
        record = {"at": now, "region": self.config().demand.region, "files": [[k, r, b, g] for g, k, r, b in files]}
        if not self.durable:
            _apply(self.table, record)
            return
        if self.spool is None:
            raise SpoolUnavailable(f"demand spool unavailable: {self.broken or 'closed'}")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((record, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_waiting())
        await asyncio.shield(done)  # a client that hangs up does not unwrite its batch

    async def _write_waiting(self) -> None:
        """The one writer: everything waiting goes in one log entry (one commit), then is counted."""
        while self._waiting and self.spool is not None:
            batch, self._waiting = self._waiting, []
            seq, spool = self._next_seq, self.spool
            blob = json.dumps([r for r, _ in batch], separators=(",", ":"))
            try:
                await asyncio.to_thread(spool.append, seq, blob)
            except Exception as exc:  # noqa: BLE001 - every waiting request must hear how it went
                self.spool_failures += 1
                why = f"{type(exc).__name__}: {exc}"[:500]
                log_event(log, "demand-spool-write-failed", logging.ERROR, error=why)
                error = SpoolUnavailable(f"demand spool write failed: {why}") if isinstance(exc, DISK_ERRORS) else exc
                for _, done in batch:
                    if not done.done():
                        done.set_exception(error)
                continue
            self._next_seq = seq + 1
            for record, _ in batch:
                _apply(self.table, record)
            self._last_seq = seq
            for _, done in batch:
                if not done.done():
                    done.set_result(None)
        if self.spool is None:  # closed meanwhile: what still waits is refused, not left hanging
            batch, self._waiting = self._waiting, []
            for _, done in batch:
                if not done.done():
                    done.set_exception(SpoolUnavailable("demand spool closed"))

    # ---- the chore and the endpoint -----------------------------------------------------------

    async def compact(self) -> None:
        """The `demand-compact` chore: a reload's settings, the cap, then the log folded into one snapshot.
        A failure raises to the supervisor (logged, counted, retried); the older snapshot and log stay."""
        d, now = self.config().demand, time.time()
        if self.spool is None and self.broken is not None:
            await self.open()
            if self.broken is not None:
                raise SpoolUnavailable(self.broken)
        self.table.reconfigure(d.half_life_s, d.max_entries, now)
        if self.table.needs_rebase(now):
            self.table.rebase(now)
        self.table.trim()  # one region: one step
        if self.spool is None or self._last_seq <= self._compacted:
            return
        upto, report, spool = self._last_seq, self.table.snapshot(d.source, "playback"), self.spool
        await asyncio.to_thread(lambda: spool.compact(encode(decayed(report, now)), upto))
        log_event(log, "demand-compacted", upto=upto, folded=upto - self._compacted, pairs=self.table.entries)
        self._compacted = upto

    async def encoded(self) -> bytes:
        """GET /v1/demand's body: the counts decayed to now."""
        report, now = self.table.snapshot(self.config().demand.source, "playback"), time.time()
        return await asyncio.to_thread(lambda: encode(decayed(report, now)))


def _apply(table: DemandTable, record: Mapping[str, Any]) -> None:
    """One spooled batch into the table: each file in its play's region (older spools: the record's)."""
    default, at = record["region"], float(record["at"])
    for key, requests, nbytes, *region in record["files"]:
        table.add(region[0] if region else default, (FileKey(key),), float(requests), float(nbytes), at)


__all__ = ["PlaybackDemand", "Spool", "SpoolUnavailable", "watched", "authorize"]
