"""Catalog reads and writes over a backend: the one module playback, fill and the CLI go through
(the entries' schema, wire form and keys are the contract in contracts/catalog.py).

The entries are the objects under `catalog/` — no second copy, no database. A listing fetches only
entries whose ETag changed since this Catalog last read them, so a long-lived reader (the HTTP origin,
playback) stays cheap. A malformed entry is logged and skipped in listings, an error when asked for.
"""
from __future__ import annotations

import logging
import threading

from contracts.catalog import (CATALOG_PREFIX, CatalogError, TitleEntry, catalog_key, decode, encode, search,
                               title_of_catalog_key)
from origin.backends import Backend
from origin.core.errors import ObjectNotFound, TitleNotFound

log = logging.getLogger("origin.catalog")


class Catalog:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._cache: dict[str, tuple[str, TitleEntry]] = {}  # key -> (etag, entry)
        self._lock = threading.Lock()

    def put(self, entry: TitleEntry) -> None:
        """Write the entry. Call it last: an entry means every file it names is in place."""
        self.backend.put_bytes(catalog_key(entry.title_id), encode(entry), "application/json")

    def find(self, title_id: str) -> TitleEntry | None:
        try:
            raw = self.backend.get_bytes(catalog_key(title_id))
        except ObjectNotFound:
            return None
        return decode(raw, catalog_key(title_id))

    def get(self, title_id: str) -> TitleEntry:
        entry = self.find(title_id)
        if entry is None:
            raise TitleNotFound(f"no title {title_id!r} in {self.backend.describe()}")
        return entry

    def delete(self, title_id: str) -> None:
        self.backend.delete(catalog_key(title_id))

    def list(self) -> list[TitleEntry]:
        """Every title, sorted by id."""
        seen, out = set(), []
        for info in self.backend.list(CATALOG_PREFIX):
            if title_of_catalog_key(info.key) is None:
                continue
            seen.add(info.key)
            entry = self._cached(info.key, info.etag)
            if entry is not None:
                out.append(entry)
        with self._lock:
            for gone in set(self._cache) - seen:
                del self._cache[gone]
        return sorted(out, key=lambda e: e.title_id)

    def _cached(self, key: str, etag: str) -> TitleEntry | None:
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[0] == etag:
            return hit[1]
        try:
            entry = decode(self.backend.get_bytes(key), key)
        except ObjectNotFound:
            return None  # deleted between the listing and the read
        except CatalogError as exc:
            log.warning("skipping catalog entry: %s", exc)
            return None
        with self._lock:
            self._cache[key] = (etag, entry)
        return entry

    def search(self, query: str | None = None, genre: str | None = None) -> list[TitleEntry]:
        return search(self.list(), query, genre)
