"""Helpers for the fill tests: appliance configs with their own id and site, an in-thread HTTP file
server that can misbehave (errors, corrupt bytes, slowness) and counts what it sends, a test stand-in
for steering's manifest endpoint, and catalog entries for an origin."""
from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import xxhash
from aiohttp import web

from tests.support.appthread import AppThread
from contracts.keys import DerivedKeys, derive_keyring, keyfile_text, load_keyring, new_secret
from contracts.manifest import Manifest
from fill.credentials import authorize
from fill.service import manifest_reply


def write_keyfile(path: Path) -> Path:
    path.write_text(f'signing = "k1"\n[keys]\nk1 = "{new_secret()}"\n')
    return path


def write_derived_keyfile(master: Path, holder: str, path: Path) -> Path:
    """The key file an appliance (or the origin) is provisioned with: derived from the master for it."""
    path.write_text(keyfile_text(derive_keyring(load_keyring(master), holder), holder))
    return path


def write_oca_config(root: Path, appliance: str, site: str, keyfile: Path, ssd_reserve: int = 0,
                     hdd_reserve: int = 0) -> Path:
    """An appliance over root/ssd0 and root/hdd0, ports picked by the OS, state in root/state."""
    for d in ("ssd0", "hdd0"):
        (root / d).mkdir(parents=True, exist_ok=True)
    cfg = root / "oca.toml"
    cfg.write_text(f"""
[appliance]
id = "{appliance}"
site = "{site}"

[http]
listen = "127.0.0.1"
port = 0
workers = 1
access_log = false
drain_timeout_s = 2.0

[admin]
listen = "127.0.0.1"
port = 0

[tokens]
key_file = "{keyfile}"

[store]
index = "state/index.db"
disk_check_interval_s = 0.5

[[tiers.ssd]]
path = "ssd0"
reserve_bytes = {ssd_reserve}

[[tiers.hdd]]
path = "hdd0"
reserve_bytes = {hdd_reserve}

[mover]
enabled = false
""")
    return cfg


def h(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


class ThreadServer(AppThread):
    """An aiohttp app on 127.0.0.1 in a thread of its own."""

    def __init__(self, app: web.Application) -> None:
        super().__init__(lambda: app)


@dataclass
class FakeSource:
    """GET /<key> with Range, requiring a CDN-Token Authorization header. Per-key modes: "ok",
    "500", "404", "corrupt" (one byte flipped), "slow" (sleeps between 64 KiB writes)."""

    files: dict[str, bytes] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)  # bytes of body sent per key
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    titles: dict[str, dict] = field(default_factory=dict)  # /v1/titles for a catalog check
    slow_s: float = 0.02
    health: dict = field(default_factory=dict)  # /v1/health, as an appliance's admin port answers
    not_yet: dict[str, int] = field(default_factory=dict)  # key -> 404s left before it has the file (filling it)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/health", self._health)
        app.router.add_get("/v1/titles", self._titles)
        app.router.add_get("/v1/titles/{tid}", self._title)
        app.router.add_get("/{key:.+}", self._get)
        return app

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response(self.health)

    async def _titles(self, request: web.Request) -> web.Response:
        return web.json_response({"titles": [{"id": t} for t in self.titles]})

    async def _title(self, request: web.Request) -> web.Response:
        return web.json_response(self.titles[request.match_info["tid"]])

    async def _get(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        self.requests.append((key, request.headers.get("Range")))
        if not request.headers.get("Authorization", "").startswith("CDN-Token "):
            return web.Response(status=403)
        mode = self.modes.get(key, "ok")
        if self.not_yet.get(key, 0) > 0:
            self.not_yet[key] -= 1
            return web.Response(status=404)
        if mode in ("500", "404") or key not in self.files:
            return web.Response(status=int(mode) if mode in ("500", "404") else 404)
        data = self.files[key]
        if mode == "corrupt":
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start, end = 0, len(data)
        rng = request.headers.get("Range")
        status, headers = 200, {}
        if rng:
            a, _, b = rng.removeprefix("bytes=").partition("-")
            start, end = int(a), min(int(b) + 1, len(data))
            status, headers = 206, {"Content-Range": f"bytes {start}-{end - 1}/{len(data)}"}
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = end - start
        await resp.prepare(request)
        pos = start
        while pos < end:
            chunk = data[pos:min(end, pos + 65536)]
            try:
                await resp.write(chunk)
            except ConnectionError:  # the agent stopped or gave up this part
                return resp
            self.sent[key] = self.sent.get(key, 0) + len(chunk)
            pos += len(chunk)
            if mode == "slow":
                await asyncio.sleep(self.slow_s)
        return resp


class SteeringStandIn:
    """TEST STAND-IN for steering's `GET /v1/fill-manifest?appliance=ID` (ETag / 304), serving
    manifests built by fill.service.build_manifests and, like steering, authorized for their
    appliance with the master keys (fill.credentials); steering's real endpoint replaces it."""

    def __init__(self, master: Path | None = None) -> None:
        self.derived = DerivedKeys(load_keyring(master)) if master is not None else None
        self.manifests: dict[str, Manifest] = {}
        self.raw_override: dict[str, bytes] = {}  # appliance -> body to send instead (malformed tests)
        self.statuses: list[int] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/fill-manifest", self._get)
        return app

    async def _get(self, request: web.Request) -> web.Response:
        appliance = request.query.get("appliance", "")
        if appliance in self.raw_override:
            self.statuses.append(200)
            return web.Response(body=self.raw_override[appliance], content_type="application/json")
        manifest = self.manifests.get(appliance)
        if manifest is not None and self.derived is not None:
            manifest = authorize(manifest, self.derived, time.time())
        reply = manifest_reply(manifest, request.headers.get("If-None-Match"))
        self.statuses.append(reply.status)
        return web.Response(status=reply.status, body=reply.body or None, headers=dict(reply.headers))


def wait_until(predicate, timeout: float = 20.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def title_entry(title_id: str, files: dict[str, bytes], release_date: str | None = None):
    """A catalog entry (contracts.catalog.TitleEntry) whose video renditions are `files` (name -> bytes);
    returns (entry, {key: bytes})."""
    from contracts.catalog import Metadata, Rendition, Segment, Span, TitleEntry
    from origin.core.layout import file_key, version_of

    version = version_of((name, h(data)) for name, data in files.items())
    renditions, objects = [], {}
    for i, (name, data) in enumerate(sorted(files.items())):
        key = file_key(title_id, version, name)
        objects[key] = data
        renditions.append(Rendition(
            name=name.split(".")[0], kind="video", key=key, size=len(data), xxh3=h(data), codec="avc1.64001f",
            bandwidth=1_000_000 * (i + 1), average_bandwidth=900_000 * (i + 1), init=Span(0, min(10, len(data))),
            index=None, segments=(Segment(0, len(data), 4.0),), playlist=file_key(title_id, version, name + ".m3u8"),
            width=640 * (i + 1), height=360 * (i + 1), frame_rate=25.0))
    meta = Metadata(title_id, f"Title {title_id}", release_date=release_date)
    entry = TitleEntry(meta=meta, version=version, duration_s=4.0, renditions=tuple(renditions), assets=(),
                       master=file_key(title_id, version, "master.m3u8"),
                       dash=file_key(title_id, version, "manifest.mpd"), poster=None)
    return entry, objects


AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}


@contextlib.contextmanager
def moto_s3(*buckets: str):
    """moto's S3 server on 127.0.0.1 (real S3 over HTTP to an unpatched boto3) with `buckets` made and
    the fake AWS credentials in the environment; yields its endpoint URL; restores everything after."""
    import boto3
    from moto.server import ThreadedMotoServer

    from tests.support import free_port

    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        for bucket in buckets:
            s3.create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        moto.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def stop_appliances(apps) -> None:
    for app in apps:
        try:
            app.stop(timeout=15)
        except Exception:  # noqa: BLE001 - teardown: stop the others regardless
            pass
