"""The appliance's persistent index: which key lives on which disk (size, hash, publish time), decayed
popularity counters, the fill manifest's pins, disk failure states, and the writes in flight of every
process (see `WriteRow`: the store's cross-process bookkeeping).

SQLite in WAL mode, so one writer and many readers in other processes (supervisor, server workers,
`oca put`) never block each other. Every write is a short BEGIN IMMEDIATE transaction: taking the
write lock up front makes a second writer wait on busy_timeout instead of failing on a lock upgrade.
synchronous=NORMAL: a power cut may lose the last commits, never consistency, and `Store.scan`
rebuilds any entry from the disk. Readers keep a copy in memory: `snapshot()` once, then poll
`changes_since(seq)`, fed by a change log that every upsert/remove appends to. The log is pruned
after 10 minutes or 100k rows; a reader that fell behind gets None and re-snapshots. Popularity has
its own table and never touches the log: hits are frequent and readers don't need them; neither do
writes in flight. Both stay bounded: `prune_popularity` caps the counters, dead writers' rows are reaped
by the store.

Open one Index per process (after fork). An Index may be shared by threads: a lock serialises them."""
from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, NamedTuple

from contracts.ids import FileKey
from oca.config import Tier
from oca.core.placement import Popularity, bump, decayed
from oca.store.errors import IndexUnavailable

BUSY_TIMEOUT_MS = 10_000
LOG_MAX_AGE_S = 600.0
LOG_MAX_ROWS = 100_000
PRUNE_EVERY_S = 30.0
POPULARITY_MAX_ROWS = 500_000  # several times the ~10^5 files of an appliance
FORGET_BATCH = 2000  # popularity rows dropped per transaction
_TIERS = {t.value: t for t in Tier}

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS files (key TEXT PRIMARY KEY, tier TEXT NOT NULL, disk TEXT NOT NULL,
       size INTEGER NOT NULL, xxh3 TEXT NOT NULL, mtime REAL NOT NULL) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS files_by_disk ON files (disk)",
    """CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL,
       at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS popularity (key TEXT PRIMARY KEY, requests REAL NOT NULL,
       bytes REAL NOT NULL, t REAL NOT NULL, last_access REAL NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS parked (key TEXT PRIMARY KEY, tier TEXT NOT NULL, disk TEXT NOT NULL,
       size INTEGER NOT NULL, xxh3 TEXT NOT NULL, mtime REAL NOT NULL) WITHOUT ROWID""",
    "CREATE TABLE IF NOT EXISTS pins (key TEXT PRIMARY KEY) WITHOUT ROWID",
    """CREATE TABLE IF NOT EXISTS disks (disk TEXT PRIMARY KEY, failed INTEGER NOT NULL,
       reason TEXT NOT NULL, since REAL NOT NULL) WITHOUT ROWID""",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value) WITHOUT ROWID",
    """CREATE TABLE IF NOT EXISTS writes (key TEXT PRIMARY KEY, disk TEXT NOT NULL,
       reserved INTEGER NOT NULL, tmp TEXT NOT NULL, pid INTEGER NOT NULL, pid_start INTEGER NOT NULL,
       boot TEXT NOT NULL, token TEXT NOT NULL, started_at REAL NOT NULL) WITHOUT ROWID""",
)
_ENTRY_COLS = "f.key, f.tier, f.disk, f.size, f.xxh3, f.mtime, p.key IS NOT NULL"
_SELECT_ENTRIES = f"SELECT {_ENTRY_COLS} FROM files f LEFT JOIN pins p ON p.key = f.key"


class FileEntry(NamedTuple):
    """One indexed file. A NamedTuple (immutable, like the frozen dataclasses elsewhere) because
    every worker builds 100k of them at start-up, 10x faster than a frozen dataclass."""

    key: FileKey
    tier: Tier
    disk: str  # the disk's mount path
    size: int
    xxh3: str  # xxh3-128, 32 hex digits
    mtime: float  # publish time (Last-Modified)
    pinned: bool = False  # read from the pins table; upsert ignores it (see Index.set_pins)


class WriteRow(NamedTuple):
    """A write (or move) in flight, by any process: the key it keeps busy, the disk it reserved
    `reserved` bytes on, its temp file (<disk>/.tmp/<tmp>), its owner (pid, the process's start time
    and the kernel's boot id: a pid recycled, even after a reboot, is not the owner), and a token
    naming this one write."""

    key: FileKey
    disk: str
    reserved: int
    tmp: str
    pid: int
    pid_start: int
    boot: str
    token: str
    started_at: float


@dataclass(frozen=True, slots=True)
class DiskState:
    disk: str
    failed: bool
    reason: str
    since: float


def _entry(row) -> FileEntry:
    return FileEntry(row[0], _TIERS[row[1]], row[2], row[3], row[4], row[5], bool(row[6]))


def _row(e: FileEntry) -> tuple:
    return (e.key, e.tier.value, e.disk, e.size, e.xxh3, e.mtime)


class Index:
    def __init__(self, db: sqlite3.Connection, path: Path, readonly: bool) -> None:
        self._db = db
        self.path = path
        self.readonly = readonly
        self._lock = threading.RLock()
        self._last_prune = 0.0

    @classmethod
    def open(cls, path: Path, readonly: bool = False) -> "Index":
        path = Path(path)
        if readonly and not path.exists():
            cls.open(path).close()  # a reader started before the writer still finds a schema
        try:
            if readonly:
                db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                     isolation_level=None, check_same_thread=False)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if not readonly:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise IndexUnavailable(f"{path}: {exc}") from exc
        index = cls(db, path, readonly)
        if not readonly:
            with index._write() as tx:
                for statement in _SCHEMA:
                    tx.execute(statement)
        return index

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self, begin: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute(begin)
            except sqlite3.Error as exc:
                raise IndexUnavailable(f"{self.path}: {exc}") from exc
            try:
                yield self._db
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:  # locked past busy_timeout, disk I/O error...
                self._rollback()
                raise IndexUnavailable(f"{self.path}: {exc}") from exc
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        if self._db.in_transaction:  # SQLite rolls back by itself after some errors (full, I/O)
            self._db.execute("ROLLBACK")

    def _write(self):
        if self.readonly:
            raise IndexUnavailable(f"{self.path}: index opened read-only")
        return self._tx("BEGIN IMMEDIATE")

    def _read(self):
        return self._tx("BEGIN")

    # --- entries ---------------------------------------------------------------------------------

    def upsert(self, entry: FileEntry) -> None:
        self.upsert_many((entry,))

    def upsert_many(self, entries: Iterable[FileEntry], same_disk_only: bool = False) -> None:
        """Insert or replace entries in one transaction. `same_disk_only`: an existing entry on
        another disk is left alone (a scan must not steal a key the mover just relocated)."""
        rows = [_row(e) for e in entries]
        guard = " WHERE files.disk = excluded.disk" if same_disk_only else ""
        with self._write() as tx:
            tx.executemany(
                "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                "tier = excluded.tier, disk = excluded.disk, size = excluded.size, "
                f"xxh3 = excluded.xxh3, mtime = excluded.mtime{guard}", rows)
            self._log(tx, [r[0] for r in rows])

    def remove(self, key: FileKey, disk: str | None = None) -> bool:
        return self.remove_many((key,), disk) > 0

    def remove_many(self, keys: Iterable[FileKey], disk: str | None = None) -> int:
        """Drop entries; with `disk`, only those still on that disk. Returns how many went."""
        sql = "DELETE FROM files WHERE key = ?" + (" AND disk = ?" if disk is not None else "")
        gone = []
        with self._write() as tx:
            for key in keys:
                if tx.execute(sql, (key, disk) if disk is not None else (key,)).rowcount > 0:
                    gone.append(key)
            self._log(tx, gone)
        return len(gone)

    def get(self, key: FileKey) -> FileEntry | None:
        with self._read() as tx:
            row = tx.execute(f"{_SELECT_ENTRIES} WHERE f.key = ?", (key,)).fetchone()
        return _entry(row) if row else None

    def all(self) -> list[FileEntry]:
        return list(self.snapshot()[0].values())

    def on_disk(self, disk: str) -> list[FileEntry]:
        with self._read() as tx:
            return [_entry(r) for r in tx.execute(f"{_SELECT_ENTRIES} WHERE f.disk = ?", (disk,))]

    def next_on_disk(self, disk: str, after: str = "") -> FileEntry | None:
        """The entry of `disk` whose key follows `after` (wrapping around): a cursor for probes."""
        sql = f"{_SELECT_ENTRIES} WHERE f.disk = ? AND f.key > ? ORDER BY f.key LIMIT 1"
        with self._read() as tx:
            row = tx.execute(sql, (disk, after)).fetchone() or tx.execute(sql, (disk, "")).fetchone()
        return _entry(row) if row else None

    def count(self) -> int:
        with self._read() as tx:
            return tx.execute("SELECT count(*) FROM files").fetchone()[0]

    def disk_usage(self) -> dict[str, tuple[int, int]]:
        """Per disk: (file count, bytes)."""
        with self._read() as tx:
            rows = tx.execute("SELECT disk, count(*), coalesce(sum(size), 0) FROM files GROUP BY disk")
            return {d: (n, b) for d, n, b in rows}

    # --- change log ------------------------------------------------------------------------------

    @staticmethod
    def _seq(tx: sqlite3.Connection) -> int:
        row = tx.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        return row[0] if row else 0

    @staticmethod
    def _floor(tx: sqlite3.Connection) -> int:
        row = tx.execute("SELECT value FROM meta WHERE name = 'pruned_through'").fetchone()
        return row[0] if row else 0

    def _log(self, tx: sqlite3.Connection, keys: list) -> None:
        now = time.time()
        tx.executemany("INSERT INTO changes (key, at) VALUES (?, ?)", [(k, now) for k in keys])
        if now - self._last_prune >= PRUNE_EVERY_S:
            self._last_prune = now
            self._prune(tx, now, LOG_MAX_AGE_S, LOG_MAX_ROWS)

    def _prune(self, tx: sqlite3.Connection, now: float, max_age_s: float, max_rows: int) -> int:
        old = tx.execute("SELECT coalesce(max(seq), 0) FROM changes WHERE at < ?", (now - max_age_s,))
        cutoff = max(self._seq(tx) - max_rows, old.fetchone()[0])
        if cutoff <= self._floor(tx):
            return 0
        n = tx.execute("DELETE FROM changes WHERE seq <= ?", (cutoff,)).rowcount
        tx.execute("INSERT OR REPLACE INTO meta VALUES ('pruned_through', ?)", (cutoff,))
        return n

    def prune_changes(self, max_age_s: float = LOG_MAX_AGE_S, max_rows: int = LOG_MAX_ROWS,
                      now: float | None = None) -> int:
        """Drop change-log rows older than `max_age_s` or beyond the newest `max_rows`."""
        with self._write() as tx:
            return self._prune(tx, time.time() if now is None else now, max_age_s, max_rows)

    def current_seq(self) -> int:
        with self._read() as tx:
            return self._seq(tx)

    def snapshot(self) -> tuple[dict[FileKey, FileEntry], int]:
        """Every entry and the change seq they are current at (one read transaction). Pins are read
        as a set rather than joined per row: this is the 100k-row path (~0.3-0.7 s)."""
        with self._read() as tx:
            seq = self._seq(tx)
            pins = {r[0] for r in tx.execute("SELECT key FROM pins")}
            rows = tx.execute("SELECT key, tier, disk, size, xxh3, mtime FROM files")
            tiers, disks = _TIERS, {}
            new = tuple.__new__  # skips the NamedTuple's Python-level __new__: this loop is start-up
            entries = {k: new(FileEntry, (k, tiers[t], disks.setdefault(d, d), size, h, m, k in pins))
                       for k, t, d, size, h, m in rows}
        return entries, seq

    def changes_since(self, seq: int) -> tuple[dict[FileKey, FileEntry | None], int] | None:
        """Entries changed after `seq` (None: removed) and the seq now; None when the log no longer
        reaches back to `seq` (or `seq` is from another database) and the caller must re-snapshot."""
        with self._read() as tx:
            top = self._seq(tx)
            if seq < self._floor(tx) or seq > top:
                return None
            rows = tx.execute(
                "SELECT c.key, f.tier, f.disk, f.size, f.xxh3, f.mtime, p.key IS NOT NULL "
                "FROM (SELECT DISTINCT key FROM changes WHERE seq > ? AND seq <= ?) c "
                "LEFT JOIN files f ON f.key = c.key LEFT JOIN pins p ON p.key = c.key", (seq, top))
            changed = {r[0]: (_entry(r) if r[1] is not None else None) for r in rows}
        return changed, top

    # --- popularity ------------------------------------------------------------------------------

    def add_hits(self, hits: Mapping[FileKey, tuple[int, int]], now: float, half_life_s: float) -> None:
        """Add (requests, bytes) per key at `now` to the decayed counters, in one transaction."""
        with self._write() as tx:
            rows = []
            for key, (requests, nbytes) in hits.items():
                old = tx.execute("SELECT requests, bytes, t, last_access FROM popularity WHERE key = ?",
                                 (key,)).fetchone()
                if old is None:
                    rows.append((key, float(requests), float(nbytes), now, now))
                    continue
                r, b, t, last = old
                rows.append((key, bump(r, t, now, half_life_s, requests),
                             bump(b, t, now, half_life_s, nbytes), max(t, now), max(last, now)))
            tx.executemany("INSERT OR REPLACE INTO popularity VALUES (?, ?, ?, ?, ?)", rows)

    def popularity(self, now: float, half_life_s: float) -> dict[FileKey, Popularity]:
        with self._read() as tx:
            rows = tx.execute("SELECT key, requests, bytes, t, last_access FROM popularity").fetchall()
        return {k: Popularity(decayed(r, t, now, half_life_s), decayed(b, t, now, half_life_s), last)
                for k, r, b, t, last in rows}

    def prune_popularity(self, now: float, half_life_s: float, min_requests: float = 0.01,
                         max_rows: int = POPULARITY_MAX_ROWS) -> int:
        """Forget counters of keys no longer indexed whose decayed requests fell below `min_requests`;
        then, while more than `max_rows` remain, the coldest (keys no longer indexed first, then by
        decayed requests). Reads outside the write lock; a row bumped since is kept. Returns how many
        went."""
        with self._read() as tx:
            rows = tx.execute("SELECT key, requests, t FROM popularity "
                              "WHERE key NOT IN (SELECT key FROM files)").fetchall()
            total = tx.execute("SELECT count(*) FROM popularity").fetchone()[0]
        dead = [(k, r, t) for k, r, t in rows if decayed(r, t, now, half_life_s) < min_requests]
        gone = self._forget(dead)
        if total - gone > max_rows:
            gone += self._forget(self._coldest(now, half_life_s, total - gone - max_rows))
        return gone

    def _coldest(self, now: float, half_life_s: float, n: int) -> list[tuple[str, float, float]]:
        with self._read() as tx:
            rows = tx.execute("SELECT p.key, p.requests, p.t, f.key IS NOT NULL FROM popularity p "
                              "LEFT JOIN files f ON f.key = p.key").fetchall()
        rows.sort(key=lambda row: (row[3], decayed(row[1], row[2], now, half_life_s)))
        return [(k, r, t) for k, r, t, _ in rows[:max(n, 0)]]

    def _forget(self, rows: list[tuple[str, float, float]]) -> int:
        gone = 0
        for i in range(0, len(rows), FORGET_BATCH):  # short transactions: workers flush hits meanwhile
            with self._write() as tx:
                gone += sum(tx.execute("DELETE FROM popularity WHERE key = ? AND requests = ? AND t = ?",
                                       row).rowcount for row in rows[i:i + FORGET_BATCH])
        return gone

    # --- writes in flight (the store's cross-process bookkeeping; never in the change log) ------------

    def writes(self) -> list[WriteRow]:
        with self._read() as tx:
            return [WriteRow(*r) for r in tx.execute(
                "SELECT key, disk, reserved, tmp, pid, pid_start, boot, token, started_at FROM writes")]

    def add_write(self, row: WriteRow) -> bool:
        """Record a write in flight; False if the key already has one (the caller reaps dead ones
        first, see `end_writes`)."""
        with self._write() as tx:
            return tx.execute("INSERT OR IGNORE INTO writes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              row).rowcount > 0

    def end_writes(self, writes: Iterable[tuple[str, str]]) -> int:
        """Drop writes by (key, token): a writer's own row when it commits or aborts, or a dead
        writer's; never a newer write of the same key."""
        with self._write() as tx:
            return sum(tx.execute("DELETE FROM writes WHERE key = ? AND token = ?", w).rowcount
                       for w in writes)

    # --- pins ------------------------------------------------------------------------------------

    def set_pins(self, keys: Iterable[FileKey]) -> None:
        """Replace the pinned set (the fill manifest's). Indexed entries whose pin flips are logged as
        changes, so readers' copies of `FileEntry.pinned` stay true."""
        new = set(keys)
        with self._write() as tx:
            old = {r[0] for r in tx.execute("SELECT key FROM pins")}
            gone, added = old - new, new - old
            tx.executemany("DELETE FROM pins WHERE key = ?", [(k,) for k in gone])
            tx.executemany("INSERT INTO pins VALUES (?)", [(k,) for k in added])
            if gone or added:
                present = {r[0] for r in tx.execute("SELECT key FROM files")}
                self._log(tx, sorted((gone | added) & present))

    def pinned(self) -> set[FileKey]:
        with self._read() as tx:
            return {r[0] for r in tx.execute("SELECT key FROM pins")}

    # --- disks -----------------------------------------------------------------------------------

    def mark_disk_failed(self, disk: str, reason: str, now: float | None = None) -> list[FileKey]:
        """Record `disk` as failed and drop its entries (logged, so readers stop serving them at once);
        returns the keys dropped. `since` keeps the first failure time while the disk stays failed.
        The entries are parked, so a scan after recovery reuses their hashes instead of re-reading
        a whole disk (see `parked_on`)."""
        now = time.time() if now is None else now
        with self._write() as tx:
            keys = [r[0] for r in tx.execute("SELECT key FROM files WHERE disk = ?", (disk,))]
            tx.execute("INSERT OR REPLACE INTO parked SELECT * FROM files WHERE disk = ?", (disk,))
            tx.execute("DELETE FROM files WHERE disk = ?", (disk,))
            self._log(tx, keys)
            tx.execute(
                "INSERT INTO disks VALUES (?, 1, ?, ?) ON CONFLICT (disk) DO UPDATE SET "
                "since = CASE WHEN failed THEN since ELSE excluded.since END, failed = 1, "
                "reason = excluded.reason", (disk, reason, now))
        return keys

    def mark_disk_ok(self, disk: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._write() as tx:
            tx.execute("INSERT OR REPLACE INTO disks VALUES (?, 0, '', ?)", (disk, now))

    def parked_on(self, disk: str) -> dict[FileKey, FileEntry]:
        """Entries `disk` had when it failed last."""
        with self._read() as tx:
            rows = tx.execute("SELECT key, tier, disk, size, xxh3, mtime, 0 FROM parked "
                              "WHERE disk = ?", (disk,))
            return {r[0]: _entry(r) for r in rows}

    def unpark(self, disk: str) -> None:
        with self._write() as tx:
            tx.execute("DELETE FROM parked WHERE disk = ?", (disk,))

    def disk_states(self) -> dict[str, DiskState]:
        with self._read() as tx:
            rows = tx.execute("SELECT disk, failed, reason, since FROM disks").fetchall()
        return {d: DiskState(d, bool(f), r, s) for d, f, r, s in rows}

    def failed_disks(self) -> set[str]:
        return {d for d, s in self.disk_states().items() if s.failed}
