"""What `fill plan` reads over HTTP, from every replica at once: the fleet state from each steering
replica (`GET /v1/fleet/state`, role "fleet") and demand from each steering and playback replica
(`GET /v1/demand`, role "demand", contracts.demand). Every request carries the planner's bearer token,
has a timeout and a body limit (checked before and while reading).

A replica that does not answer, answers an error, or sends a document that does not decode is an
`Answer` with a `problem`, never an exception: fill.job decides what the run can do without it.
Two URLs that turn out to be the same replica (the same demand `source`) are counted once.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import aiohttp

from contracts import demand as demand_wire
from fill import fleetstate


@dataclass(frozen=True)
class Answer:
    url: str
    kind: str  # "steering" | "playback"
    value: Any = None  # the decoded document when it answered well
    problem: str | None = None  # why not

    @property
    def ok(self) -> bool:
        return self.problem is None


class TooLarge(Exception):
    pass


def read_token(path: Path | None) -> str | None:
    """The bearer token in `path` (one line), None without one; OSError when unreadable."""
    if path is None:
        return None
    return path.read_text().strip() or None


async def get_body(session: aiohttp.ClientSession, url: str, token: str | None, max_bytes: int) -> bytes:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(url, headers=headers) as resp:
        if resp.status != 200:
            detail = (await resp.content.read(300)).decode("utf-8", "replace").strip()
            message = f"HTTP {resp.status}: {detail}" if detail else f"HTTP {resp.status}"
            raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status, message=message)
        if resp.content_length is not None and resp.content_length > max_bytes:
            raise TooLarge(f"{resp.content_length} bytes, more than {max_bytes}")
        chunks, size = [], 0
        async for chunk in resp.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > max_bytes:
                raise TooLarge(f"more than {max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


async def _one(session: aiohttp.ClientSession, url: str, kind: str, token: str | None, max_bytes: int,
               decode: Callable[[bytes], Any]) -> Answer:
    try:
        raw = await get_body(session, url, token, max_bytes)
    except aiohttp.ClientResponseError as exc:
        return Answer(url, kind, problem=exc.message)
    except (aiohttp.ClientError, asyncio.TimeoutError, TooLarge, OSError) as exc:
        return Answer(url, kind, problem=f"{type(exc).__name__}: {exc}".rstrip(": "))
    try:
        value = await asyncio.to_thread(decode, raw)
    except ValueError as exc:  # FleetStateError, DemandError
        return Answer(url, kind, problem=f"malformed: {exc}"[:500])
    return Answer(url, kind, value=value)


@dataclass(frozen=True)
class Gathered:
    fleet: list[Answer]  # one per steering replica
    demand: list[Answer]  # one per steering and playback replica


async def gather(steering: Sequence[str], playback: Sequence[str], steering_token: str | None,
                 playback_token: str | None, timeout_s: float, max_bytes: int) -> Gathered:
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        fleet = [_one(session, f"{u}/v1/fleet/state", "steering", steering_token, max_bytes, fleetstate.decode)
                 for u in steering]
        demand = [_one(session, f"{u}/v1/demand", "steering", steering_token, max_bytes, demand_wire.decode)
                  for u in steering]
        demand += [_one(session, f"{u}/v1/demand", "playback", playback_token, max_bytes, demand_wire.decode)
                   for u in playback]
        answers = await asyncio.gather(*fleet, *demand)
    return Gathered(list(answers[:len(fleet)]), _once_per_source(list(answers[len(fleet):])))


def _once_per_source(answers: list[Answer]) -> list[Answer]:
    """A second answer from a replica already counted (the same `source`) is a problem, not demand."""
    seen: dict[str, str] = {}
    out = []
    for a in answers:
        if a.ok:
            source = a.value.source
            if source in seen:
                a = Answer(a.url, a.kind, problem=f"the same replica ({source!r}) as {seen[source]}: counted once")
            else:
                seen[source] = a.url
        out.append(a)
    return out


__all__ = ["Answer", "Gathered", "gather", "get_body", "read_token"]
