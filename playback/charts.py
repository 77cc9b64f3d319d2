"""GET /v1/fleet/charts: the fleet page's charts from the Prometheus in `playback.prometheus_url`.

Playback runs the three fixed range queries of playback.core.charts (never one a caller writes:
this is no open proxy to Prometheus), in parallel, and answers with the series shaped for the page.
One answer per range is kept `charts_cache_s`, so many open pages cost Prometheus one query each
per refresh at most. Without a Prometheus configured the answer is a 404 `no-prometheus` (the page
then draws from its own samples of /v1/fleet); one that does not answer, a 503.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Callable

import aiohttp

from playback.config import PlaybackConfig
from playback.core import charts as core

MAX_ANSWER_BYTES = 8 << 20


class ChartSource:
    def __init__(self, config: Callable[[], PlaybackConfig]) -> None:
        self.config = config  # read at every call: a reload (SIGHUP) may change the URL
        self.session: aiohttp.ClientSession | None = None  # opened at start-up, closed at cleanup
        self.cache: dict[tuple[str, int], tuple[float, dict[str, Any]]] = {}  # (url, minutes) -> (monotonic, body)
        self.queries = 0  # sent to Prometheus (tests read these two)
        self.failures = 0

    async def start(self) -> None:
        self.session = aiohttp.ClientSession()

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def charts(self, minutes: int) -> dict[str, Any]:
        cfg = self.config()
        if not cfg.prometheus_url:
            raise core.NoPrometheus("no playback.prometheus_url configured")
        w = core.window(time.time(), minutes, cfg.charts_rate_window_s)
        key = (cfg.prometheus_url, minutes)
        hit = self.cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < cfg.charts_cache_s:
            return hit[1]
        wanted = core.charts(w)
        answers = await asyncio.gather(*(self._range(cfg, c.query, w) for c in wanted))
        out = core.body(w, {c.name: core.series(c, a) for c, a in zip(wanted, answers)})
        self.cache = {key: (time.monotonic(), out)}  # only the latest: ranges are few, answers small
        return out

    async def _range(self, cfg: PlaybackConfig, query: str, w: core.Window) -> Any:
        assert self.session is not None, "ChartSource.start() not called"
        self.queries += 1
        params = {"query": query, "start": f"{w.start:.3f}", "end": f"{w.end:.3f}", "step": f"{w.step_s:g}"}
        try:
            async with self.session.get(f"{cfg.prometheus_url}/api/v1/query_range", params=params,
                                        timeout=aiohttp.ClientTimeout(total=cfg.prometheus_timeout_s)) as resp:
                raw = await resp.content.read(MAX_ANSWER_BYTES + 1)
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            self.failures += 1
            raise core.PrometheusUnavailable(f"{cfg.prometheus_url}: {type(exc).__name__}: {exc}"[:300]) from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise core.BadAnswer(f"answer over {MAX_ANSWER_BYTES} bytes")
        try:
            doc = json.loads(raw)
        except ValueError:
            self.failures += 1
            raise core.PrometheusUnavailable(f"{cfg.prometheus_url}: HTTP {status}, not JSON") from None
        if status != 200 or not isinstance(doc, dict) or doc.get("status") != "success":
            self.failures += 1
            error = f"HTTP {status}: {str(doc.get('error') if isinstance(doc, dict) else None)[:200]}"
            raise core.PrometheusUnavailable(error) if status >= 500 else core.BadAnswer(error)
        return doc.get("data")
