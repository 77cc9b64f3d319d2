"""The agent's own files, under its state directory (default <dir of store.index>/fill):

    fill.lock              flock: one agent per appliance at a time
    manifest.json          the last accepted manifest (If-None-Match on the next fetch; kept on refusal)
    managed.json           keys that accepted manifests put here (only these are ever deleted)
    partials/<hash>.json   per partial download: the byte ranges already written into its `.part`
    quarantine.jsonl       one line per refused download: key, source, expected and actual hash
    fill-metrics.prom      Prometheus textfile (see metrics.py)

Every rewrite is atomic (temp file + rename). Journals are written after the bytes they describe were
handed to the kernel, so a killed agent loses at most what arrived since the last journal write; a
power cut may leave the journal ahead of the disk, which the hash check at commit catches (the file is
then fetched again whole)."""
from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from contracts.ids import FileKey
from oca.fill.core.parts import Range, merge
from oca.store.fsutil import key_hash


class AgentBusy(RuntimeError):
    """Another fill agent holds the state directory's lock."""

    status_hint = 409


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


class StateDir:
    """The agent's state directory: its lock, manifest, managed set, journals and quarantine ledger."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.partials = self.root / "partials"
        self.partials.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = None

    def lock(self) -> None:
        fd = os.open(self.root / "fill.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AgentBusy(f"another fill agent holds {self.root / 'fill.lock'}") from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- manifest and managed set ------------------------------------------------------------

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def saved_manifest(self) -> bytes | None:
        try:
            return self.manifest_path.read_bytes()
        except OSError:
            return None

    def save_manifest(self, raw: bytes) -> None:
        write_atomic(self.manifest_path, raw)

    def managed(self) -> set[FileKey]:
        try:
            return {FileKey(k) for k in json.loads((self.root / "managed.json").read_bytes())}
        except (OSError, ValueError):
            return set()

    def save_managed(self, keys: Iterable[str]) -> None:
        write_atomic(self.root / "managed.json", json.dumps(sorted(set(keys))).encode())

    # --- partial downloads ---------------------------------------------------------------------

    def _journal(self, key: str) -> Path:
        return self.partials / f"{key_hash(key)}.json"

    def load_journal(self, key: str, size: int, xxh3: str, disk: str) -> list[Range]:
        """Ranges written into `key`'s partial on `disk`, if the journal is for this very file."""
        try:
            data = json.loads(self._journal(key).read_bytes())
        except (OSError, ValueError):
            return []
        if not isinstance(data, dict) or (data.get("key"), data.get("size"), data.get("xxh3"), data.get("disk")) != (
                key, size, xxh3, disk):
            return []
        try:
            return merge((int(s), int(e)) for s, e in data.get("ranges", []))
        except (TypeError, ValueError):
            return []

    def save_journal(self, key: str, size: int, xxh3: str, disk: str, ranges: Iterable[Range]) -> None:
        body = {"key": key, "size": size, "xxh3": xxh3, "disk": disk, "ranges": merge(ranges), "at": time.time()}
        write_atomic(self._journal(key), json.dumps(body).encode())

    def drop_journal(self, key: str) -> None:
        try:
            self._journal(key).unlink()
        except FileNotFoundError:
            pass

    def drop_journals_except(self, keys: Iterable[str]) -> int:
        """Remove journals of keys not in `keys` (fetched since, or left the manifest)."""
        keep = {f"{key_hash(k)}.json" for k in keys}
        n = 0
        for path in self.partials.glob("*.json"):
            if path.name not in keep:
                path.unlink(missing_ok=True)
                n += 1
        return n

    # --- quarantine ------------------------------------------------------------------------------

    def quarantine(self, record: dict[str, Any]) -> None:
        with open(self.root / "quarantine.jsonl", "a") as fh:
            fh.write(json.dumps({"at": round(time.time(), 3), **record}) + "\n")

    def quarantined(self) -> list[dict[str, Any]]:
        try:
            lines = (self.root / "quarantine.jsonl").read_text().splitlines()
        except OSError:
            return []
        return [json.loads(line) for line in lines if line.strip()]
