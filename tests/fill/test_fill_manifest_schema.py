"""contracts.manifest: round trip, content-hash version, and refusals that name the field."""
from __future__ import annotations

import json

import pytest

from contracts.manifest import (MalformedManifest, ManifestFile, ManifestVersionMismatch, Source,
                                UnsupportedManifestVersion, content_version, decode_manifest, encode_manifest,
                                make_manifest, to_dict)

H = "0123456789abcdef" * 2
FILES = [
    ManifestFile("t1/v/1080p.mp4", 1000, H, "ssd", 0,
                 (Source("peer", url="http://a2:8080/t1/v/1080p.mp4", appliance="a2"),
                  Source("origin", s3="s3://media/t1/v/1080p.mp4"))),
    ManifestFile("t1/v/240p.mp4", 10, H, "hdd", 1, (Source("origin", url="http://o:8070/t1/v/240p.mp4"),)),
]
M = make_manifest("a1", FILES, 1767225600.0)


def test_round_trip_and_version():
    assert decode_manifest(encode_manifest(M), "a1") == M
    assert M.version == content_version("a1", M.files)
    later = make_manifest("a1", FILES, 1767300000.0)
    assert later.version == M.version and later.etag == f'"{M.version}"'  # generated_at is not content
    assert make_manifest("a1", FILES[:1], 0.0).version != M.version


def _mutate(fn) -> bytes:
    """The manifest with one change; field checks come before the version check, so it stays stale."""
    d = to_dict(M)
    fn(d)
    return json.dumps(d).encode()


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("files"), "files: required"),
    (lambda d: d["files"][0].update(size=-1), "files[0].size: must be a non-negative integer"),
    (lambda d: d["files"][1].update(xxh3="XYZ"), "files[1].xxh3: must be 32 lowercase hex"),
    (lambda d: d["files"][0].update(tier="ram"), "files[0].tier: must be one of ssd, hdd"),
    (lambda d: d["files"][0].update(key="../etc/passwd"), "files[0].key:"),
    (lambda d: d["files"][0]["sources"][0].pop("url"), "files[0].sources[0].url: required for a peer"),
    (lambda d: d["files"][0]["sources"][0].update(kind="cdn"), "files[0].sources[0].kind: must be one of"),
    (lambda d: d["files"][0]["sources"][1].update(s3="http://x"), "files[0].sources[1].s3: must be s3://"),
    (lambda d: d["files"].append(dict(d["files"][0])), "files[2].key: 't1/v/1080p.mp4' listed twice"),
    (lambda d: d.update(generated_at="now"), "generated_at: must be a non-negative number"),
    (lambda d: d.update(appliance="a 1"), "appliance: must be 1-64"),
], ids=["no-files", "negative-size", "bad-hash", "bad-tier", "bad-key", "peer-without-url", "bad-kind",
        "bad-s3", "duplicate", "bad-time", "bad-appliance"])
def test_malformed_names_the_field(mutate, message):
    with pytest.raises(MalformedManifest) as err:
        decode_manifest(_mutate(mutate))
    assert message in str(err.value)


def test_refusals():
    with pytest.raises(MalformedManifest, match="not valid JSON"):
        decode_manifest(b"{nope")
    with pytest.raises(MalformedManifest, match="top level"):
        decode_manifest(b"[]")
    with pytest.raises(UnsupportedManifestVersion):
        decode_manifest(json.dumps({**to_dict(M), "v": 2}).encode())
    with pytest.raises(MalformedManifest, match="not 'a2'"):
        decode_manifest(encode_manifest(M), "a2")
    tampered = to_dict(M)
    tampered["files"][0]["size"] = 999
    with pytest.raises(ManifestVersionMismatch, match="version:"):
        decode_manifest(json.dumps(tampered).encode())
    assert MalformedManifest.status_hint == 400
