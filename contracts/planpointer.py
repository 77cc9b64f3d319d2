"""The plan pointer: which fill plan is in force. `fill plan` writes it (fill.manifeststore) after
every manifest of the plan; steering replicas read it (steering.fillplan) and serve the manifests it
names. One format, one decoder, here. Version 1 (JSON):

    {"v": 1, "plan": "<plan id>", "generated_at": 1767225600.0,
     "manifests": {"ams-1": {"key": "fill-manifests/<plan>/ams-1.json", "version": "<32 hex>",
                             "size": 1234, "xxh3": "<32 hex: xxh3-128 of the stored bytes>"}}}

A plan id is `<UTC time>-<hash>` (`20260101T013000Z-1a2b3c4d5e6f7a8b`), so ids sort by age. Pure.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

from contracts.ids import InvalidFileKey, validate_file_key
from contracts.wirefields import IDENT

SCHEMA_VERSION = 1
PREFIX = "fill-manifests/"
POINTER = PREFIX + "current.json"
PLAN_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{16}")
_HEX128 = re.compile(r"[0-9a-f]{32}")


class PointerError(ValueError):
    """The pointer does not decode: the plan in force stays."""


@dataclass(frozen=True)
class Entry:
    key: str
    version: str
    size: int
    xxh3: str


@dataclass(frozen=True)
class Pointer:
    plan: str
    generated_at: float
    manifests: Mapping[str, Entry]


def encode_pointer(p: Pointer) -> bytes:
    return json.dumps({"v": SCHEMA_VERSION, "plan": p.plan, "generated_at": p.generated_at,
                       "manifests": {a: {"key": e.key, "version": e.version, "size": e.size, "xxh3": e.xxh3}
                                     for a, e in sorted(p.manifests.items())}},
                      separators=(",", ":")).encode()


def decode_pointer(raw: bytes) -> Pointer:
    """A version-1 pointer; PointerError naming what is wrong."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise PointerError(f"{POINTER}: not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("v") != SCHEMA_VERSION:
        raise PointerError(f"{POINTER}: v: schema version not supported")
    plan, at, manifests = data.get("plan"), data.get("generated_at"), data.get("manifests")
    if not isinstance(plan, str) or not PLAN_ID.fullmatch(plan):
        raise PointerError(f"{POINTER}: plan: not a plan id")
    if isinstance(at, bool) or not isinstance(at, (int, float)) or not isinstance(manifests, dict):
        raise PointerError(f"{POINTER}: generated_at and manifests are required")
    return Pointer(plan, float(at), {a: _entry(a, e) for a, e in manifests.items()})


def _entry(appliance: Any, e: Any) -> Entry:
    where = f"{POINTER}: manifests.{str(appliance)[:64]}"
    if not isinstance(appliance, str) or not IDENT.fullmatch(appliance) or not isinstance(e, dict):
        raise PointerError(f"{where}: an appliance id mapping to its entry")
    key, version, size, digest = e.get("key"), e.get("version"), e.get("size"), e.get("xxh3")
    try:
        validate_file_key(key if isinstance(key, str) else "")
    except InvalidFileKey:
        raise PointerError(f"{where}.key: not a key") from None
    hexes = all(isinstance(x, str) and _HEX128.fullmatch(x) for x in (version, digest))
    if not str(key).startswith(PREFIX) or not hexes:
        raise PointerError(f"{where}: key under {PREFIX}, version and xxh3 of 32 hex digits")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise PointerError(f"{where}.size: must be a byte count")
    return Entry(key, version, size, digest)  # type: ignore[arg-type]


__all__ = ["Entry", "Pointer", "PointerError", "encode_pointer", "decode_pointer", "POINTER", "PREFIX", "PLAN_ID",
           "SCHEMA_VERSION"]
