"""The fleet from a URL, as Traffic Router polls its coverage-zone file: `fleet_url` in [steering] is
fetched every `fleet_poll_interval_s` with If-None-Match (the last ETag) and If-Modified-Since, so an
unchanged file costs a 304. `fleet_file` is then steering's copy of the last good download (Traffic
Router keeps one in its db/ folder too): read at start, so a restart while the URL is down still serves
the last good fleet; when it does not exist yet, the first start downloads it (blocking, once).

A download is decoded and imported (steering.fleetconf, steering.czf) in a thread before anything
changes. A failed fetch (connection, timeout, HTTP status, too large) or a document that cannot be
used at all (not JSON, no usable zone, the default site missing) keeps the last good fleet: the poll
raises `FetchFailed`, which the task supervisor logs with its traceback, counts and retries after its
backoff; /healthz lists `fleet` as degraded with the reason at once (and `fleet-fetch` once it keeps
failing), and `steering_fleet_fetches_total{result="error"|"invalid"}` counts it. A refused document's
ETag (or digest) is remembered, so while the source still serves it a retry is a 304, not a re-parse.
A usable document is written to fleet_file atomically and the reloader swaps it in; a bad zone in it
is skipped and reported (steering.czf), keeping its last good version, and does not block the others.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

from contracts.structconf import ConfigError
from steering.config import FleetFetchConfig, SteeringConfig
from steering.core.fleet import Fleet
from steering.fleetconf import FleetInfo, decode_fleet, fleet_format, read_fleet

if TYPE_CHECKING:  # the shell objects the poller drives; imported for types only
    from steering.reloader import Reloader
    from steering.service import Replica

log = logging.getLogger("steering")
USER_AGENT = "opencdn-steering (fleet poller)"
ACCEPT = "application/json, application/toml;q=0.9, */*;q=0.5"


class FetchFailed(Exception):
    """A poll that changed nothing: the last good fleet stays. `result` labels the metric."""

    def __init__(self, message: str, result: str = "error") -> None:
        super().__init__(message)
        self.result = result


# ---- reading the configured fleet (blocking; startup, reloads, check-config) ------------------

def redact(url: str) -> str:
    """A URL fit for logs and /v1/fleet: no user:password, no query values."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))


def source_of(config: SteeringConfig) -> str:
    url = config.fleet_fetch.url
    return f"{redact(url)} (last good copy: {config.fleet_file})" if url else str(config.fleet_file)


def read_configured(config: SteeringConfig, previous: FleetInfo | None = None) -> tuple[Fleet, FleetInfo]:
    """The fleet the config names; with fleet_url and no copy on disk yet, downloaded first."""
    if config.fleet_fetch.url and not Path(config.fleet_file).exists():
        return download_once(config, previous)
    return read_fleet(config.fleet_file, previous, source=source_of(config))


def download_once(config: SteeringConfig, previous: FleetInfo | None = None) -> tuple[Fleet, FleetInfo]:
    """The first start's download (urllib: no event loop yet); saved only once it imports."""
    fetch, path = config.fleet_fetch, Path(config.fleet_file)
    assert fetch.url is not None
    where = f"steering.fleet_url: {redact(fetch.url)}"
    request = urllib.request.Request(fetch.url, headers={"Accept": ACCEPT, "User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=fetch.timeout_s) as response:
            body = response.read(fetch.max_bytes + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ConfigError(f"{where}: {reason}; and there is no last good copy at {path} yet") from None
    if len(body) > fetch.max_bytes:
        raise ConfigError(f"{where}: larger than steering.fleet_max_bytes ({fetch.max_bytes})")
    fleet, info = decode_fleet(body, fleet_format(path), where, previous, source=source_of(config))
    write_atomically(path, body)
    return fleet, info


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ConfigError(f"{path}: cannot save the fleet: {exc.strerror}") from None


def log_fleet(info: FleetInfo) -> None:
    """One line per warning and per skipped zone, so the source can be fixed."""
    for line in info.warnings:
        log.warning("fleet-warning", extra={"fields": {"source": info.source, "warning": line}})
    for line in info.skipped:
        log.error("fleet-zone-skipped", extra={"fields": {"source": info.source, "error": line}})


def check_default_site(config: SteeringConfig, fleet: Fleet) -> None:
    if config.default_site not in fleet.sites:
        raise ConfigError(f"steering.default_site: {config.default_site!r} is not a site of the fleet")


# ---- polling (the `fleet-fetch` task) ---------------------------------------------------------

class FleetPoller:
    """Polls fleet_url while one is configured (a reload may set, change or drop it)."""

    def __init__(self, replica: "Replica", reloader: "Reloader", registry: CollectorRegistry,
                 wall: Callable[[], float] = time.time) -> None:
        self.replica, self.reloader, self.wall = replica, reloader, wall
        # conditional-request state, for `url` only (reset when the URL changes)
        self.url: str | None = None
        self.etag: str | None = None
        self.last_modified: str | None = None
        self.rejected: tuple[str | None, str, str] | None = None  # (ETag, digest, why) of a refused document
        # reporting
        self.last_error: str | None = None
        self.last_ok_at: float | None = None
        self.requested = asyncio.Event()  # SIGHUP: poll now
        self._lock = asyncio.Lock()
        self._fetches = Counter("steering_fleet_fetches", "Polls of fleet_url by result: changed, not-modified, "
                                "unchanged, error (fetch failed), invalid (document refused)", ["result"],
                                registry=registry)
        Gauge("steering_fleet_fetch_failing", "1 while the last poll of fleet_url failed (the last good fleet "
              "is served)", registry=registry).set_function(lambda: float(self.last_error is not None))
        Gauge("steering_fleet_zones_skipped", "Coverage zones of the fleet document skipped as bad (their last "
              "good version kept when there is one)", registry=registry).set_function(
            lambda: float(len(self.replica.loaded.fleet_info.skipped)))

    async def run(self, succeeded: Callable[[], None]) -> None:
        """The task: poll, then wait the interval (or a SIGHUP); a failed poll raises to the supervisor."""
        while True:
            if self.replica.config.fleet_fetch.url:
                await self.poll()
                succeeded()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.requested.wait(), self.replica.config.fleet_fetch.poll_interval_s)
            self.requested.clear()

    async def poll(self) -> str:
        """One poll; returns what happened ("changed", "not-modified", "unchanged", "off")."""
        async with self._lock:
            fetch = self.replica.config.fleet_fetch
            if fetch.url is None:
                self.url, self.last_error = None, None
                return "off"
            if fetch.url != self.url:
                self.url, self.etag, self.last_modified, self.rejected = fetch.url, None, None, None
            try:
                result = await self._poll(fetch)
            except FetchFailed as exc:
                self.last_error = str(exc)
                self._fetches.labels(result=exc.result).inc()
                raise
            except Exception as exc:  # e.g. the reload after saving failed: say so in /healthz too
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._fetches.labels(result="error").inc()
                raise
            self.last_error, self.last_ok_at = None, self.wall()
            self._fetches.labels(result=result).inc()
            return result

    async def _poll(self, fetch: FleetFetchConfig) -> str:
        assert fetch.url is not None
        where = redact(fetch.url)
        status, body, headers = await self._get(fetch, where)
        if status == 304:
            if self.rejected is not None:
                raise FetchFailed(f"{where}: still the refused document; keeping the last good fleet: "
                                  f"{self.rejected[2]}", "invalid")
            return "not-modified"
        assert body is not None
        etag, digest = headers.get("ETag"), hashlib.sha256(body).hexdigest()
        if self.rejected is not None and self.rejected[1] == digest:
            raise FetchFailed(f"{where}: still the refused document; keeping the last good fleet: "
                              f"{self.rejected[2]}", "invalid")
        path = Path(self.replica.config.fleet_file)
        if await asyncio.to_thread(_same_bytes, path, body):
            result = "unchanged"
        else:
            try:
                fleet, info = await asyncio.to_thread(self._check, body, where)
            except ConfigError as exc:
                self.rejected = (etag, digest, str(exc))
                raise FetchFailed(f"{where}: keeping the last good fleet: {exc}", "invalid") from exc
            await asyncio.to_thread(self._save, path, body, fleet, info)
            result = "changed"
            log.info("fleet-fetched", extra={"fields": {"url": where, "revision": info.revision, "bytes": len(body),
                                                         "skipped": len(info.skipped)}})
        await self.reloader.reload()  # swaps the saved copy in (a no-op if it is already running)
        self.etag, self.last_modified, self.rejected = etag, headers.get("Last-Modified"), None
        return result

    def _save(self, path: Path, body: bytes, fleet: Fleet, info: FleetInfo) -> None:
        """Save the download as the last good copy; the reload below takes what _check parsed."""
        write_atomically(path, body)
        self.reloader.prepare(fleet, info)

    def _check(self, body: bytes, where: str) -> tuple[Fleet, FleetInfo]:
        """Decode and import the download as the reloader would (blocking: run in a thread)."""
        config = self.replica.config
        fleet, info = decode_fleet(body, fleet_format(config.fleet_file), where, self.replica.loaded.fleet_info,
                                   source=source_of(config))
        check_default_site(config, fleet)
        return fleet, info

    async def _get(self, fetch: FleetFetchConfig, where: str) -> tuple[int, bytes | None, Any]:
        headers = {"Accept": ACCEPT, "User-Agent": USER_AGENT}
        if self.rejected is not None:  # is the source still serving the refused one?
            if self.rejected[0]:
                headers["If-None-Match"] = self.rejected[0]
        elif self.etag:
            headers["If-None-Match"] = self.etag
        elif self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=fetch.timeout_s)) as session:
                async with session.get(fetch.url, headers=headers) as response:  # type: ignore[arg-type]
                    if response.status == 304:
                        return 304, None, response.headers
                    if response.status != 200:
                        raise FetchFailed(f"{where}: HTTP {response.status}; keeping the last good fleet")
                    return 200, await _read_limited(response, fetch.max_bytes, where), response.headers
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise FetchFailed(f"{where}: {reason}; keeping the last good fleet") from exc

    def health(self) -> dict[str, Any]:
        """The fleet's part of /healthz."""
        info = self.replica.loaded.fleet_info
        out: dict[str, Any] = {"source": info.source, "revision": info.revision, "skipped": list(info.skipped)}
        if self.replica.config.fleet_fetch.url:
            out["fetch"] = {"last_error": self.last_error, "last_ok_at": self.last_ok_at, "etag": self.etag}
        return out

    def problem(self) -> bool:
        """Whether /healthz should list the fleet as degraded (a stale fleet, or zones left out)."""
        return self.last_error is not None or bool(self.replica.loaded.fleet_info.skipped)


async def _read_limited(response: aiohttp.ClientResponse, limit: int, where: str) -> bytes:
    if response.content_length is not None and response.content_length > limit:
        raise FetchFailed(f"{where}: {response.content_length} bytes, more than steering.fleet_max_bytes ({limit})")
    body = bytearray()
    async for chunk in response.content.iter_chunked(1 << 16):
        body += chunk
        if len(body) > limit:
            raise FetchFailed(f"{where}: more than steering.fleet_max_bytes ({limit})")
    return bytes(body)


def _same_bytes(path: Path, body: bytes) -> bool:
    try:
        return path.stat().st_size == len(body) and path.read_bytes() == body
    except OSError:
        return False


__all__ = ["FetchFailed", "FleetPoller", "read_configured", "download_once", "redact", "source_of", "log_fleet",
           "check_default_site", "write_atomically"]
