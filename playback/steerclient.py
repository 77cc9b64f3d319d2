"""Playback's client of steering: one POST /v1/steer per play (every rendition file at once) and
short-lived caches of GET /v1/fleet and GET /v1/withdrawals. Replicas are independent; each call tries
them in order. A 410 (a withdrawn file) is an answer: Withdrawn, a 410 to the player. Anything else but
a usable answer is SteeringUnavailable (503 with Retry-After to the player, never unsigned URLs)."""
from __future__ import annotations

import asyncio
import time
from typing import Any, Sequence

import aiohttp

from contracts.ids import IDENT
from contracts.withdrawals import EMPTY, Event, Withdrawals, check_title, check_version


class SteeringUnavailable(Exception):
    status_hint = 503
    reason = "steering-unavailable"


class Withdrawn(ValueError):
    """Steering answered 410: a file of the title was withdrawn fleet-wide (steering.withdrawals)."""
    status_hint = 410
    reason = "withdrawn"


class SteeringClient:
    def __init__(self, urls: Sequence[str], timeout_s: float, fleet_cache_s: float, token: str = "") -> None:
        self.urls = list(urls)
        self.token = token  # playback's bearer token: steering answers no anonymous caller
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.fleet_cache_s = fleet_cache_s
        self.session: aiohttp.ClientSession | None = None
        self._fleet: tuple[float, dict[str, Any]] | None = None
        self._fleet_lock = asyncio.Lock()
        # what is withdrawn (GET /v1/withdrawals), kept as last fetched when steering cannot be reached:
        # a stale list hides what it hid (steering refuses the plays of anything newer with 410 anyway)
        self._withdrawals: tuple[float, Withdrawals] | None = None
        self._withdrawals_lock = asyncio.Lock()
        self.calls = 0
        self.failures = 0

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(timeout=self.timeout)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def _call(self, method: str, path: str, json: Any = None, headers: dict[str, str] | None = None) -> Any:
        assert self.session is not None
        self.calls += 1
        last = "no steering replica configured"
        for base in self.urls:
            try:
                # the timeout per request, not the session's: a reload may have changed it
                auth = {"Authorization": f"Bearer {self.token}"} if self.token else {}
                async with self.session.request(method, base + path, json=json, headers={**auth, **(headers or {})},
                                                timeout=self.timeout) as resp:
                    if resp.status == 200:
                        return await resp.json()
                    if resp.status == 410:  # an answer, not a failure: every replica would say the same
                        raise Withdrawn(await _detail(resp))
                    last = f"{base}: HTTP {resp.status}"
            except Withdrawn:
                raise
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                last = f"{base}: {type(exc).__name__} {exc}"
        self.failures += 1
        raise SteeringUnavailable(last)

    async def steer(self, client: str, files: Sequence[str], ttl_s: int,
                    request_id: str | None = None) -> tuple[dict[str, list[str]], dict[str, list[bool]], str | None]:
        """Ranked signed URLs per file, per URL whether its appliance holds the file now, and the
        client's site as steering located it (None from a steering that does not say)."""
        body = await self._call("POST", "/v1/steer", {"client": client, "files": list(files), "ttl_s": ttl_s},
                                {"X-Request-Id": request_id} if request_id else None)
        try:
            site = body.get("site")
            return ({k: list(v["locations"]) for k, v in body["files"].items()},
                    {k: [bool(h) for h in v.get("holds", [])] for k, v in body["files"].items()},
                    site if isinstance(site, str) and IDENT.fullmatch(site) else None)
        except (KeyError, TypeError, AttributeError):
            raise SteeringUnavailable("steering answered without files/locations") from None

    async def withdrawals(self) -> Withdrawals:
        """What steering says is withdrawn, at most fleet_cache_s old; the last list when no replica
        answers (none ever fetched: nothing is known withdrawn, and steering refuses the plays)."""
        async with self._withdrawals_lock:
            now = time.monotonic()
            if self._withdrawals is not None and now - self._withdrawals[0] <= self.fleet_cache_s:
                return self._withdrawals[1]
            try:
                body = await self._call("GET", "/v1/withdrawals")
                events = [Event(e["action"], check_title(e["title"]),
                                None if e.get("version") is None else check_version(e["version"]),
                                str(e.get("reason", "")), str(e.get("by", "")), float(e.get("at", 0)))
                          for e in body["withdrawn"]]
            except SteeringUnavailable:
                if self._withdrawals is not None:
                    return self._withdrawals[1]
                return EMPTY
            except (KeyError, TypeError, ValueError):  # WithdrawalError is a ValueError
                self.failures += 1
                return self._withdrawals[1] if self._withdrawals is not None else EMPTY
            current = Withdrawals({(e.title, e.version): e for e in events})
            self._withdrawals = (now, current)
            return current

    async def fleet(self, max_age_s: float | None = None) -> dict[str, Any]:
        """The fleet, at most fleet_cache_s old (or max_age_s when steering cannot be reached)."""
        async with self._fleet_lock:
            now = time.monotonic()
            if self._fleet is not None and now - self._fleet[0] <= self.fleet_cache_s:
                return self._fleet[1]
            try:
                fleet = await self._call("GET", "/v1/fleet")
            except SteeringUnavailable:
                if self._fleet is not None and max_age_s is not None and now - self._fleet[0] <= max_age_s:
                    return self._fleet[1]
                raise
            self._fleet = (now, fleet)
            return fleet


async def _detail(resp: aiohttp.ClientResponse) -> str:
    try:
        body = await resp.json(content_type=None)
        return str(body.get("detail", "withdrawn"))[:500]
    except (ValueError, aiohttp.ClientError, AttributeError):
        return "withdrawn"
