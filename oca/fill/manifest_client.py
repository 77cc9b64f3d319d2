"""Getting tonight's manifest, and deciding whether to believe it.

From steering: `GET <replica>/v1/fill-manifest?appliance=ID` with If-None-Match of the last accepted
manifest (304: keep it), replicas tried in order. Every replica serves what `fill plan` wrote, but a
replica may not have read it yet (just started), so a 404 moves on to the next replica like an error
does; only when none has a manifest is it NoManifest, naming what each one answered. The ETag is the
manifest's version, a hash of its files, while its credentials expire (fill.credentials: 36 h): a
held manifest generated more than REFRESH_AFTER_S ago is asked for without If-None-Match, so an
unchanged plan still brings fresh credentials.
Or from a file (`--manifest FILE`). A manifest is refused — and the current set kept, pins and files
untouched — when it does not decode (schema, field types, version hash), is for another appliance,
or names files the origin's catalog does not know or knows with another size or hash. The catalog is
read from the origin the agent is configured with: S3 (origin.catalog over origin.backends' S3
backend) or an HTTP origin's /v1/titles.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from contracts.callers import appliance_authorization
from contracts.catalog import from_dict
from contracts.ids import FileKey
from contracts.manifest import ORIGIN, Manifest, ManifestError, decode_manifest
from contracts.token import Keyring
from oca.fill.config import OriginConfig
from oca.fill.core.diff import unknown_files
from oca.fill.log import log
from oca.fill.sources import Resolver, split_s3


REFRESH_AFTER_S = 12 * 3600.0


class ManifestRefused(Exception):
    status_hint = 422


class NoManifest(Exception):
    """No manifest to act on (steering unreachable, or no plan for us yet): nothing changes."""

    status_hint = 503


def read_file(path: Path, appliance: str, keys: Keyring) -> tuple[bytes, Manifest]:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise NoManifest(f"{path}: {exc.strerror}") from None
    try:
        return raw, decode_manifest(raw, appliance, keys)
    except ManifestError as exc:
        raise ManifestRefused(f"{path}: {exc}") from None


async def from_steering(session: aiohttp.ClientSession, replicas: tuple[str, ...], appliance: str,
                        saved: bytes | None, keys: Keyring) -> tuple[bytes, Manifest, bool]:
    """(raw, manifest, changed); every manifest is checked against our own keys (the planner signs
    it for us) before anything in it is believed. Raises ManifestRefused or NoManifest."""
    current = None
    if saved is not None:
        try:
            current = decode_manifest(saved, appliance, keys)
        except ManifestError:
            current = None
    fresh = current is not None and time.time() - current.generated_at < REFRESH_AFTER_S
    etag = {"If-None-Match": current.etag} if fresh else {}
    refused: list[str] = []
    problems: list[str] = []
    target = f"/v1/fill-manifest?appliance={appliance}"  # signed as sent: ids need no escaping
    for base in replicas:
        url = f"{base}/v1/fill-manifest"
        # Steering answers only to the appliance itself: a request signature made with our own keys.
        headers = {**etag, "Authorization": appliance_authorization(keys, appliance, "GET", target, time.time())}
        try:
            async with session.get(URL(base + target, encoded=True), headers=headers) as resp:
                if resp.status == 304 and current is not None and saved is not None:
                    return saved, current, False
                if resp.status != 200:  # 404: no plan for us at this replica yet; another may have one
                    problems.append(f"{url}: {'no fill plan yet' if resp.status == 404 else 'HTTP'} ({resp.status})")
                    continue
                raw = await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            problems.append(f"{url}: {type(exc).__name__}: {exc}")
            continue
        try:
            return raw, decode_manifest(raw, appliance, keys), True
        except ManifestError as exc:
            refused.append(f"{url}: {exc}")
            log("manifest-refused", url=url, error=str(exc))
    if refused:
        raise ManifestRefused("; ".join(refused + problems))
    raise NoManifest(f"no steering replica has a fill manifest for {appliance}: "
                     + "; ".join(problems or ["no replica configured"]))


async def catalog_index(origin: OriginConfig, session: aiohttp.ClientSession,
                        resolver: Resolver) -> dict[FileKey, tuple[int, str]] | None:
    """Every object the origin's catalog names, (size, xxh3) by key; None when no origin to ask."""
    if origin.location is not None:
        return await asyncio.to_thread(_catalog_from_backend, origin)
    if origin.url is not None:
        return await _catalog_from_http(origin.url, session, resolver)
    return None


def _catalog_from_backend(origin: OriginConfig) -> dict[FileKey, tuple[int, str]]:
    from origin.backends.s3 import S3Backend
    from origin.catalog import Catalog
    from origin.config import Location, S3Config

    bucket, prefix = split_s3(origin.location or "")
    backend = S3Backend(Location(bucket=bucket, prefix=prefix, endpoint_url=origin.endpoint_url,
                                 region=origin.region), S3Config(max_attempts=3))
    return _objects(Catalog(backend).list())


async def _catalog_from_http(base: str, session: aiohttp.ClientSession,
                             resolver: Resolver) -> dict[FileKey, tuple[int, str]]:
    headers = resolver.headers_for(ORIGIN)
    async with session.get(f"{base}/v1/titles", headers=headers) as resp:
        if resp.status != 200:
            raise NoManifest(f"{base}/v1/titles: HTTP {resp.status}: cannot check the manifest")
        ids = [t["id"] for t in (await resp.json())["titles"]]
    entries = []
    for title_id in ids:
        async with session.get(f"{base}/v1/titles/{title_id}", headers=headers) as resp:
            if resp.status == 200:
                entries.append(from_dict(await resp.json()))
    return _objects(entries)


def _objects(entries: list[Any]) -> dict[FileKey, tuple[int, str]]:
    return {FileKey(k): (size, digest) for e in entries for k, size, digest in e.objects()}


def check_against_catalog(manifest: Manifest, catalog: dict[FileKey, tuple[int, str]]) -> None:
    problems = unknown_files(manifest.files, catalog)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ManifestRefused("manifest names files the catalog does not know: " + "; ".join(problems[:3]) + more)
