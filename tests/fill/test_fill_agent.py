"""The fill agent against in-process HTTP sources that misbehave on request: failover and backoff,
quarantine of corrupt bytes, refused manifests, disk full, deletion only once the set is complete,
the window, and resuming a stopped download without fetching its finished bytes again."""
from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import time
from pathlib import Path

import msgspec
import pytest

from contracts.ids import KeyId
from contracts.keys import load_keyring
from contracts.manifest import ORIGIN, Manifest, ManifestFile, Source, encode_manifest, make_manifest, sign_manifest
from contracts.token import Keyring, fill_keys, fill_token
from oca.fill.agent import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK, EXIT_REFUSED, RunOptions, run
from oca.fill.config import FillConfig, OriginConfig, TransferConfig, WindowConfig
from oca.fill.statedir import StateDir
from fill_helpers import FakeSource, ThreadServer, h, title_entry, write_keyfile, write_oca_config
from contracts.catalog import to_dict
from oca import config as oca_config
from oca.store.index import Index
from tests.support.prom import Samples, samples, total, value

KB = 1024
SOURCE_KEYS = Keyring({KeyId("k1"): b"s" * 32}, KeyId("k1"))  # the fake sources' (they check the scheme only)
FAST = TransferConfig(rate_limit_bps=0, max_files=2, parts_per_file=3, part_bytes=64 * KB, backoff_base_s=0.05,
                      backoff_cap_s=0.2, max_attempts=4, connect_timeout_s=2, read_timeout_s=5)


class Lab:
    def __init__(self, root: Path, peer: ThreadServer, origin: ThreadServer, psrc: FakeSource,
                 osrc: FakeSource) -> None:
        self.root, self.peer, self.origin, self.psrc, self.osrc = root, peer, origin, psrc, osrc
        self.keyfile = keyfile = write_keyfile(root / "keys.toml")  # a1's own keys
        self.cfg_path = write_oca_config(root / "oca", "a1", "s1", keyfile)
        self.oca = oca_config.load(self.cfg_path)
        self.state_dir = StateDir(self.oca.store.index_path.parent / "fill")

    def add(self, key: str, data: bytes, peer: bool = True, origin: bool = True) -> None:
        if peer:
            self.psrc.files[key] = data
        if origin:
            self.osrc.files[key] = data

    def file(self, key: str, data: bytes, priority: int = 0, peer: bool = True, tier: str = "hdd") -> ManifestFile:
        srcs = ((Source("peer", url=f"{self.peer.url}/{key}", appliance="a2"),) if peer else ()) + (
            Source("origin", url=f"{self.origin.url}/{key}"),)
        return ManifestFile(key, len(data), h(data), tier, priority, srcs)

    def manifest(self, files) -> Manifest:
        """Signed for a1 with a credential for each source, as the planner hands it out."""
        creds = {src: fill_token(fill_keys(SOURCE_KEYS, "a1"), int(time.time()) + 3600, "a1") for src in ("a2", ORIGIN)}
        return sign_manifest(make_manifest("a1", files, 1.0), load_keyring(self.keyfile), creds)

    def fill(self, files, cfg: FillConfig | None = None, raw: bytes | None = None, **opts) -> int:
        path = self.root / "manifest.json"
        path.write_bytes(raw if raw is not None else encode_manifest(self.manifest(files)))
        cfg = cfg or FillConfig(transfer=FAST, origin=OriginConfig(verify_catalog=False))
        return asyncio.run(run(self.oca, cfg, RunOptions(manifest_file=path, ignore_window=True, progress=False,
                                                          **opts)))

    def index(self) -> dict:
        idx = Index.open(self.oca.store.index_path, readonly=True)
        try:
            return {e.key: e for e in idx.all()}
        finally:
            idx.close()

    def metrics(self) -> Samples:
        return samples((self.state_dir.root / "fill-metrics.prom").read_text())


@pytest.fixture
def lab(tmp_path):
    psrc, osrc = FakeSource(), FakeSource()
    with ThreadServer(psrc.app()) as peer, ThreadServer(osrc.app()) as origin:
        yield Lab(tmp_path, peer, origin, psrc, osrc)


def test_peer_first_then_origin_on_errors(lab):
    a, b = os.urandom(300 * KB), os.urandom(5 * KB)
    lab.add("t/a.mp4", a)
    lab.add("t/b.mp4", b)
    lab.psrc.modes["t/b.mp4"] = "500"
    assert lab.fill([lab.file("t/a.mp4", a), lab.file("t/b.mp4", b, 1)]) == EXIT_OK
    idx = lab.index()
    assert idx["t/a.mp4"].xxh3 == h(a) and idx["t/b.mp4"].xxh3 == h(b)
    assert idx["t/a.mp4"].pinned and idx["t/b.mp4"].pinned
    assert lab.psrc.sent.get("t/a.mp4") == len(a) and "t/a.mp4" not in lab.osrc.sent  # peer first
    assert lab.osrc.sent["t/b.mp4"] == len(b)  # failed over
    ranges = [r for k, r in lab.psrc.requests if k == "t/a.mp4"]
    assert len(ranges) == 5 and all(r.startswith("bytes=") for r in ranges)  # 300 KiB in 64 KiB parts
    m = lab.metrics()
    assert value(m, "fill_source_errors_total", fault="host", kind="peer") == 1
    assert value(m, "fill_files_published_total", kind="origin") == 1 and value(m, "fill_complete") == 1


def _pending(lab, key: str, data: bytes, wait_s: float, priority: int = 0) -> ManifestFile:
    """A file whose first source is a peer still filling it (the planner's wait_s source), then the origin."""
    return ManifestFile(key, len(data), h(data), "hdd", priority,
                        (Source("peer", url=f"{lab.peer.url}/{key}", appliance="a2", wait_s=wait_s),
                         Source("origin", url=f"{lab.origin.url}/{key}")))


def test_a_peer_still_filling_the_file_is_waited_for_without_holding_a_slot(lab):
    a, b = os.urandom(30 * KB), os.urandom(20 * KB)  # one part each: one request per attempt
    lab.add("t/a.mp4", a)
    lab.add("t/b.mp4", b, peer=False)
    lab.psrc.not_yet["t/a.mp4"] = 2  # the peer gets it after two "not yet"
    one_slot = FillConfig(transfer=msgspec.structs.replace(FAST, max_files=1),
                          origin=OriginConfig(verify_catalog=False))
    assert lab.fill([_pending(lab, "t/a.mp4", a, 5.0), lab.file("t/b.mp4", b, 1, peer=False)], one_slot) == EXIT_OK
    idx = lab.index()
    assert idx["t/a.mp4"].xxh3 == h(a) and idx["t/b.mp4"].xxh3 == h(b)
    assert "t/a.mp4" not in lab.osrc.sent and lab.psrc.sent["t/a.mp4"] == len(a)  # from the peer, not the origin
    assert lab.osrc.sent["t/b.mp4"] == len(b)  # fetched while a waited: the one slot was free
    m = lab.metrics()
    assert value(m, "fill_source_waits_total", kind="peer") == 2 and total(m, "fill_escalations_total") == 0
    assert total(m, "fill_source_errors_total") == 0  # "not yet" from a filling peer is no fault


def test_a_peer_that_never_gets_the_file_is_given_up_after_its_wait(lab):
    a = os.urandom(50 * KB)
    lab.add("t/a.mp4", a, peer=False)
    assert lab.fill([_pending(lab, "t/a.mp4", a, 1.0)]) == EXIT_OK
    assert lab.index()["t/a.mp4"].xxh3 == h(a) and lab.osrc.sent["t/a.mp4"] == len(a)  # escalated to the origin
    asked = [k for k, _ in lab.psrc.requests if k == "t/a.mp4"]
    assert len(asked) >= 2  # asked again at least once before giving up
    assert value(lab.metrics(), "fill_escalations_total", kind="peer") == 1


def test_corrupt_peer_is_quarantined_and_origin_used(lab):
    data = os.urandom(200 * KB)
    lab.add("t/c.mp4", data)
    lab.psrc.modes["t/c.mp4"] = "corrupt"
    assert lab.fill([lab.file("t/c.mp4", data)]) == EXIT_OK
    assert lab.index()["t/c.mp4"].xxh3 == h(data)
    (q,) = lab.state_dir.quarantined()
    assert q["key"] == "t/c.mp4" and q["source"].startswith("peer:a2:") and q["expected"] == h(data)
    assert value(lab.metrics(), "fill_hash_mismatches_total", kind="peer") == 1


def test_corrupt_everywhere_is_never_published(lab):
    data = os.urandom(100 * KB)
    lab.add("t/d.mp4", data)
    lab.psrc.modes["t/d.mp4"] = lab.osrc.modes["t/d.mp4"] = "corrupt"
    assert lab.fill([lab.file("t/d.mp4", data)]) == EXIT_FAILED
    assert "t/d.mp4" not in lab.index()
    assert not (lab.root / "oca/hdd0/t/d.mp4").exists() and not (lab.root / "oca/ssd0/t/d.mp4").exists()
    assert len(lab.state_dir.quarantined()) == 2
    assert not list((lab.root / "oca/hdd0/.tmp").iterdir()) and not list((lab.root / "oca/ssd0/.tmp").iterdir())


def _tampered(lab, files) -> dict[str, bytes]:
    """A good manifest for a1, then the ways it can be forged or damaged on the way."""
    good = lab.manifest(files)
    evil_source = Source("peer", url="http://198.51.100.9/steal", appliance="a2")
    edit = msgspec.structs.replace  # manifests are msgspec Structs
    edited = edit(good, files=(edit(good.files[0], sources=(evil_source,)),))  # signature of the old files
    other = Keyring({KeyId("k1"): b"o" * 32}, KeyId("k1"))  # another appliance's keys
    return {
        "unsigned": encode_manifest(make_manifest("a1", files, 1.0)),
        "edited-sources": encode_manifest(edited),
        "edited-credentials": encode_manifest(edit(good, credentials={"a2": "e=1&k=k1&t=fill&f=a1&s=" + "A" * 43})),
        "signed-by-another": encode_manifest(sign_manifest(make_manifest("a1", files, 1.0), other)),
    }


def test_a_tampered_or_unsigned_manifest_is_refused_before_anything_happens(lab):
    """The agent checks the planner's signature (made with a1's own derived keys) before it acts on
    a manifest: a forged one sends no credential anywhere, fetches nothing, deletes nothing."""
    data, new = os.urandom(10 * KB), os.urandom(10 * KB)
    lab.add("t/keep.mp4", data)
    lab.add("t/new.mp4", new)
    assert lab.fill([lab.file("t/keep.mp4", data)]) == EXIT_OK
    asked = len(lab.psrc.requests) + len(lab.osrc.requests)
    for case, raw in _tampered(lab, [lab.file("t/new.mp4", new)]).items():
        assert lab.fill([], raw=raw) == EXIT_REFUSED, case
    assert len(lab.psrc.requests) + len(lab.osrc.requests) == asked, "nothing fetched for a forged manifest"
    assert set(lab.index()) == {"t/keep.mp4"} and lab.index()["t/keep.mp4"].pinned


def test_malformed_or_unknown_manifest_keeps_the_current_set(lab):
    data = os.urandom(10 * KB)
    lab.add("t/e.mp4", data)
    assert lab.fill([lab.file("t/e.mp4", data)]) == EXIT_OK
    bad = lab.root / "bad.json"
    bad.write_bytes(b'{"v": 1, "appliance": "a1", "files": "nope"}')
    code = asyncio.run(run(lab.oca, FillConfig(transfer=FAST), RunOptions(manifest_file=bad, ignore_window=True,
                                                                          progress=False)))
    assert code == EXIT_REFUSED and value(lab.metrics(), "fill_manifest_refused") == 1
    assert value(lab.metrics(), "fill_missing_files") is None  # never reached: absent, not a misleading 0
    assert lab.index()["t/e.mp4"].pinned  # pins and files untouched
    # A well-formed manifest naming a file the origin's catalog does not know is refused too.
    entry, objects = title_entry("t1", {"720p.mp4": data})
    lab.osrc.titles["t1"] = to_dict(entry)
    other = os.urandom(10 * KB)
    cfg = FillConfig(transfer=FAST, origin=OriginConfig(url=lab.origin.url))
    assert lab.fill([lab.file("t/e.mp4", data), lab.file("t/unknown.mp4", other, 1)], cfg) == EXIT_REFUSED
    assert set(lab.index()) == {"t/e.mp4"}
    (key,) = objects
    lab.add(key, data)
    assert lab.fill([lab.file(key, data)], cfg) == EXIT_OK  # known to the catalog: accepted


def test_delete_only_once_the_new_set_is_complete(lab):
    a, b, c = (os.urandom(20 * KB) for _ in range(3))
    for k, d in (("t/a", a), ("t/b", b)):
        lab.add(k, d)
    assert lab.fill([lab.file("t/a", a), lab.file("t/b", b)]) == EXIT_OK
    lab.add("t/c", c, peer=False, origin=True)
    lab.osrc.modes["t/c"] = "500"
    assert lab.fill([lab.file("t/b", b), lab.file("t/c", c, 1)]) == EXIT_FAILED
    assert set(lab.index()) == {"t/a", "t/b"}  # t/a stays while t/c is missing
    assert not lab.index()["t/a"].pinned
    lab.osrc.modes["t/c"] = "ok"
    assert lab.fill([lab.file("t/b", b), lab.file("t/c", c, 1)]) == EXIT_OK
    assert set(lab.index()) == {"t/b", "t/c"}
    assert value(lab.metrics(), "fill_files_deleted_total") == 1


def test_disk_full_lower_priority_waits_and_pinned_stays(lab):
    # Real small disks: a 3 MiB tmpfs mounted on each of the appliance's disk directories.
    disks = [lab.root / "oca" / d for d in ("ssd0", "hdd0")]
    for disk in disks:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], check=True, capture_output=True)
    try:
        _fill_until_full(lab)
    finally:
        for disk in disks:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _fill_until_full(lab) -> None:
    first, big, small_file = os.urandom(1024 * KB), os.urandom(8 * 1024 * KB), os.urandom(64 * KB)
    for k, d in (("p/first", first), ("p/big", big), ("p/small", small_file)):
        lab.add(k, d)
    files = [lab.file("p/first", first, 0), lab.file("p/big", big, 1), lab.file("p/small", small_file, 2)]
    cfg = FillConfig(transfer=msgspec.structs.replace(FAST, max_files=1), origin=OriginConfig(verify_catalog=False))
    assert lab.fill(files, cfg) == EXIT_INCOMPLETE
    idx = lab.index()
    assert set(idx) == {"p/first"} and idx["p/first"].pinned  # small waits behind big
    assert value(lab.metrics(), "fill_files_deferred_total", reason="no-room") == 2


def test_outside_the_window_does_nothing(lab):
    data = os.urandom(KB)
    lab.add("t/w", data)
    now = dt.datetime.now()
    start = (now.hour * 60 + now.minute + 180) % 1440
    cfg = FillConfig(window=WindowConfig(start=f"{start // 60:02d}:{start % 60:02d}", hours=1.0), transfer=FAST,
                     origin=OriginConfig(verify_catalog=False))
    path = lab.root / "m.json"
    path.write_bytes(encode_manifest(make_manifest("a1", [lab.file("t/w", data)], 1.0)))
    assert asyncio.run(run(lab.oca, cfg, RunOptions(manifest_file=path, progress=False))) == EXIT_OK
    assert lab.index() == {} and not lab.osrc.requests and not lab.psrc.requests


def test_stop_at_window_end_then_resume_without_refetching(lab):
    data = os.urandom(1536 * KB)
    lab.add("t/big", data, peer=False)
    lab.osrc.modes["t/big"], lab.osrc.slow_s = "slow", 0.1  # each 512 KiB part takes ~0.8 s
    f = lab.file("t/big", data, peer=False)
    slow = msgspec.structs.replace(FAST, part_bytes=512 * KB, parts_per_file=3)
    cfg = FillConfig(transfer=slow, origin=OriginConfig(verify_catalog=False))
    assert lab.fill([f], cfg, max_run_s=0.6) == EXIT_INCOMPLETE
    assert "t/big" not in lab.index() and not (lab.root / "oca/hdd0/t/big").exists()
    disk = str(lab.oca.disks[1].path)
    done = lab.state_dir.load_journal("t/big", len(data), h(data), disk)
    finished = sum(e - s for s, e in done)
    assert 0 < finished < len(data)
    lab.osrc.modes["t/big"] = "ok"
    before = lab.osrc.sent["t/big"]
    assert lab.fill([f], cfg) == EXIT_OK
    assert lab.osrc.sent["t/big"] - before == len(data) - finished  # only the missing bytes
    assert lab.index()["t/big"].xxh3 == h(data)
    assert value(lab.metrics(), "fill_resumed_bytes_total") == finished
    assert not list(lab.state_dir.partials.iterdir())


def test_resumed_bytes_count_once_when_a_filling_peer_is_waited_for(lab):
    """Each "not yet" from a peer filling the file ends an attempt; the partial's bytes are reused once."""
    data = os.urandom(1536 * KB)
    lab.add("t/big", data)
    lab.osrc.modes["t/big"], lab.osrc.slow_s = "slow", 0.1
    slow = msgspec.structs.replace(FAST, part_bytes=512 * KB, parts_per_file=3)
    cfg = FillConfig(transfer=slow, origin=OriginConfig(verify_catalog=False))
    assert lab.fill([lab.file("t/big", data, peer=False)], cfg, max_run_s=0.6) == EXIT_INCOMPLETE
    finished = sum(e - s for s, e in lab.state_dir.load_journal("t/big", len(data), h(data), str(lab.oca.disks[1].path)))
    assert 0 < finished < len(data)
    lab.psrc.not_yet["t/big"] = 2
    assert lab.fill([_pending(lab, "t/big", data, 5.0)], cfg) == EXIT_OK
    assert lab.index()["t/big"].xxh3 == h(data)
    m = lab.metrics()
    assert value(m, "fill_source_waits_total", kind="peer") >= 1  # more than one attempt in this run
    assert value(m, "fill_resumed_bytes_total") == finished


def test_yields_to_serving_load(lab):
    data = os.urandom(256 * KB)
    lab.add("t/y", data, peer=False)
    lab.osrc.health = {"egress_bps": 9_000_000_000, "capacity_bps": 10_000_000_000}  # serving at 90%
    cap = 80_000_000
    cfg = FillConfig(transfer=msgspec.structs.replace(FAST, rate_limit_bps=cap),
                     origin=OriginConfig(verify_catalog=False))
    assert lab.fill([lab.file("t/y", data, peer=False)], cfg, admin_url=lab.origin.url) == EXIT_OK
    # 90% load, busy above 50%, floor 10%: 0.1 + 0.9 x (1 - 0.4 / 0.5) = 28% of the cap.
    assert value(lab.metrics(), "fill_rate_limit_bits_per_second") == int(cap * 0.28)
