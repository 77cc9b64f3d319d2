"""Steering's demand, kept and served. `Replica.steer` counts every decision into `replica.demand` (a
contracts.demandtable.DemandTable: per client site and file, decayed). Here, the shell around it:

- saved with diskcache in `[demand] state_dir` — a snapshot every `save_interval_s` by the supervised
  `demand-save` chore and once more at shutdown (SIGTERM), loaded at start (`restore`), so a restarted
  replica keeps its counts; a crash loses at most one interval. One replica owns one directory.
- trimmed under its cap by the `demand-trim` chore, a region per step;
- served at GET /v1/demand (role "demand") as contracts.demand JSON, kind "steering".

Nothing long runs on the event loop: copies are taken a region at a time (yielding between regions),
and decaying, encoding and disk I/O run in a thread. A snapshot that cannot be read is logged and
skipped: steering answers with fresh counts rather than not at all.
"""
from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import diskcache

from contracts.demand import DemandError, DemandReport, decode, encode
from contracts.logs import log_event
from steering.config import default_source
from contracts.demandtable import decayed

log = logging.getLogger("steering.demand")
SNAPSHOT_KEY = "snapshot"
# Never evicted; values kept inside SQLite (atomic and synced with the row), synced on commit.
CACHE_SETTINGS: dict[str, Any] = {"eviction_policy": "none", "disk_min_file_size": 1 << 30,
                                  "sqlite_synchronous": 2}
RESTORE_ERRORS = (OSError, sqlite3.Error, DemandError, diskcache.Timeout)


def source_of(replica: Any) -> str:
    return replica.config.demand.source or default_source(replica.config.server.port)


async def snapshot(replica: Any) -> DemandReport:
    """The table's counts valued at its base, copied a region at a time (a rebase meanwhile: again)."""
    table = replica.demand
    while True:
        base, regions = table.base, {}
        for name in list(table.regions):
            files = table.regions.get(name)
            if files:
                regions[name] = dict(files)
            await asyncio.sleep(0)
        if table.base == base:
            return DemandReport(source_of(replica), "steering", base, table.half_life_s, regions)


async def encoded(replica: Any) -> bytes:
    """GET /v1/demand's body: the counts decayed to now."""
    report, now = await snapshot(replica), replica.wall()
    return await asyncio.to_thread(lambda: encode(decayed(report, now)))


async def save(replica: Any) -> None:
    """One snapshot to disk (the `demand-save` chore, and at shutdown). Failures raise: the supervisor
    logs, counts and retries them, and the last saved snapshot stays."""
    directory = replica.config.demand.state_dir
    if directory is None:
        return
    report, now = await snapshot(replica), replica.wall()
    pairs = await asyncio.to_thread(_write, directory, report, now)
    log_event(log, "demand-saved", logging.DEBUG, pairs=pairs, dir=str(directory))


async def restore(replica: Any) -> None:
    """At start: add the saved counts (none saved, or unreadable: start from nothing, say why)."""
    directory = replica.config.demand.state_dir
    if directory is None:
        return
    try:
        report = await asyncio.to_thread(_read, directory)
    except RESTORE_ERRORS as exc:
        log_event(log, "demand-restore-failed", logging.WARNING, dir=str(directory),
                  error=f"{type(exc).__name__}: {exc}"[:500])
        return
    if report is not None:
        replica.demand.restore(report)
        log_event(log, "demand-restored", pairs=replica.demand.entries, saved_at=report.at, source=report.source)


async def trim(replica: Any) -> None:
    """The `demand-trim` chore: revalue when due, then drop the coldest pairs if over the cap."""
    table, now = replica.demand, replica.wall()
    if table.needs_rebase(now):
        table.rebase(now)
    dropped = 0
    for n in table.trim_steps():
        dropped += n
        await asyncio.sleep(0)
    if dropped:
        log_event(log, "demand-trimmed", dropped=dropped, pairs=table.entries, refused=table.dropped)


def _write(directory: Path, report: DemandReport, now: float) -> int:
    body = decayed(report, now)
    blob = encode(body)
    directory.mkdir(parents=True, exist_ok=True)
    with diskcache.Cache(str(directory), **CACHE_SETTINGS) as cache:
        cache.set(SNAPSHOT_KEY, blob)
    return sum(len(files) for files in body.regions.values())


def _read(directory: Path) -> DemandReport | None:
    if not directory.exists():
        return None
    with diskcache.Cache(str(directory), **CACHE_SETTINGS) as cache:
        raw = cache.get(SNAPSHOT_KEY)
    return decode(raw) if raw is not None else None


__all__ = ["save", "restore", "trim", "encoded", "snapshot", "source_of"]
