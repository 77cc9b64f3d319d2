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
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

import xxhash

from contracts.ids import ApplianceId, FileKey, InvalidFileKey, validate_file_key
from contracts.token import Keyring
from contracts.wirefields import IDENT, WireFields

SCHEMA_VERSION = 1
CONTENT_TYPE = "application/json"
TIERS = ("ssd", "hdd")
SOURCE_KINDS = ("peer", "origin")
MAX_FILES = 2_000_000
MAX_SOURCES = 32
MAX_WAIT_S = 86400
_HEX128 = re.compile(r"[0-9a-f]{32}")
_URL = re.compile(r"https?://[^/\s?#]+(/[^\s#]*)?")
_S3 = re.compile(r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]/\S+")
_CREDENTIAL = re.compile(r"[A-Za-z0-9_.~=&%/:-]{1,512}")  # a token's query string
_SIGNATURE = re.compile(r"k=([A-Za-z0-9_-]{1,32}),s=([A-Za-z0-9_-]{43})")
_SIGNED_PREFIX = b"fill-manifest-v1|"
MAX_CREDENTIALS = 4096
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


@dataclass(frozen=True, slots=True)
class Source:
    kind: str  # "peer" | "origin"
    url: str | None = None  # peer: required; origin: an HTTP origin's URL of this file
    s3: str | None = None  # origin only: s3://bucket/key
    appliance: ApplianceId | None = None  # peer: who it is (for logs and metrics)
    wait_s: float = 0.0  # peer only: it is filling the file this window; a 404 there means "not yet",
    # asked again until this many seconds after the first 404, then the next source (escalation)


@dataclass(frozen=True, slots=True)
class ManifestFile:
    key: FileKey
    size: int
    xxh3: str
    tier: str  # "ssd" | "hdd"
    priority: int  # 0 first
    sources: tuple[Source, ...] = ()


@dataclass(frozen=True)
class Manifest:
    appliance: ApplianceId
    version: str
    generated_at: float
    files: tuple[ManifestFile, ...]
    credentials: Mapping[str, str] = field(default_factory=dict)  # source -> fill token (query string)
    signature: str = ""

    @property
    def etag(self) -> str:
        return f'"{self.version}"'

    def keys(self) -> frozenset[FileKey]:
        return frozenset(f.key for f in self.files)

    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


# ---- building and encoding ------------------------------------------------------------------

def _source_dict(s: Source) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": s.kind}
    if s.appliance is not None:
        out["appliance"] = s.appliance
    if s.url is not None:
        out["url"] = s.url
    if s.s3 is not None:
        out["s3"] = s.s3
    if s.wait_s:
        out["wait_s"] = s.wait_s
    return out


def _file_dict(f: ManifestFile) -> dict[str, Any]:
    return {"key": f.key, "size": f.size, "xxh3": f.xxh3, "tier": f.tier, "priority": f.priority,
            "sources": [_source_dict(s) for s in f.sources]}


def content_version(appliance: str, files: Iterable[ManifestFile]) -> str:
    """The version of a manifest: xxh3-128 over its canonical JSON without `generated_at`."""
    body = json.dumps({"v": SCHEMA_VERSION, "appliance": appliance, "files": [_file_dict(f) for f in files]},
                      separators=(",", ":"), sort_keys=True)
    return xxhash.xxh3_128_hexdigest(body.encode())


def make_manifest(appliance: ApplianceId, files: Iterable[ManifestFile], generated_at: float) -> Manifest:
    """A manifest with its version computed; files in priority order."""
    ordered = tuple(sorted(files, key=lambda f: (f.priority, f.key)))
    return Manifest(appliance, content_version(appliance, ordered), float(generated_at), ordered)


def to_dict(m: Manifest) -> dict[str, Any]:
    out = {"v": SCHEMA_VERSION, "appliance": m.appliance, "version": m.version,
           "generated_at": m.generated_at, "files": [_file_dict(f) for f in m.files]}
    if m.credentials:
        out["credentials"] = dict(sorted(m.credentials.items()))
    if m.signature:
        out["signature"] = m.signature
    return out


def _signed_bytes(data: Mapping[str, Any]) -> bytes:
    unsigned = {k: v for k, v in data.items() if k != "signature"}
    return _SIGNED_PREFIX + json.dumps(unsigned, separators=(",", ":"), sort_keys=True).encode()


def _mac(data: Mapping[str, Any], secret: bytes) -> str:
    digest = hmac.new(secret, _signed_bytes(data), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign_manifest(m: Manifest, keys: Keyring, credentials: Mapping[str, str] | None = None) -> Manifest:
    """The manifest with `credentials` (if given) and a signature by `keys` (the appliance's own)."""
    m = replace(m, credentials=dict(credentials) if credentials is not None else m.credentials, signature="")
    return replace(m, signature=f"k={keys.signing_id},s={_mac(to_dict(m), keys.secret(keys.signing_id))}")


def check_signature(data: Mapping[str, Any], keys: Keyring) -> None:
    """Raise ManifestUnauthenticated unless `data` (a decoded manifest object) is signed with `keys`."""
    m = _SIGNATURE.fullmatch(str(data.get("signature", "")))
    if m is None:
        raise ManifestUnauthenticated("signature: missing or malformed (a manifest must be signed)")
    secret = keys.keys.get(m.group(1))
    if secret is None or not hmac.compare_digest(_mac(data, secret), m.group(2)):
        raise ManifestUnauthenticated("signature: does not verify with this appliance's keys")


def encode_manifest(m: Manifest) -> bytes:
    return json.dumps(to_dict(m), separators=(",", ":")).encode()


# ---- decoding -------------------------------------------------------------------------------

def decode_manifest(raw: bytes | str, appliance: str | None = None, keys: Keyring | None = None) -> Manifest:
    """Parse and validate; with `appliance`, also refuse a manifest made for another appliance; with
    `keys`, refuse one they did not sign (checked first: nothing unauthenticated is even parsed)."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise MalformedManifest(f"not valid JSON: {exc}") from None
    if keys is not None:
        if not isinstance(data, dict):
            raise MalformedManifest("a manifest must be a JSON object")
        check_signature(data, keys)
    return from_dict(data, appliance)


def from_dict(data: Any, appliance: str | None = None) -> Manifest:
    f = _Fields(data, "")
    version = data.get("v") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise UnsupportedManifestVersion(f"v: schema version {version!r} not supported (want {SCHEMA_VERSION})")
    who = f.str("appliance")
    if not IDENT.fullmatch(who):
        raise MalformedManifest("appliance: must be 1-64 of [A-Za-z0-9_.-]")
    if appliance is not None and who != appliance:
        raise MalformedManifest(f"appliance: manifest is for {who!r}, not {appliance!r}")
    stated = f.str("version")
    generated_at = f.number("generated_at")
    raw_files = f.list("files")
    if len(raw_files) > MAX_FILES:
        raise MalformedManifest(f"files: more than {MAX_FILES} entries")
    files, seen = [], set()
    for i, item in enumerate(raw_files):
        mf = _file(item, f"files[{i}]")
        if mf.key in seen:
            raise MalformedManifest(f"files[{i}].key: {mf.key!r} listed twice")
        seen.add(mf.key)
        files.append(mf)
    actual = content_version(who, files)
    if stated != actual:
        raise ManifestVersionMismatch(f"version: {stated!r:.40} does not match the content ({actual})")
    return Manifest(ApplianceId(who), stated, generated_at, tuple(files), _credentials(data.get("credentials", {})),
                    str(data.get("signature", "")))


def _credentials(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict) or len(raw) > MAX_CREDENTIALS:
        raise MalformedManifest(f"credentials: must be a map of at most {MAX_CREDENTIALS} sources")
    for name, token in raw.items():
        if not (isinstance(name, str) and IDENT.fullmatch(name) and isinstance(token, str)
                and _CREDENTIAL.fullmatch(token)):
            raise MalformedManifest(f"credentials.{str(name)[:64]}: must map a source id to a token")
    return dict(raw)


def _file(raw: Any, where: str) -> ManifestFile:
    f = _Fields(raw, where)
    key = f.str("key")
    try:
        validate_file_key(key)
    except InvalidFileKey as exc:
        raise MalformedManifest(f"{where}.key: {exc}") from None
    digest = f.str("xxh3")
    if not _HEX128.fullmatch(digest):
        raise MalformedManifest(f"{where}.xxh3: must be 32 lowercase hex digits (xxh3-128)")
    tier = f.str("tier")
    if tier not in TIERS:
        raise MalformedManifest(f"{where}.tier: must be one of {', '.join(TIERS)}")
    sources = f.list("sources")
    if len(sources) > MAX_SOURCES:
        raise MalformedManifest(f"{where}.sources: more than {MAX_SOURCES}")
    return ManifestFile(FileKey(key), f.count("size"), digest, tier, f.count("priority"),
                        tuple(_source(s, f"{where}.sources[{j}]") for j, s in enumerate(sources)))


def _source(raw: Any, where: str) -> Source:
    f = _Fields(raw, where)
    kind = f.str("kind")
    if kind not in SOURCE_KINDS:
        raise MalformedManifest(f"{where}.kind: must be one of {', '.join(SOURCE_KINDS)}")
    url = f.opt_str("url")
    s3 = f.opt_str("s3")
    who = f.opt_str("appliance")
    if url is not None and not _URL.fullmatch(url):
        raise MalformedManifest(f"{where}.url: must be an http(s) URL")
    if s3 is not None and (kind != "origin" or not _S3.fullmatch(s3)):
        raise MalformedManifest(f"{where}.s3: must be s3://bucket/key, on an origin source only")
    if who is not None and not IDENT.fullmatch(who):
        raise MalformedManifest(f"{where}.appliance: must be 1-64 of [A-Za-z0-9_.-]")
    if kind == "peer" and url is None:
        raise MalformedManifest(f"{where}.url: required for a peer source")
    if url is not None and s3 is not None:
        raise MalformedManifest(f"{where}: either url or s3, not both")
    wait_s = f.raw("wait_s", 0)
    if (isinstance(wait_s, bool) or not isinstance(wait_s, (int, float)) or not 0 <= wait_s <= MAX_WAIT_S
            or (wait_s and kind != "peer")):
        raise MalformedManifest(f"{where}.wait_s: must be 0..{MAX_WAIT_S} seconds, on a peer source only")
    return Source(kind, url, s3, ApplianceId(who) if who is not None else None, float(wait_s))


class _Fields(WireFields):
    """A manifest's JSON object."""

    error = MalformedManifest
    noun = "object"
