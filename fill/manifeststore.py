"""Where `fill plan` leaves its work, in an origin store (S3 or a local directory, origin.backends):

    fill-manifests/<plan>/<appliance>.json   each appliance's signed manifest, the exact bytes served
    fill-manifests/<plan>/summary.json       the run's summary (inputs answered, skipped, carried)
    fill-manifests/current.json              the pointer: which plan is in force, and per appliance
                                             its object, manifest version, size and xxh3-128

A plan id is `<UTC time>-<hash>` (`20260101T013000Z-1a2b3c4d5e6f7a8b`), so ids sort by age. A run
writes every object of its plan first and the pointer last: S3 and the local backend both replace an
object whole, so a reader sees the old pointer (and the old plan, still complete) or the new one,
never a mix. Steering replicas read the pointer and the objects it names (steering.fillplan) and
serve the stored bytes as they are, so every replica serves the same bytes with the same ETag.
After a switch, plans beyond the newest `keep` are deleted (never the current one).

The pointer's format is contracts.planpointer (steering reads it with the same decoder).
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

import xxhash

from contracts.ids import validate_file_key
from contracts.planpointer import (PLAN_ID, POINTER, PREFIX, Entry, Pointer, PointerError, decode_pointer,
                                   encode_pointer)
from origin.core.errors import ObjectNotFound

SUMMARY = "summary.json"
WRITERS = 8


class StoreError(Exception):
    """The manifest store is not what a plan wrote (a damaged pointer or object)."""


def plan_id(now: float, versions: Mapping[str, str]) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    digest = xxhash.xxh3_64_hexdigest(json.dumps(sorted(versions.items()), separators=(",", ":")).encode())
    return f"{stamp}-{digest}"


def manifest_key(plan: str, appliance: str) -> str:
    """InvalidFileKey for an appliance id that cannot be a key segment (a leading dot)."""
    return validate_file_key(f"{PREFIX}{plan}/{appliance}.json")


def entry_for(key: str, version: str, body: bytes) -> Entry:
    return Entry(key, version, len(body), xxhash.xxh3_128_hexdigest(body))


class ManifestStore:
    """The shell over an origin backend (origin.backends.Backend)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def describe(self) -> str:
        return f"{self.backend.describe()}/{PREFIX}"

    def current(self) -> Pointer | None:
        """The pointer in force; None when no plan was ever written. StoreError when it is damaged;
        the backend's errors when it cannot be read."""
        try:
            raw = self.backend.get_bytes(POINTER)
        except ObjectNotFound:
            return None
        try:
            return decode_pointer(raw)
        except PointerError as exc:
            raise StoreError(str(exc)) from None

    def read(self, entry: Entry) -> bytes:
        body = self.backend.get_bytes(entry.key)
        if len(body) != entry.size or xxhash.xxh3_128_hexdigest(body) != entry.xxh3:
            raise StoreError(f"{entry.key}: size or xxh3-128 differs from the pointer's")
        return body

    def publish(self, pointer: Pointer, bodies: Mapping[str, bytes], summary: bytes) -> None:
        """Every manifest and the summary, then the pointer: readers switch plans in one write."""
        def put(item: tuple[str, bytes]) -> None:
            self.backend.put_bytes(item[0], item[1], "application/json", xxhash.xxh3_128_hexdigest(item[1]))

        items = [(pointer.manifests[a].key, body) for a, body in bodies.items()]
        with ThreadPoolExecutor(WRITERS) as pool:
            list(pool.map(put, items))  # re-raises the first failure: the pointer is then not written
        put((f"{PREFIX}{pointer.plan}/{SUMMARY}", summary))
        put((POINTER, encode_pointer(pointer)))

    def collect(self, keep: int, current: str) -> list[str]:
        """Delete every plan but the newest `keep` and `current`; returns the plans deleted. Only
        keys of the form fill-manifests/<plan id>/... are ever touched."""
        by_plan: dict[str, list[str]] = {}
        for info in self.backend.list(PREFIX):
            parts = info.key[len(PREFIX):].split("/", 1)
            if len(parts) == 2 and PLAN_ID.fullmatch(parts[0]):
                by_plan.setdefault(parts[0], []).append(info.key)
        doomed = [p for p in sorted(by_plan)[:-keep] if p != current] if len(by_plan) > keep else []
        for plan in doomed:
            for key in by_plan[plan]:
                self.backend.delete(key)
        return doomed


__all__ = ["Entry", "Pointer", "ManifestStore", "StoreError", "PREFIX", "POINTER", "plan_id", "manifest_key",
           "entry_for", "encode_pointer", "decode_pointer"]
