"""Scanning disks into the index and disk health, on real directories and mounts."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import xxhash

from oca.config import Tier, dev_config, parse
from oca.store import DiskFailed, Store
from oca.store.scan import ScanResult


def make_config(tmp_path: Path, disks: dict[str, list[Path]]):
    for paths in disks.values():
        for p in paths:
            p.mkdir(parents=True, exist_ok=True)
    return parse({
        "appliance": {"id": "test"},
        "tokens": {"key_file": str(tmp_path / "keys.toml")},
        "store": {"index": str(tmp_path / "state" / "index.db")},
        "tiers": {tier: [{"path": str(p)} for p in paths] for tier, paths in disks.items()},
    })


def mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def store(tmp_path):
    s = Store.open(make_config(tmp_path, {"ssd": [tmp_path / "ssd"], "hdd": [tmp_path / "hdd"]}))
    yield s
    s.close()


def put(store: Store, key: str, data: bytes, tier: Tier):
    with store.begin_write(key, len(data), tier) as w:
        w.write(data)
        return w.commit()


# --- scan ----------------------------------------------------------------------------------------

def test_scan_indexes_dropped_files_and_ignores_the_rest(store, tmp_path):
    ssd = tmp_path / "ssd"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(b"secret")
    (ssd / "titles" / "t1").mkdir(parents=True)
    (ssd / "titles" / "t1" / "720p.mp4").write_bytes(b"a" * 1000)
    (ssd / "top.ts").write_bytes(b"b" * 10)
    (ssd / "leak.mp4").symlink_to(outside / "secret.mp4")  # symlink to a file outside
    (ssd / "leakdir").symlink_to(outside)  # symlink to a directory outside
    (ssd / "inside.mp4").symlink_to(ssd / "top.ts")  # even inside: a key is a file, not a link
    (ssd / "bad name.mp4").write_bytes(b"x")  # not a valid key
    (ssd / ".hidden").mkdir()
    (ssd / ".hidden" / "x.mp4").write_bytes(b"x")
    (ssd / ".tmp" / "abc.part").write_bytes(b"partial")
    os.mkfifo(ssd / "fifo")
    result = store.scan(ssd)
    assert result == ScanResult(added=2, removed=0, unchanged=0, skipped=5)
    entries = {e.key: e for e in store.index.all()}
    assert set(entries) == {"titles/t1/720p.mp4", "top.ts"}
    e = entries["titles/t1/720p.mp4"]
    assert (e.size, e.tier, e.disk) == (1000, Tier.SSD, str(ssd))
    assert e.xxh3 == xxhash.xxh3_128_hexdigest(b"a" * 1000)
    assert e.mtime == (ssd / "titles" / "t1" / "720p.mp4").stat().st_mtime
    assert store.scan(ssd) == ScanResult(added=0, removed=0, unchanged=2, skipped=5)


def test_scan_drops_vanished_and_rehashes_changed(store, tmp_path):
    ssd = tmp_path / "ssd"
    put(store, "a", b"aaa", Tier.SSD)
    put(store, "b", b"bbb", Tier.SSD)
    put(store, "h", b"hhh", Tier.HDD)
    (ssd / "a").unlink()
    (ssd / "b").write_bytes(b"bbbb")
    result = store.scan(ssd)
    assert (result.added, result.removed) == (1, 1)
    assert store.index.get("a") is None and store.index.get("b").size == 4
    assert store.index.get("h") is not None  # another disk's entry is not this scan's business


def test_scan_leaves_a_key_indexed_on_another_disk(store, tmp_path):
    put(store, "dup", b"on hdd", Tier.HDD)
    (tmp_path / "ssd" / "dup").write_bytes(b"stray copy")
    assert store.scan(tmp_path / "ssd").skipped == 1
    assert store.index.get("dup").tier is Tier.HDD


def test_scan_a_large_tree_in_batches(store, tmp_path):
    ssd = tmp_path / "ssd"
    for i in range(30):
        (ssd / f"t{i}").mkdir()
        for j in range(100):
            (ssd / f"t{i}" / f"r{j}.ts").write_bytes(b"%d" % j)
    assert store.scan(ssd).added == 3000 and store.index.count() == 3000


def test_dev_mode_layout(tmp_path):
    directory = tmp_path / "dev"
    directory.mkdir()
    (directory / "movie.mp4").write_bytes(b"m" * 100)
    store = Store.open(dev_config(directory))
    try:
        assert (directory / ".oca" / "index.db").exists() and (directory / ".tmp").is_dir()
        assert store.scan(directory).added == 1  # .oca and .tmp are never keys
        assert [e.key for e in store.index.all()] == ["movie.mp4"]
    finally:
        store.close()


# --- health --------------------------------------------------------------------------------------

def test_healthy_report(store, tmp_path):
    put(store, "a", b"12345", Tier.SSD)
    put(store, "b", b"123", Tier.SSD)
    report = {Path(h.path).name: h for h in store.check_disks()}
    ssd = report["ssd"]
    assert ssd.ok and ssd.reason == "" and ssd.tier is Tier.SSD
    assert (ssd.files, ssd.used_bytes) == (2, 8)
    assert ssd.total_bytes > ssd.free_bytes > 0
    assert report["hdd"].ok and report["hdd"].files == 0
    assert os.listdir(tmp_path / "ssd" / ".tmp") == []  # the probe cleaned up


def test_vanished_disk_fails_and_comes_back(store, tmp_path):
    ssd, away = tmp_path / "ssd", tmp_path / "ssd-away"
    put(store, "a", b"aaa", Tier.SSD)
    put(store, "h", b"hhh", Tier.HDD)
    ssd.rename(away)  # the disk vanishes (what a pulled drive looks like to a path lookup)
    report = {Path(h.path).name: h for h in store.check_disks()}
    assert not report["ssd"].ok and "missing" in report["ssd"].reason
    assert store.index.get("a") is None and store.index.get("h") is not None
    assert store.index.disk_states()[str(ssd)].failed
    assert put(store, "new", b"n", Tier.SSD).tier is Tier.HDD  # a failed disk takes no writes
    assert not ssd.exists()  # ... and its mount point is not recreated
    away.rename(ssd)
    report = {Path(h.path).name: h for h in store.check_disks()}
    assert report["ssd"].ok and report["ssd"].files == 1
    assert store.index.get("a").disk == str(ssd)  # scanned back in
    assert not store.index.disk_states()[str(ssd)].failed


def test_recovery_scan_reuses_hashes_of_unchanged_files(store, tmp_path):
    ssd = str(tmp_path / "ssd")
    same = put(store, "same", b"s" * 100, Tier.SSD)
    put(store, "changed", b"c" * 100, Tier.SSD)
    store.index.mark_disk_failed(ssd, "EIO")
    (tmp_path / "ssd" / "changed").write_bytes(b"C" * 50)
    (tmp_path / "ssd" / "same").write_bytes(b"X" * 100)  # same size...
    os.utime(tmp_path / "ssd" / "same", (same.mtime, same.mtime))  # ...and mtime: trusted as is
    store.index.mark_disk_ok(ssd)
    result = store.scan(ssd)
    assert (result.added, result.restored) == (2, 1)
    assert store.index.get("same").xxh3 == same.xxh3  # reused, not re-read
    assert store.index.get("changed").xxh3 == xxhash.xxh3_128_hexdigest(b"C" * 50)
    assert store.index.parked_on(ssd) == {}


def test_unwritable_disk_fails(store, tmp_path):
    """Simulated: root ignores permission bits, so chmod proves nothing. Replacing .tmp with a regular
    file makes the write probe's create fail (ENOTDIR), as any write failure would."""
    tmp = tmp_path / "ssd" / ".tmp"
    put(store, "a", b"aaa", Tier.SSD)
    tmp.rmdir()
    tmp.write_bytes(b"")
    report = {Path(h.path).name: h for h in store.check_disks()}
    assert not report["ssd"].ok and "directory" in report["ssd"].reason.lower()
    assert store.index.get("a") is None
    tmp.unlink()
    assert all(h.ok for h in store.check_disks()) and store.index.get("a") is not None


def test_read_only_remount_fails_the_disk(store, tmp_path):
    """Real: a read-only bind mount over the disk, as `mount -o remount,ro` after errors=remount-ro."""
    ssd = tmp_path / "ssd"
    put(store, "a", b"aaa", Tier.SSD)
    if not mount("--bind", "-o", "ro", str(ssd), str(ssd)):
        pytest.skip("cannot bind-mount read-only (needs root)")
    try:
        report = {Path(h.path).name: h for h in store.check_disks()}
        assert not report["ssd"].ok and report["ssd"].reason == "read-only filesystem"
        assert store.index.get("a") is None
    finally:
        umount(ssd)
    assert all(h.ok for h in store.check_disks()) and store.index.get("a") is not None


def test_unmounted_disk_fails(tmp_path):
    """Real: the disk is a tmpfs mount; unmounting leaves an empty directory on the parent
    filesystem, which must not be mistaken for an empty disk."""
    disk = tmp_path / "hdd"
    disk.mkdir()
    if not mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)):
        pytest.skip("cannot mount a tmpfs (needs root)")
    store = Store.open(make_config(tmp_path, {"hdd": [disk]}))
    try:
        put(store, "a", b"aaa", Tier.HDD)
        assert all(h.ok for h in store.check_disks())
        umount(disk)
        [health] = store.check_disks()
        assert not health.ok and health.reason == "no longer mounted" and store.index.count() == 0
        with pytest.raises(DiskFailed):
            put(store, "b", b"b", Tier.HDD)
        assert os.listdir(disk) == []  # nothing written to the parent filesystem
    finally:
        umount(disk)
        store.close()


def test_worker_reported_failure_stays_until_a_probe_passes(store, tmp_path):
    put(store, "a", b"aaa", Tier.SSD)
    store.index.mark_disk_failed(str(tmp_path / "ssd"), "EIO from sendfile")  # as a worker would
    assert store.index.get("a") is None
    assert all(h.ok for h in store.check_disks())  # the probe passes: back, and scanned in
    assert store.index.get("a") is not None


def test_clean_tmp_keeps_live_writes_and_young_parts(store, tmp_path):
    tmp = tmp_path / "hdd" / ".tmp"
    w = store.begin_write("live", 10)
    (tmp / "dead.1.x.tmp").write_bytes(b"")
    (tmp / "young.part").write_bytes(b"")
    old = time.time() - 10_000
    os.utime(w.path, (old, old))
    os.utime(tmp / "dead.1.x.tmp", (old, old))
    os.utime(tmp / "young.part", (old, old))
    assert store.clean_tmp(time.time()) == 1
    assert sorted(os.listdir(tmp)) == sorted([w.path.name, "young.part"])
    w.abort()
