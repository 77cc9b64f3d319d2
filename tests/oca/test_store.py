"""The store's write path on real files: atomic publish, hashes, resume, eviction, moves, symlinks."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import xxhash

from oca.config import Tier, parse
from oca.store import (HashMismatch, KeyConflict, NoSpace, NotFound, SizeMismatch, Store, StoreError,
                       WriteInProgress)
from oca.store.store import space_needed

KiB = 1024


def make_config(tmp_path: Path, disks: dict[str, list[Path]], eviction: str = "lowest-popularity"):
    for paths in disks.values():
        for p in paths:
            p.mkdir(parents=True, exist_ok=True)
    return parse({
        "appliance": {"id": "test"},
        "tokens": {"key_file": str(tmp_path / "keys.toml")},
        "store": {"index": str(tmp_path / "state" / "index.db"), "eviction": eviction,
                  "popularity_half_life_s": 100.0},
        "tiers": {tier: [{"path": str(p)} for p in paths] for tier, paths in disks.items()},
    })


# tiny_fs (small tmpfs mounts as disks, for a disk that fills up) comes from tests/oca/conftest.py.


@pytest.fixture
def store(tmp_path):
    s = Store.open(make_config(tmp_path, {"ssd": [tmp_path / "ssd"], "hdd": [tmp_path / "hdd"]}))
    yield s
    s.close()


def xxh(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def put(store: Store, key: str, data: bytes, tier: Tier | None = None):
    with store.begin_write(key, len(data), tier) as w:
        w.write(data)
        return w.commit()


# --- atomic publish ------------------------------------------------------------------------------

def test_write_commit_publishes_and_indexes(store, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    with store.begin_write("titles/t1/720p.mp4", len(data), Tier.SSD) as w:
        final = tmp_path / "ssd" / "titles/t1/720p.mp4"
        for i in range(0, len(data), 100_000):
            w.write(data[i:i + 100_000])
            assert not final.exists() and store.index.get("titles/t1/720p.mp4") is None
        assert w.path.parent == tmp_path / "ssd" / ".tmp" and w.path.exists()
        entry = w.commit(expected_xxh3=xxh(data))
    assert final.read_bytes() == data
    assert entry.xxh3 == xxh(data) and entry.size == len(data) and entry.tier is Tier.SSD
    assert entry.disk == str(tmp_path / "ssd") and entry.mtime == final.stat().st_mtime
    assert store.index.get(entry.key) == entry
    assert store.path_of(entry) == final
    assert os.listdir(tmp_path / "ssd" / ".tmp") == []
    fd = store.open_entry(entry)
    try:
        assert os.pread(fd, 10, 0) == data[:10]
    finally:
        os.close(fd)


def test_killed_writer_leaves_nothing_visible(store, tmp_path):
    """A real SIGKILL mid-write: no entry, nothing at the final path, only a temp that clean_tmp takes
    at once (the write's row names a dead owner, so nobody can finish it)."""
    script = textwrap.dedent(f"""
        import os, signal
        from oca.config import Tier, parse
        from oca.store import Store
        store = Store.open(parse({_config_mapping(store)!r}))
        w = store.begin_write("titles/k.mp4", 1000, Tier.HDD)
        w.write(b"x" * 500)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -9
    assert store.index.get("titles/k.mp4") is None
    assert not (tmp_path / "hdd" / "titles" / "k.mp4").exists()
    temps = os.listdir(tmp_path / "hdd" / ".tmp")
    assert len(temps) == 1 and temps[0].endswith(".tmp")
    assert len(store.index.writes()) == 1  # its row outlived it...
    assert store.clean_tmp(time.time()) == 1  # ...and names a dead owner: young, yet taken
    assert os.listdir(tmp_path / "hdd" / ".tmp") == [] and store.index.writes() == []


def _config_mapping(store: Store) -> dict:
    c = store.config
    tiers: dict[str, list] = {}
    for d in c.disks:
        tiers.setdefault(d.tier.value, []).append({"path": str(d.path)})
    return {"appliance": {"id": "test"}, "tokens": {"key_file": str(c.tokens.key_file)},
            "store": {"index": str(c.store.index_path)}, "tiers": tiers}


def test_abandoned_write_is_never_published(store, tmp_path):
    w = store.begin_write("a/b", 10)
    w.write(b"12345")
    assert store.index.get("a/b") is None and not (tmp_path / "hdd" / "a" / "b").exists()
    w.abort()
    assert os.listdir(tmp_path / "hdd" / ".tmp") == []


def test_hash_mismatch_refused(store, tmp_path):
    with pytest.raises(HashMismatch) as info:
        with store.begin_write("k", 4) as w:
            w.write(b"abcd")
            w.commit(expected_xxh3="0" * 32)
    assert info.value.status_hint == 502
    assert store.index.get("k") is None and not (tmp_path / "hdd" / "k").exists()
    assert os.listdir(tmp_path / "hdd" / ".tmp") == []
    assert put(store, "k", b"abcd").size == 4  # the key is free again


@pytest.mark.parametrize("announced, data", [(10, b"short"), (3, b"too long")], ids=["short", "long"])
def test_size_mismatch_refused(store, announced, data):
    with pytest.raises(SizeMismatch):
        with store.begin_write("k", announced) as w:
            w.write(data)
            w.commit()
    assert store.index.get("k") is None


def test_exception_inside_with_aborts(store, tmp_path):
    with pytest.raises(RuntimeError):
        with store.begin_write("k", 3) as w:
            w.write(b"abc")
            raise RuntimeError("client went away")
    assert store.index.get("k") is None and os.listdir(tmp_path / "hdd" / ".tmp") == []


def test_forgotten_commit_does_not_publish(store):
    with store.begin_write("k", 3) as w:
        w.write(b"abc")
    assert store.index.get("k") is None


def test_same_key_twice_is_refused(store):
    with store.begin_write("k", 1):
        with pytest.raises(WriteInProgress):
            store.begin_write("k", 1)


def test_raw_fd_writes_are_hashed_at_commit(store):
    data = b"written with os.write" * 1000
    with store.begin_write("raw", len(data)) as w:
        os.write(w.fileno(), data)
        assert w.commit(expected_xxh3=xxh(data)).xxh3 == xxh(data)


def test_overwrite_on_another_disk_unlinks_the_old_copy(store, tmp_path):
    put(store, "k", b"old", Tier.HDD)
    entry = put(store, "k", b"newer", Tier.SSD)
    assert entry.disk == str(tmp_path / "ssd") and store.index.count() == 1
    assert not (tmp_path / "hdd" / "k").exists() and (tmp_path / "ssd" / "k").read_bytes() == b"newer"


@pytest.mark.parametrize("first, second", [("a/b", "a"), ("a", "a/b")], ids=["dir-in-the-way", "file-in-the-way"])
def test_key_colliding_with_the_tree_is_refused(store, tmp_path, first, second):
    put(store, first, b"1", Tier.SSD)
    with pytest.raises(KeyConflict) as info:
        put(store, second, b"2", Tier.SSD)
    assert info.value.status_hint == 409 and store.index.get(second) is None
    assert os.listdir(tmp_path / "ssd" / ".tmp") == []


def test_put_file_and_remove(store, tmp_path):
    src = tmp_path / "src.mp4"
    src.write_bytes(os.urandom(2_500_000))
    entry = store.put_file(src, "titles/x/1080p.mp4")
    assert store.path_of(entry).read_bytes() == src.read_bytes() and entry.xxh3 == xxh(src.read_bytes())
    store.path_of(entry).unlink()  # already gone on disk: remove still drops the entry
    assert store.remove("titles/x/1080p.mp4") is True
    assert store.remove("titles/x/1080p.mp4") is False and store.index.count() == 0


# --- resume --------------------------------------------------------------------------------------

def test_resume_continues_the_partial(store, tmp_path):
    data = os.urandom(2 * 1024 * 1024 + 5)
    w = store.begin_write("titles/r.mp4", len(data), resume=True)
    assert w.offset == 0 and w.path.name.endswith(".part")
    w.write(data[:1_000_000])
    w.abort()  # a failed transfer: the partial stays
    assert w.path.exists() and store.index.get("titles/r.mp4") is None
    w2 = store.begin_write("titles/r.mp4", len(data), resume=True)
    assert w2.offset == 1_000_000 and w2.path == w.path
    w2.write(data[1_000_000:])
    entry = w2.commit(expected_xxh3=xxh(data))
    assert store.path_of(entry).read_bytes() == data and not w.path.exists()


def test_resume_lock_is_held_across_processes(store, tmp_path):
    """A second Store (as another process would) can't share the .part: the key's row in the index
    refuses it, and the flock on the .part stands behind that."""
    other = Store.open(store.config)
    try:
        with store.begin_write("k", 10, resume=True):
            with pytest.raises(WriteInProgress):
                other.begin_write("k", 10, resume=True)
    finally:
        other.close()


def test_resume_of_a_longer_partial_starts_over(store):
    w = store.begin_write("k", 10, resume=True)
    w.write(b"0123456789")
    w.abort()
    w = store.begin_write("k", 4, resume=True)
    assert w.offset == 0
    w.write(b"abcd")
    assert w.commit(expected_xxh3=xxh(b"abcd")).size == 4


def test_hash_mismatch_drops_the_partial_too(store):
    w = store.begin_write("k", 4, resume=True)
    w.write(b"abcd")
    with pytest.raises(HashMismatch):
        w.commit(expected_xxh3="f" * 32)
    assert not w.path.exists()


# --- symlinks ------------------------------------------------------------------------------------

def test_symlinks_inside_a_disk_are_never_followed(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    ssd = tmp_path / "ssd"
    (ssd / "titles").symlink_to(outside)
    (ssd / "link.mp4").symlink_to(outside / "secret")
    decoy = put(store, "decoy", b"secret", Tier.SSD)
    for key in ("titles/secret", "link.mp4"):  # as if the index had been fooled
        fake = decoy._replace(key=key)
        with pytest.raises(NotFound):
            store.path_of(fake)
        with pytest.raises(NotFound):
            store.open_entry(fake)
    with pytest.raises(StoreError):  # publishing through the symlinked directory is refused
        put(store, "titles/new", b"data", Tier.SSD)
    assert sorted(os.listdir(outside)) == ["secret"]
    assert store.index.get("titles/new") is None


def test_open_entry_notices_a_changed_file(store):
    entry = put(store, "k", b"abc")
    store.path_of(entry).write_bytes(b"abcdef")
    with pytest.raises(NotFound):
        store.open_entry(entry)


# --- eviction (real small filesystems) -----------------------------------------------------------

FILE = 200 * KiB


def test_eviction_lowest_popularity_respects_pins_and_busy(tmp_path, tiny_fs):
    disk = tiny_fs("ssd", 1200 * KiB)  # four files, then room for one more write but not two
    store = Store.open(make_config(tmp_path, {"ssd": [disk]}))
    try:
        for name in ("hot", "warm", "cold", "pinned"):
            put(store, name, os.urandom(FILE))
        now = time.time()
        store.index.add_hits({"hot": (9, 9 * FILE), "warm": (3, 3 * FILE), "cold": (1, FILE)}, now, 100.0)
        store.index.set_pins(["pinned"])
        rewrite = store.begin_write("cold", FILE)  # an overwrite in flight makes "cold" busy
        assert space_needed(FILE) > store.disk_spaces()[0].free_bytes  # the reservation counts
        put(store, "new", os.urandom(FILE))
        keys = {e.key for e in store.index.all()}
        assert keys == {"hot", "cold", "pinned", "new"}  # "warm" went: least popular, not busy/pinned
        assert not (disk / "warm").exists()
        rewrite.abort()
    finally:
        store.close()


def test_eviction_lru(tmp_path, tiny_fs):
    disk = tiny_fs("hdd", 1024 * KiB)
    store = Store.open(make_config(tmp_path, {"hdd": [disk]}, eviction="lru"))
    try:
        for name in ("a", "b", "c", "d"):
            put(store, name, os.urandom(FILE))
        store.index.add_hits({"a": (1, 10)}, time.time() + 10, 100.0)
        store.index.add_hits({"b": (100, 100 * FILE)}, time.time() + 5, 100.0)
        put(store, "e", os.urandom(FILE))
        assert {e.key for e in store.index.all()} == {"a", "b", "d", "e"}  # c: oldest, never read
    finally:
        store.close()


def test_no_space_when_everything_is_pinned(tmp_path, tiny_fs):
    disk = tiny_fs("ssd", 512 * KiB)
    store = Store.open(make_config(tmp_path, {"ssd": [disk]}))
    try:
        put(store, "p", os.urandom(FILE))
        store.index.set_pins(["p"])
        with pytest.raises(NoSpace) as info:
            store.begin_write("q", 400 * KiB)
        assert info.value.status_hint == 507 and store.index.get("p") is not None
    finally:
        store.close()


def test_full_preferred_tier_falls_back_before_evicting(tmp_path, tiny_fs):
    ssd = tiny_fs("ssd", 400 * KiB)
    store = Store.open(make_config(tmp_path, {"ssd": [ssd], "hdd": [tmp_path / "hdd"]}))
    try:
        put(store, "a", os.urandom(FILE), Tier.SSD)
        entry = put(store, "b", os.urandom(FILE), Tier.SSD)
        assert entry.tier is Tier.HDD and store.index.get("a").tier is Tier.SSD
    finally:
        store.close()


# --- move ----------------------------------------------------------------------------------------

def test_move_keeps_open_readers_and_updates_the_index(store, tmp_path):
    data = os.urandom(3 * 1024 * 1024)
    old = put(store, "titles/m.mp4", data, Tier.HDD)
    fd = store.open_entry(old)  # a response in flight
    try:
        new = store.move("titles/m.mp4", Tier.SSD)
        assert new.tier is Tier.SSD and new.disk == str(tmp_path / "ssd")
        assert (new.xxh3, new.size, new.mtime) == (old.xxh3, old.size, old.mtime)  # validators hold
        assert store.index.get(new.key) == new
        assert not (tmp_path / "hdd" / "titles" / "m.mp4").exists()
        assert os.pread(fd, len(data), 0) == data  # the unlinked original still reads whole
    finally:
        os.close(fd)
    assert store.path_of(new).read_bytes() == data
    assert store.move("titles/m.mp4", Tier.SSD) == new  # already there


def test_move_of_a_corrupt_original_is_refused(store, tmp_path):
    entry = put(store, "k", b"good bytes", Tier.HDD)
    (tmp_path / "hdd" / "k").write_bytes(b"evil bytes")  # same size, bit rot
    with pytest.raises(HashMismatch):
        store.move("k", Tier.SSD)
    assert store.index.get("k") == entry and not (tmp_path / "ssd" / "k").exists()


def test_move_of_unknown_key(store):
    with pytest.raises(NotFound):
        store.move("nope", Tier.SSD)
