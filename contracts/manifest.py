"""The fill manifest: what steering tells one appliance to hold, and where to fetch each file. Steering
serves it at `GET /v1/fill-manifest?appliance=ID` (ETag = `"<version>"`, 304 on If-None-Match); the fill
agent reads it. Version 1 on the wire is JSON:

    {"v": 1, "appliance": "ams-1", "version": "<32 hex>", "generated_at": 1767225600.0,
     "files": [{"key": "files/t1/v0123456789abcdef/1080p.mp4", "size": 123456789,
                "xxh3": "<32 hex, xxh3-128 of the content>", "tier": "ssd", "priority": 0,
                "sources": [{"kind": "peer", "appliance": "ams-2", "url": "http://ams-2:8080/files/..."},
                            {"kind": "peer", "appliance": "ams-3", "url": "...", "wait_s": 600.0},
                            {"kind": "origin", "url": "http://origin:8070/files/..."}]}]}

`priority` is a rank: 0 is fetched first (the hottest file), larger numbers later; when the disk is full
the higher numbers wait. `tier` is where the planner wants the file ("ssd" for the hottest). Sources
are in the order to try them (escalation): peers of the appliance's own cluster that hold the file, a
peer of its cluster that is filling it this window (`wait_s`: a 404 there means "not yet", asked again
until that long after the first 404), holders in other clusters (tier), then the origin.
An origin source carries a `url` (an HTTP origin such as `origin serve`), an `s3` location
(`s3://bucket/key`, reached with the agent's own endpoint and credentials), or neither (the agent's
configured origin). Peer and HTTP-origin fetches carry a fill token (`Authorization: CDN-Token ...`).

`version` is a content hash over the files (not `generated_at`, `credentials`, `signature` or itself),
so the same plan gives the same version (and ETag) on every steering replica, and a manifest whose
version does not match its content was damaged on the way and is refused.

Trust: `credentials` maps each source the manifest names (a peer's appliance id, or "origin") to the
fill token this appliance presents there — minted by the planner with that source's key derived for
this appliance, so it opens that source only, for this appliance only, until it expires. `signature`
(`k=<key id>,s=<base64url HMAC-SHA256>`) is made with the keys derived for the appliance over the
canonical JSON of everything else; the agent refuses a manifest whose signature its own keys do not
verify, before acting on any of it. Decoding validates everything and raises a
`ManifestError` naming the field; `status_hint` is what a server would answer with such a document.

Strategy: the three classes are msgspec Structs in wire order, so msgspec decodes and checks a document
in one pass (contracts.wirejson: types, bounds, patterns); `_problem` then applies what types cannot say
(the file-key grammar, no key twice, which fields each kind of source takes). Both apply to what
arrives, never to what the planner builds: one odd peer URL must not stop a whole plan. The bytes that
are hashed and signed stay `json.dumps` of the plain values with sorted keys: the canonical form every
replica and agent agrees on.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from typing import Annotated, Any, Iterable, Literal, Mapping

import msgspec
import xxhash
from msgspec import Meta

from contracts import wirejson
from contracts.ids import ApplianceId, FileKey, InvalidFileKey, validate_file_key
from contracts.token import Keyring
from contracts.wirejson import Amount, Count, Hex128, Ident, matching

SCHEMA_VERSION = 1
CONTENT_TYPE = "application/json"
Tier = Literal["ssd", "hdd"]
Kind = Literal["peer", "origin"]
MAX_FILES = 2_000_000
MAX_SOURCES = 32
MAX_WAIT_S = 86400
MAX_CREDENTIALS = 4096
Url = matching(r"https?://[^/\s?#]+(/[^\s#]*)?", "must be an http(s) URL")
S3Url = matching(r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]/\S+", "must be s3://bucket/key")
Token = matching(r"[A-Za-z0-9_.~=&%/:-]{1,512}", "must be a fill token (a query string)")
_SIGNATURE = re.compile(r"k=([A-Za-z0-9_-]{1,32}),s=([A-Za-z0-9_-]{43})")
_SIGNED_PREFIX = b"fill-manifest-v1|"
ORIGIN = "origin"  # the credentials name of the HTTP origin


class ManifestError(ValueError):
    status_hint = 400
    reason = "manifest-invalid"


class MalformedManifest(ManifestError):
    reason = "manifest-malformed"


class UnsupportedManifestVersion(ManifestError):
    reason = "manifest-version"


class ManifestVersionMismatch(ManifestError):
    """`version` is not the hash of the content: damaged or edited on the way."""

    reason = "manifest-version-mismatch"


class ManifestUnauthenticated(ManifestError):
    """No signature, or one this appliance's keys do not verify: not from our planner, or edited."""

    status_hint = 403
    reason = "manifest-signature"


class Source(msgspec.Struct, frozen=True, omit_defaults=True):
    kind: Kind
    appliance: Ident | None = None  # peer: who it is (for logs and metrics)
    url: Url | None = None  # peer: required; origin: an HTTP origin's URL of this file
    s3: S3Url | None = None  # origin only: s3://bucket/key
    wait_s: Annotated[float, Meta(ge=0, le=MAX_WAIT_S)] = 0.0  # peer only: it is filling the file this
    # window; a 404 there means "not yet", asked again until this many seconds after the first 404, then
    # the next source (escalation)


class ManifestFile(msgspec.Struct, frozen=True):
    key: FileKey
    size: Count
    xxh3: Hex128  # of the content
    tier: Tier
    priority: Count  # 0 first
    sources: Annotated[tuple[Source, ...], Meta(max_length=MAX_SOURCES)]


class Manifest(msgspec.Struct, frozen=True, omit_defaults=True, tag_field="v", tag=SCHEMA_VERSION):
    appliance: Ident
    version: str
    generated_at: Amount
    files: Annotated[tuple[ManifestFile, ...], Meta(max_length=MAX_FILES)]
    credentials: Annotated[dict[Ident, Token], Meta(max_length=MAX_CREDENTIALS)] = {}  # source -> fill token
    signature: str = ""

    @property
    def etag(self) -> str:
        return f'"{self.version}"'

    def keys(self) -> frozenset[FileKey]:
        return frozenset(f.key for f in self.files)

    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


_DECODER = wirejson.decoder(Manifest)


# ---- building and encoding ------------------------------------------------------------------

def content_version(appliance: str, files: Iterable[ManifestFile]) -> str:
    """The version of a manifest: xxh3-128 over its canonical JSON without `generated_at`."""
    body = json.dumps({"v": SCHEMA_VERSION, "appliance": appliance, "files": msgspec.to_builtins(tuple(files))},
                      separators=(",", ":"), sort_keys=True)
    return xxhash.xxh3_128_hexdigest(body.encode())


def make_manifest(appliance: ApplianceId, files: Iterable[ManifestFile], generated_at: float) -> Manifest:
    """A manifest with its version computed; files in priority order."""
    ordered = tuple(sorted(files, key=lambda f: (f.priority, f.key)))
    return Manifest(appliance, content_version(appliance, ordered), float(generated_at), ordered)


def _builtins(m: Manifest) -> dict[str, Any]:
    """The wire object as plain values (tuples for arrays), credentials sorted."""
    out = msgspec.to_builtins(m)
    if m.credentials:
        out["credentials"] = dict(sorted(m.credentials.items()))
    return out


def to_dict(m: Manifest) -> dict[str, Any]:
    """The manifest as the plain JSON values `encode_manifest` writes."""
    return msgspec.json.decode(encode_manifest(m))


def _signed_bytes(data: Mapping[str, Any]) -> bytes:
    unsigned = {k: v for k, v in data.items() if k != "signature"}
    return _SIGNED_PREFIX + json.dumps(unsigned, separators=(",", ":"), sort_keys=True).encode()


def _mac(data: Mapping[str, Any], secret: bytes) -> str:
    digest = hmac.new(secret, _signed_bytes(data), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign_manifest(m: Manifest, keys: Keyring, credentials: Mapping[str, str] | None = None) -> Manifest:
    """The manifest with `credentials` (if given) and a signature by `keys` (the appliance's own)."""
    m = msgspec.structs.replace(m, credentials=dict(credentials) if credentials is not None else m.credentials,
                                signature="")
    mac = _mac(_builtins(m), keys.secret(keys.signing_id))
    return msgspec.structs.replace(m, signature=f"k={keys.signing_id},s={mac}")


def check_signature(data: Mapping[str, Any], keys: Keyring) -> None:
    """Raise ManifestUnauthenticated unless `data` (a decoded manifest object) is signed with `keys`."""
    m = _SIGNATURE.fullmatch(str(data.get("signature", "")))
    if m is None:
        raise ManifestUnauthenticated("signature: missing or malformed (a manifest must be signed)")
    secret = keys.keys.get(m.group(1))
    if secret is None or not hmac.compare_digest(_mac(data, secret), m.group(2)):
        raise ManifestUnauthenticated("signature: does not verify with this appliance's keys")


def encode_manifest(m: Manifest) -> bytes:
    return json.dumps(_builtins(m), separators=(",", ":")).encode()


# ---- decoding -------------------------------------------------------------------------------

def decode_manifest(raw: bytes | str, appliance: str | None = None, keys: Keyring | None = None) -> Manifest:
    """Parse and validate; with `appliance`, also refuse a manifest made for another appliance; with
    `keys`, refuse one they did not sign (checked first: nothing unauthenticated is even parsed)."""
    if keys is None:
        return _checked(wirejson.decode(_DECODER, raw, MalformedManifest, first=_schema), appliance)
    data = wirejson.loads(raw, MalformedManifest)
    if not isinstance(data, dict):
        raise MalformedManifest("a manifest must be a JSON object")
    check_signature(data, keys)
    return from_dict(data, appliance)


def from_dict(data: Any, appliance: str | None = None) -> Manifest:
    return _checked(wirejson.from_builtins(Manifest, data, MalformedManifest, first=_schema), appliance)


def _schema(data: Any) -> None:
    if not isinstance(data, dict):
        raise MalformedManifest("(top level): must be an object")
    if data.get("v") != SCHEMA_VERSION:
        raise UnsupportedManifestVersion(f"v: schema version {data.get('v')!r} not supported (want {SCHEMA_VERSION})")


def _checked(m: Manifest, appliance: str | None) -> Manifest:
    problem = _problem(m)
    if problem:
        raise MalformedManifest(problem)
    if appliance is not None and m.appliance != appliance:
        raise MalformedManifest(f"appliance: manifest is for {m.appliance!r}, not {appliance!r}")
    actual = content_version(m.appliance, m.files)
    if m.version != actual:
        raise ManifestVersionMismatch(f"version: {m.version!r:.40} does not match the content ({actual})")
    return m


def _problem(m: Manifest) -> str | None:
    """What types cannot say is wrong with a manifest that arrived, naming the field."""
    seen: set[str] = set()
    for i, f in enumerate(m.files):
        try:
            validate_file_key(f.key)
        except InvalidFileKey as exc:
            return f"files[{i}].key: {exc}"
        if f.key in seen:
            return f"files[{i}].key: {f.key!r} listed twice"
        seen.add(f.key)
        for j, s in enumerate(f.sources):
            problem = _source_problem(s)
            if problem:
                return f"files[{i}].sources[{j}]{problem}"
    return None


def _source_problem(s: Source) -> str | None:
    if s.kind == "peer" and s.url is None:
        return ".url: required for a peer source"
    if s.s3 is not None and s.kind != "origin":
        return ".s3: on an origin source only"
    if s.url is not None and s.s3 is not None:
        return ": either url or s3, not both"
    if s.wait_s and s.kind != "peer":
        return ".wait_s: on a peer source only"
    return None
