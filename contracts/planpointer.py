"""The plan pointer: which fill plan is in force. `fill plan` writes it (fill.manifeststore) after
every manifest of the plan; steering replicas read it (steering.fillplan) and serve the manifests it
names. One format, one decoder, here. Version 1 (JSON):

    {"v": 1, "plan": "<plan id>", "generated_at": 1767225600.0,
     "manifests": {"ams-1": {"key": "fill-manifests/<plan>/ams-1.json", "version": "<32 hex>",
                             "size": 1234, "xxh3": "<32 hex: xxh3-128 of the stored bytes>"}}}

A plan id is `<UTC time>-<hash>` (`20260101T013000Z-1a2b3c4d5e6f7a8b`), so ids sort by age. Pure.

The pointer is a msgspec Struct tagged "v" whose every rule is a type, checked in one pass when it is
decoded (contracts.wirejson), not when fill builds one.
"""
from __future__ import annotations

import json
import re
from typing import Any

import msgspec

from contracts import wirejson
from contracts.ids import FILE_KEY_PATTERN, MAX_FILE_KEY_LEN
from contracts.wirejson import Count, Hex128, Ident, matching

SCHEMA_VERSION = 1
PREFIX = "fill-manifests/"
POINTER = PREFIX + "current.json"
PLAN_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{16}")
PlanId = matching(PLAN_ID, "must be a plan id (<UTC time>Z-<16 hex>)")
StoredKey = matching(PREFIX + FILE_KEY_PATTERN.pattern, f"must be a file key under {PREFIX}",
                     max_length=MAX_FILE_KEY_LEN)


class PointerError(ValueError):
    """The pointer does not decode: the plan in force stays."""


class Entry(msgspec.Struct, frozen=True):
    key: StoredKey
    version: Hex128  # the manifest's
    size: Count  # of the stored bytes
    xxh3: Hex128  # of the stored bytes


class Pointer(msgspec.Struct, frozen=True, tag_field="v", tag=SCHEMA_VERSION):
    plan: PlanId
    generated_at: float
    manifests: dict[Ident, Entry]  # appliance -> its manifest


_DECODER = wirejson.decoder(Pointer)


def encode_pointer(p: Pointer) -> bytes:
    out = msgspec.to_builtins(p)
    out["manifests"] = dict(sorted(out["manifests"].items()))
    return json.dumps(out, separators=(",", ":")).encode()


def decode_pointer(raw: bytes) -> Pointer:
    """A version-1 pointer; PointerError naming what is wrong."""
    try:
        return wirejson.decode(_DECODER, raw, PointerError, first=_schema)
    except PointerError as exc:
        raise PointerError(f"{POINTER}: {exc}") from None


def _schema(data: Any) -> None:
    if not isinstance(data, dict) or data.get("v") != SCHEMA_VERSION:
        raise PointerError("v: schema version not supported")


__all__ = ["Entry", "Pointer", "PointerError", "encode_pointer", "decode_pointer", "POINTER", "PREFIX", "PLAN_ID",
           "SCHEMA_VERSION"]
