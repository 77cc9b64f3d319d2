"""Source failover and backoff, as verdicts.

A fetch failure is one of three faults. NOT_HERE (404/410): this source lacks the file — try the next
one, no penalty. BAD_CONTENT (hash or size mismatch, a Content-Range for another length): the source
is excluded for this file and the bytes quarantined. HOST (5xx, 429, 401/403, timeouts, refused
connections): the host backs off exponentially (with jitter) for every file, and the file moves on to
its next source meanwhile. `choose` picks the first source that is neither excluded nor backing off,
or says how long to wait, or gives up when nothing is left.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import AbstractSet, Mapping, Sequence
from urllib.parse import urlsplit

from contracts.manifest import Source


class Fault(str, Enum):
    NOT_HERE = "not-here"
    BAD_CONTENT = "bad-content"
    HOST = "host"


def classify_status(status: int) -> Fault:
    if status in (404, 410):
        return Fault.NOT_HERE
    if status in (416,):  # the source's file has another length than the manifest's
        return Fault.BAD_CONTENT
    return Fault.HOST


def backoff_s(failures: int, base_s: float = 1.0, cap_s: float = 60.0, jitter: float = 0.5) -> float:
    """Delay after the `failures`-th consecutive failure of a host (1, 2, ...): base·2^(n-1), at most
    cap, scaled into [0.5, 1) of that by `jitter` in [0, 1) so hosts don't retry in lockstep."""
    if failures <= 0:
        return 0.0
    raw = min(cap_s, base_s * 2.0 ** min(failures - 1, 62))
    return raw * (0.5 + 0.5 * min(max(jitter, 0.0), 0.999999))


def host_of(source: Source) -> str:
    """What a HOST fault penalises: the URL's scheme://host:port, the S3 bucket, or the origin."""
    if source.url is not None:
        parts = urlsplit(source.url)
        return f"{parts.scheme}://{parts.netloc}"
    if source.s3 is not None:
        return "s3://" + source.s3[len("s3://"):].split("/", 1)[0]
    return "origin"


@dataclass(frozen=True, slots=True)
class Use:
    index: int


@dataclass(frozen=True, slots=True)
class Wait:
    seconds: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    reason: str


def choose(sources: Sequence[Source], excluded: AbstractSet[int], retry_at: Mapping[str, float],
           now: float) -> Use | Wait | GiveUp:
    left = [i for i in range(len(sources)) if i not in excluded]
    if not left:
        return GiveUp("every source failed or lacks the file")
    for i in left:
        if retry_at.get(host_of(sources[i]), 0.0) <= now:
            return Use(i)
    return Wait(min(retry_at[host_of(sources[i])] for i in left) - now)
