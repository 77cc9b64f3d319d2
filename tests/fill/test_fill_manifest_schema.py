"""contracts.manifest: round trip, content-hash version, the wire bytes and signature pinned (old agents
and planners interoperate), and refusals that name the field."""
from __future__ import annotations

import json

import pytest

from contracts.manifest import (MalformedManifest, ManifestFile, ManifestUnauthenticated, ManifestVersionMismatch,
                                Source, UnsupportedManifestVersion, content_version, decode_manifest,
                                encode_manifest, make_manifest, sign_manifest, to_dict)
from contracts.token import Keyring

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


# written by the dict-walking encoder this contract had before its msgspec Structs: the bytes, the content
# version and the signature must stay exactly these
PINNED = (b'{"v":1,"appliance":"a1","version":"7cbbaeeca65653606ae51b8459725347","generated_at":1767225600.0,'
          b'"files":[{"key":"t1/v/1080p.mp4","size":1000,"xxh3":"0123456789abcdef0123456789abcdef","tier":"ssd",'
          b'"priority":0,"sources":[{"kind":"peer","appliance":"a2","url":"http://a2:8080/t1/v/1080p.mp4",'
          b'"wait_s":600.0},{"kind":"origin","s3":"s3://media/t1/v/1080p.mp4"}]},{"key":"t1/v/240p.mp4","size":10,'
          b'"xxh3":"0123456789abcdef0123456789abcdef","tier":"hdd","priority":1,"sources":[{"kind":"origin",'
          b'"url":"http://o:8070/t1/v/240p.mp4"}]}],"credentials":{"a2":"e=2&k=k1","origin":"e=1&k=k1"},'
          b'"signature":"k=k1,s=fEJ1dPtghc_y5hCg9B3qmrInEuuxTVbGmz7A9Nfu4XI"}')
KEYS = Keyring({"k1": b"s" * 32}, "k1")


def test_the_wire_bytes_and_signature_are_pinned():
    peer = Source("peer", url="http://a2:8080/t1/v/1080p.mp4", appliance="a2", wait_s=600.0)
    files = [ManifestFile(FILES[0].key, 1000, H, "ssd", 0, (peer, FILES[0].sources[1])), FILES[1]]
    signed = sign_manifest(make_manifest("a1", files, 1767225600.0), KEYS, {"origin": "e=1&k=k1", "a2": "e=2&k=k1"})
    assert encode_manifest(signed) == PINNED
    assert decode_manifest(PINNED, "a1", KEYS) == signed
    assert decode_manifest(json.dumps(json.loads(PINNED), indent=1), "a1", KEYS) == signed  # any spelling
    with pytest.raises(ManifestUnauthenticated):
        decode_manifest(PINNED.replace(b'"size":10,', b'"size":11,'), "a1", KEYS)


def test_rules_apply_to_what_arrives_not_to_what_the_planner_builds():
    """One bad peer URL in a fleet file must not stop a whole plan: building never refuses; the agent
    (and steering) refuse such a manifest when it arrives."""
    odd = make_manifest("a1", [ManifestFile("t/x", 1, H, "hdd", 0, (Source("peer", url="http://a b/x"),))], 1.0)
    with pytest.raises(MalformedManifest, match=r"^files\[0\]\.sources\[0\]\.url: must be an http\(s\) URL$"):
        decode_manifest(encode_manifest(odd))


def _mutate(fn) -> bytes:
    """The manifest with one change; field checks come before the version check, so it stays stale."""
    d = to_dict(M)
    fn(d)
    return json.dumps(d).encode()


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("files"), "files: required"),
    (lambda d: d["files"][0].update(size=-1), "files[0].size: must be at least 0"),
    (lambda d: d["files"][0].update(size=1.5), "files[0].size: must be an integer"),
    (lambda d: d["files"][1].update(xxh3="XYZ"), "files[1].xxh3: must be 32 lowercase hex"),
    (lambda d: d["files"][0].update(tier="ram"), "files[0].tier: must be one of ssd, hdd"),
    (lambda d: d["files"][0].update(key="../etc/passwd"), "files[0].key:"),
    (lambda d: d["files"][0]["sources"][0].pop("url"), "files[0].sources[0].url: required for a peer"),
    (lambda d: d["files"][0]["sources"][0].update(kind="cdn"), "files[0].sources[0].kind: must be one of"),
    (lambda d: d["files"][0]["sources"][1].update(s3="http://x"), "files[0].sources[1].s3: must be s3://"),
    (lambda d: d["files"][0]["sources"][1].update(url="http://o/x"), "files[0].sources[1]: either url or s3"),
    (lambda d: d["files"][1]["sources"][0].update(wait_s=5), "files[1].sources[0].wait_s: on a peer source only"),
    (lambda d: d["files"][0]["sources"][0].update(wait_s=86401), "files[0].sources[0].wait_s: must be at most 86400"),
    (lambda d: d["files"][0]["sources"][0].update(appliance="a 2"), "files[0].sources[0].appliance: must be 1-64"),
    (lambda d: d["files"][0].pop("sources"), "files[0].sources: required"),
    (lambda d: d["files"].__setitem__(1, "x"), "files[1]: must be a map"),
    (lambda d: d["files"].append(dict(d["files"][0])), "files[2].key: 't1/v/1080p.mp4' listed twice"),
    (lambda d: d.update(generated_at="now"), "generated_at: must be a number"),
    (lambda d: d.update(generated_at=-1), "generated_at: must be at least 0"),
    (lambda d: d.update(appliance="a 1"), "appliance: must be 1-64"),
    (lambda d: d.update(credentials={"a 2": "e=1"}), "credentials['a 2']: not a valid key (must be 1-64 of [A-Z"),
    (lambda d: d.update(credentials={"a2": "e=1 x"}), "credentials.a2: must be a fill token"),
    (lambda d: d["files"][0]["sources"][0].update(s3="s3://media/x"), "files[0].sources[0].s3: on an origin source"),
], ids=["no-files", "negative-size", "fractional-size", "bad-hash", "bad-tier", "bad-key", "peer-without-url",
        "bad-kind", "bad-s3", "url-and-s3", "wait-on-origin", "wait-too-long", "bad-peer-id", "no-sources",
        "file-not-object", "duplicate", "bad-time", "negative-time", "bad-appliance", "bad-credentials-key",
        "bad-credentials-token", "s3-on-peer"])
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
    with pytest.raises(UnsupportedManifestVersion, match="^v: schema version None"):
        decode_manifest(json.dumps({k: v for k, v in to_dict(M).items() if k != "v"}).encode())
    with pytest.raises(UnsupportedManifestVersion, match="^v: schema version 0"):
        decode_manifest(encode_manifest(M).replace(b'"v":1', b'"v":0'))
    with pytest.raises(MalformedManifest, match="not 'a2'"):
        decode_manifest(encode_manifest(M), "a2")
    tampered = to_dict(M)
    tampered["files"][0]["size"] = 999
    with pytest.raises(ManifestVersionMismatch, match="version:"):
        decode_manifest(json.dumps(tampered).encode())
    assert MalformedManifest.status_hint == 400
