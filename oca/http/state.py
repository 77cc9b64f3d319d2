"""What one serving worker shares between its connections: config, keys, the open-file view of the
index, counters, the popularity tally and the access log (oca/http/accesslog.py). Everything here
runs on the event loop; anything that touches SQLite is handed to a thread by the worker's
background tasks."""
from __future__ import annotations

import asyncio
import errno
import os
import secrets
import sys
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any, Callable, Protocol

from contracts.ids import FileKey
from contracts.logs import json_line
from contracts.token import Keyring
from oca.config import HttpConfig
from oca.core.request import TargetMemo
from oca.http.accesslog import AccessLog
from oca.http.files import OpenFile, OpenFiles
from oca.metrics import WorkerMetrics

class Tracked(Protocol):
    """What the worker asks of each connection it tracks (oca.http.protocol.Connection, which imports
    this module: named here by its shape so the import goes one way)."""

    deadline: float

    def check_deadline(self, now: float) -> None: ...

    def drain(self) -> None: ...

    def close(self) -> None: ...


class ServerState:
    def __init__(self, config: HttpConfig, keys: Keyring, files: OpenFiles, metrics: WorkerMetrics,
                 loop: asyncio.AbstractEventLoop, on_disk_failed: Callable[[str, str], None],
                 on_file_missing: Callable[[FileKey, str], None], worker: int = 0,
                 lookup: Callable[[FileKey], Any] | None = None, prefix_bits: tuple[int, int] = (24, 48)) -> None:
        self.config = config
        self._keys = keys
        self.memo = TargetMemo()
        self.files = files
        self.metrics = metrics
        self.loop = loop
        self.use_sendfile = config.sendfile
        self.connections: set[Tracked] = set()
        self.draining = False
        self.hits: dict[FileKey, list[int]] = {}
        self.worker = worker
        self._on_disk_failed = on_disk_failed
        self._on_file_missing = on_file_missing
        self._lookup = lookup  # the index's current entry for a key (a file moved under us)
        self._boundary_prefix = secrets.token_hex(6)
        self._boundary_seq = 0
        self.access_log: AccessLog | None = None
        if config.access_log:
            self.access_log = AccessLog(
                config.access_log if isinstance(config.access_log, Path) else None, config.access_log_format,
                config.access_log_buffer_bytes, metrics, worker, self.log_event, prefix_bits)
        self._failed_disks: dict[str, float] = {}
        self.cors = files.cors  # the CORS header block, for error and preflight responses too
        self.puller: Any = None  # oca.http.pull.Puller when pull-through is on
        self.pull_wait_s = 0.0
        self.date_header = b""
        self.clock = loop.time()  # coarse monotonic time for connection deadlines
        self.tick()

    @property
    def keys(self) -> Keyring:
        return self._keys

    @keys.setter
    def keys(self, keys: Keyring) -> None:
        self._keys = keys
        self.memo.clear()  # a retired key must stop verifying at once

    def sweep(self) -> None:
        """Fire header, idle and send timeouts; called twice a second by the worker."""
        self.clock = now = self.loop.time()
        for conn in [c for c in self.connections if c.deadline <= now]:
            conn.check_deadline(now)

    def tick(self) -> None:
        """Refresh the Date header; called once a second by the worker."""
        self.date_header = f"Server: oca\r\nDate: {formatdate(usegmt=True)}\r\n".encode()

    def boundary(self) -> str:
        self._boundary_seq += 1
        return f"{self._boundary_prefix}{self._boundary_seq:010d}"

    def record_hit(self, of: OpenFile, nbytes: int) -> None:
        tally = self.hits.get(of.key)
        if tally is None:
            self.hits[of.key] = [1, nbytes]
        else:
            tally[0] += 1
            tally[1] += nbytes
        if nbytes:
            self.metrics.sent(of.tier, nbytes)

    def take_hits(self) -> dict[FileKey, tuple[int, int]]:
        hits, self.hits = self.hits, {}
        return {k: (v[0], v[1]) for k, v in hits.items()}

    def restore_hits(self, hits: dict[FileKey, tuple[int, int]]) -> None:
        """Put back a tally that could not be written, merged with what came since."""
        for key, (requests, nbytes) in hits.items():
            tally = self.hits.setdefault(key, [0, 0])
            tally[0] += requests
            tally[1] += nbytes

    def disk_error(self, disk: str, error: OSError, key: FileKey) -> bool:
        """A file could not be opened or read; True when the caller should try again at once.
        A file missing from a disk that is still there was either moved to another disk (the mover
        published the copy before this worker's next index poll: adopt the new entry and retry) or
        deleted by hand (drop it alone, and from the index only while the entry still names this
        disk, so a newer copy elsewhere is never forgotten). Descriptors running out (EMFILE/ENFILE)
        are this process's trouble, not the disk's. Anything else fails the whole disk at once in
        this worker and, through the index, everywhere."""
        if error.errno in (errno.EMFILE, errno.ENFILE):
            self.log_event("descriptors-exhausted", disk=disk, key=key)
            return False
        if error.errno == errno.ENOENT and os.path.isdir(disk):
            fresh = self._lookup(key) if self._lookup is not None else None
            if fresh is not None and fresh.disk != disk:
                self.files.apply_changes({key: fresh})
                self.log_event("file-moved", key=key, old_disk=disk, disk=fresh.disk)
                return True
            self.files.apply_changes({key: None})
            self._on_file_missing(key, disk)
            self.log_event("file-missing", disk=disk, key=key)
            return False
        now = time.monotonic()
        if now - self._failed_disks.get(disk, -1e9) < 10:
            return
        self._failed_disks[disk] = now
        self.metrics.add("disk_errors")
        dropped = self.files.drop_disk(disk)
        self.log_event("disk-failed", disk=disk, error=str(error), files_dropped=len(dropped))
        self._on_disk_failed(disk, f"{error.strerror or error}")
        return False

    def log_event(self, event: str, **fields: Any) -> None:
        """A worker event (rare): one JSON line on stdout at once, never buffered with access lines."""
        try:
            os.write(sys.stdout.fileno(), (json_line("oca", event, worker=self.worker, **fields) + "\n").encode())
        except OSError:
            pass  # a stalled or gone log reader must never stall serving

    def flush_log(self) -> None:
        """Write the buffered access lines (SIGHUP, drain; the worker's chore every flush_s)."""
        if self.access_log is not None:
            self.access_log.flush()

    def reopen_log(self) -> None:
        if self.access_log is not None:
            self.access_log.reopen()

    def close_log(self) -> None:
        if self.access_log is not None:
            self.access_log.close()
