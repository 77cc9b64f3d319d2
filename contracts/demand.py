"""Demand: what clients asked for, per content region and file, as steering replicas and playback
replicas count it and the fill planner (`fill plan`) reads it. Version 1 on the wire is JSON:

    {"v": 1, "source": "steering-1", "kind": "steering" | "playback", "at": 1767225600.0,
     "half_life_s": 86400.0,
     "regions": {"ams": {"files/t1/v0/1080p.mp4": [requests, bytes], ...}, ...}}

`requests` and `bytes` are exponentially decayed to `at` with `half_life_s`: steering counts every
decision (hits and misses alike — a file a region wants but does not hold is exactly what the planner
must see) with the bytes the play will fetch as far as it knows; playback counts watched bytes from
viewing events. Replicas are summed by the planner after decaying each to one instant (`decay_to`).

Decoding validates everything and raises DemandError naming the field. Pure: no I/O.

Strategy: a report is a msgspec Struct tagged "v", built cheaply on the hot path (steering snapshots
its table into one) and checked only when decoded: msgspec checks types, ids, shapes and signs in one
pass (contracts.wirejson), then `_check` the file keys, in bulk, and their number. Encoding rounds the
counts and stays `json.dumps`, so the bytes are unchanged.
"""
from __future__ import annotations

import json
from typing import Annotated, Any, Iterable, Literal

import msgspec
from msgspec import Meta

from contracts import wirejson
from contracts.ids import FileKey
from contracts.wirejson import Pair, matching

SCHEMA_VERSION = 1
Kind = Literal["steering", "playback"]
MAX_REGIONS = 1_000
MAX_FILES = 1_000_000  # over all regions
Source = matching("[A-Za-z0-9_.-]{1,64}", "must be 1-64 of [A-Za-z0-9_.-]")
Region = matching("[A-Za-z0-9_.-]{1,64}", "must be a region id (1-64 of [A-Za-z0-9_.-])")
Counts = dict[str, dict[FileKey, tuple[float, float]]]  # region -> file -> (requests, bytes)


class DemandError(ValueError):
    status_hint = 400
    reason = "demand-invalid"


class DemandReport(msgspec.Struct, frozen=True, tag_field="v", tag=SCHEMA_VERSION):
    source: Source  # which replica
    kind: Kind
    at: float  # unix time the counts are decayed to
    half_life_s: Annotated[float, Meta(gt=0)]
    regions: Annotated[dict[Region, dict[FileKey, Pair]], Meta(max_length=MAX_REGIONS)]  # (requests, bytes)


_DECODER = wirejson.decoder(DemandReport)


def decay_to(report: DemandReport, at: float) -> Counts:
    """The report's counts decayed (or, for a later report, grown back) to time `at`."""
    factor = 0.5 ** ((at - report.at) / report.half_life_s)
    return {region: {key: (r * factor, b * factor) for key, (r, b) in files.items()}
            for region, files in report.regions.items()}


def merge(reports: Iterable[DemandReport], at: float) -> Counts:
    """The sum of several replicas' demand at one instant."""
    out: Counts = {}
    for report in reports:
        for region, files in decay_to(report, at).items():
            into = out.setdefault(region, {})
            for key, (r, b) in files.items():
                old = into.get(key, (0.0, 0.0))
                into[key] = (old[0] + r, old[1] + b)
    return out


def encode(report: DemandReport) -> bytes:
    return json.dumps({"v": SCHEMA_VERSION, "source": report.source, "kind": report.kind, "at": report.at,
                       "half_life_s": report.half_life_s,
                       "regions": {region: {k: [round(r, 6), round(b, 3)] for k, (r, b) in files.items()}
                                   for region, files in report.regions.items()}},
                      separators=(",", ":")).encode()


def decode(raw: bytes | str) -> DemandReport:
    report = wirejson.decode(_DECODER, raw, DemandError, first=_version)
    total = 0
    for region, files in report.regions.items():
        total += len(files)
        if total > MAX_FILES:
            raise DemandError(f"regions: more than {MAX_FILES} files")
        bad = wirejson.bad_key(files)
        if bad:
            raise DemandError(f"regions.{region}: {bad[1]}")
    return report


def _version(data: Any) -> None:
    if not isinstance(data, dict) or data.get("v") != SCHEMA_VERSION:
        raise DemandError(f"v: schema version {data.get('v') if isinstance(data, dict) else None!r} not supported")


__all__ = ["DemandReport", "DemandError", "Counts", "decay_to", "merge", "encode", "decode", "SCHEMA_VERSION"]
