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
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from contracts.ids import FileKey, InvalidFileKey, validate_file_key

SCHEMA_VERSION = 1
KINDS = ("steering", "playback")
MAX_REGIONS = 1_000
MAX_FILES = 1_000_000  # over all regions
_IDENT = re.compile(r"[A-Za-z0-9_.-]{1,64}")

Counts = dict[str, dict[FileKey, tuple[float, float]]]  # region -> file -> (requests, bytes)


class DemandError(ValueError):
    status_hint = 400
    reason = "demand-invalid"


@dataclass(frozen=True)
class DemandReport:
    source: str  # which replica
    kind: str  # "steering" | "playback"
    at: float  # unix time the counts are decayed to
    half_life_s: float
    regions: Counts = field(default_factory=dict)


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
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise DemandError(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("v") != SCHEMA_VERSION:
        raise DemandError(f"v: schema version {data.get('v') if isinstance(data, dict) else None!r} not supported")
    source, kind = data.get("source"), data.get("kind")
    if not isinstance(source, str) or not _IDENT.fullmatch(source):
        raise DemandError("source: must be 1-64 of [A-Za-z0-9_.-]")
    if kind not in KINDS:
        raise DemandError(f"kind: must be one of {', '.join(KINDS)}")
    at, half_life = _number(data.get("at"), "at"), _number(data.get("half_life_s"), "half_life_s")
    if half_life <= 0:
        raise DemandError("half_life_s: must be positive")
    return DemandReport(source, kind, at, half_life, _regions(data.get("regions")))


def _regions(raw: Any) -> Counts:
    if not isinstance(raw, Mapping) or len(raw) > MAX_REGIONS:
        raise DemandError(f"regions: must be a map of at most {MAX_REGIONS} regions")
    out: Counts = {}
    total = 0
    for region, files in raw.items():
        if not _IDENT.fullmatch(str(region)) or not isinstance(files, Mapping):
            raise DemandError(f"regions.{str(region)[:64]}: a region id mapping file keys to counts")
        total += len(files)
        if total > MAX_FILES:
            raise DemandError(f"regions: more than {MAX_FILES} files")
        out[region] = {_key(k, region): _pair(v, f"regions.{region}.{k}") for k, v in files.items()}
    return out


def _key(key: Any, region: str) -> FileKey:
    try:
        return validate_file_key(key)
    except (InvalidFileKey, TypeError) as exc:
        raise DemandError(f"regions.{region}: {str(key)[:80]!r}: {exc}") from None


def _pair(value: Any, where: str) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise DemandError(f"{where}: must be [requests, bytes]")
    r, b = _number(value[0], where), _number(value[1], where)
    if r < 0 or b < 0:
        raise DemandError(f"{where}: counts must not be negative")
    return r, b


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DemandError(f"{where}: must be a finite number")
    return float(value)


__all__ = ["DemandReport", "DemandError", "Counts", "decay_to", "merge", "encode", "decode", "SCHEMA_VERSION"]
