"""Turning a manifest source into a request: the URL to GET (with Range) and its headers.

- peer, or an origin source with a `url` (`origin serve`): that URL with the manifest's credential
  for that source in `Authorization: CDN-Token ...` (the planner minted it for this appliance; it opens
  that source only, so it is never sent anywhere else);
- an origin source with `s3` (s3://bucket/key): a presigned GetObject URL made by boto3 with the
  agent's endpoint and credentials (local signing, no request), fetched by the same aiohttp client,
  so S3 gets the same parallel ranged GETs, pacing and checks as every other source;
- a bare origin source: the agent's configured origin ([origin] url, or location = s3://bucket/prefix).
"""
from __future__ import annotations

import threading
from typing import Any, Mapping

from contracts.manifest import ORIGIN, Source
from contracts.token import AUTH_SCHEME
from oca.fill.config import ConfigError, OriginConfig

PRESIGN_TTL_S = 6 * 3600


class NoOrigin(Exception):
    """A bare origin source and no origin configured."""


def split_s3(location: str) -> tuple[str, str]:
    """'s3://bucket/some/prefix' -> ('bucket', 'some/prefix')."""
    if not location.startswith("s3://"):
        raise ConfigError(f"origin.location: {location!r} is not s3://bucket[/prefix]")
    bucket, _, prefix = location[len("s3://"):].partition("/")
    if not bucket:
        raise ConfigError(f"origin.location: {location!r} names no bucket")
    return bucket, prefix.strip("/")


class Resolver:
    def __init__(self, origin: OriginConfig, credentials: Mapping[str, str] | None = None) -> None:
        self.origin = origin
        self.credentials: Mapping[str, str] = credentials or {}
        self._s3: Any = None
        self._lock = threading.Lock()
        if origin.location is not None:
            split_s3(origin.location)

    def headers_for(self, source: str | None) -> dict[str, str]:
        """The Authorization header for one named source (its own credential), or none."""
        token = self.credentials.get(source) if source is not None else None
        return {"Authorization": f"{AUTH_SCHEME} {token}"} if token else {}

    def s3_client(self) -> Any:
        with self._lock:
            if self._s3 is None:
                import boto3
                from botocore.config import Config
                self._s3 = boto3.session.Session().client(
                    "s3", endpoint_url=self.origin.endpoint_url, region_name=self.origin.region or "us-east-1",
                    config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
            return self._s3

    def presign(self, bucket: str, object_key: str) -> str:
        return self.s3_client().generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": object_key}, ExpiresIn=PRESIGN_TTL_S)

    def request_for(self, key: str, source: Source) -> tuple[str, dict[str, str]]:
        if source.url is not None:
            return source.url, self.headers_for(source.appliance if source.kind == "peer" else ORIGIN)
        if source.s3 is not None:
            bucket, _, object_key = source.s3[len("s3://"):].partition("/")
            return self.presign(bucket, object_key), {}
        if self.origin.url is not None:
            return f"{self.origin.url}/{key}", self.headers_for(ORIGIN)
        if self.origin.location is not None:
            bucket, prefix = split_s3(self.origin.location)
            return self.presign(bucket, f"{prefix}/{key}" if prefix else key), {}
        raise NoOrigin("the manifest names the origin without an address and no [origin] is configured")
