"""One store, several writer processes (the supervisor, `oca fill`, `oca put`, pull-through in each
worker): keys busy, space booked and temp files owned across processes, through the index's `writes`
table and the placement flock. Every other writer here is a real process (a `Peer` driven over a
pipe), on real disks: small tmpfs mounts where space must run out."""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from oca.config import Tier, parse
from oca.store import NoSpace, Store, WriteInProgress
from oca.store.index import WriteRow
from oca.store.pending import boot_id, owner_alive, process_start
from oca.store.store import space_needed

KiB = 1024
FILE = 200 * KiB
TIMEOUT_S = 30.0

PEER = textwrap.dedent("""
    import json, sys
    from oca.config import Tier, parse
    from oca.store import Store, StoreError

    store = Store.open(parse(json.loads(sys.argv[1])))
    writes = {}

    def run(cmd, args):
        if cmd in ("begin", "resume"):
            key, size, tier = args
            w = store.begin_write(key, int(size), None if tier == "-" else Tier(tier), resume=cmd == "resume")
            writes[key] = w
            return w.path
        if cmd == "write":
            key, n = args
            return writes[key].write(b"w" * int(n))
        if cmd == "commit":
            return writes.pop(args[0]).commit().disk
        if cmd == "abort":
            return writes.pop(args[0]).abort()
        if cmd == "move":
            key, tier, rate = args
            return store.move(key, Tier(tier), float(rate)).disk
        raise ValueError(cmd)

    print("ready", flush=True)
    for line in sys.stdin:
        cmd, *args = line.split()
        try:
            out = f"ok {run(cmd, args)}"
        except StoreError as exc:
            out = f"err {type(exc).__name__}"
        print(out, flush=True)
""")


class Peer:
    """Another process with its own Store over the same config, doing what it is told, one line at
    a time."""

    def __init__(self, mapping: dict) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", PEER, json.dumps(mapping)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.reply() == "ready"

    def send(self, *words: object) -> None:
        self.proc.stdin.write((" ".join(map(str, words)) + "\n").encode())
        self.proc.stdin.flush()

    def reply(self) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], TIMEOUT_S)
        assert ready, "peer did not answer"
        line = self.proc.stdout.readline().decode().strip()
        assert line, f"peer exited ({self.proc.poll()})"
        return line

    def __call__(self, *words: object) -> str:
        self.send(*words)
        return self.reply()

    def kill(self, wait: bool = True) -> None:
        self.proc.kill()
        if wait:
            self.proc.wait(TIMEOUT_S)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def mapping_of(tmp_path: Path, disks: dict[str, list[Path]]) -> dict:
    for paths in disks.values():
        for p in paths:
            p.mkdir(parents=True, exist_ok=True)
    return {
        "appliance": {"id": "test"},
        "tokens": {"key_file": str(tmp_path / "keys.toml")},
        "store": {"index": str(tmp_path / "state" / "index.db"), "popularity_half_life_s": 100.0},
        "tiers": {tier: [{"path": str(p)} for p in paths] for tier, paths in disks.items()},
    }


# tiny_fs (small tmpfs mounts as disks) comes from tests/oca/conftest.py.


@pytest.fixture
def peers():
    started: list[Peer] = []

    def start(mapping: dict) -> Peer:
        started.append(Peer(mapping))
        return started[-1]

    yield start
    for peer in started:
        peer.close()


@pytest.fixture
def two_disks(tmp_path):
    mapping = mapping_of(tmp_path, {"ssd": [tmp_path / "ssd"], "hdd": [tmp_path / "hdd"]})
    store = Store.open(parse(mapping))
    yield store, mapping
    store.close()


def put(store: Store, key: str, data: bytes, tier: Tier | None = None):
    with store.begin_write(key, len(data), tier) as w:
        w.write(data)
        return w.commit()


def killed_writer(two_disks, peers, begin: str, written: int = 0) -> tuple[Store, Peer, Path]:
    """Another process that began writing 1000 bytes of "k" to the HDD (`begin`: "begin" or
    "resume"), wrote `written` of them and was killed; with the store and the temp (or .part) path."""
    store, mapping = two_disks
    peer = peers(mapping)
    temp = Path(peer(begin, "k", 1000, "hdd")[3:])
    if written:
        assert peer("write", "k", written) == f"ok {written}"
    peer.kill()
    return store, peer, temp


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# --- one key, one writer -------------------------------------------------------------------------

def test_a_key_written_by_another_process_is_refused(two_disks, peers):
    store, mapping = two_disks
    a, b = peers(mapping), peers(mapping)
    seq = store.index.current_seq()
    assert a("begin", "titles/k.mp4", 10, "ssd").startswith("ok ")
    assert b("begin", "titles/k.mp4", 10, "hdd") == "err WriteInProgress"
    with pytest.raises(WriteInProgress):
        store.begin_write("titles/k.mp4", 10)
    with pytest.raises(WriteInProgress):
        store.begin_write("titles/k.mp4", 10, resume=True)
    assert store.busy_keys() == {"titles/k.mp4"}
    assert a("abort", "titles/k.mp4") == "ok None"
    assert store.busy_keys() == set() and store.index.writes() == []
    assert b("begin", "titles/k.mp4", 4, "hdd").startswith("ok ")
    assert b("write", "titles/k.mp4", 4) == "ok 4"
    assert b("commit", "titles/k.mp4") == f"ok {mapping['tiers']['hdd'][0]['path']}"
    assert store.index.get("titles/k.mp4").size == 4
    # Writes in flight never reach the change log the workers follow: only the commit did.
    assert set(store.index.changes_since(seq)[0]) == {"titles/k.mp4"}


def test_threads_of_one_process_share_the_rule(two_disks):
    store, _ = two_disks
    other = Store.open(store.config)  # a second Store in this process: the row, not memory, decides
    try:
        with store.begin_write("k", 1):
            with pytest.raises(WriteInProgress):
                other.begin_write("k", 1)
        with other.begin_write("k", 1) as w:
            w.write(b"x")
            w.commit()
    finally:
        other.close()


def test_a_move_in_another_process_makes_the_key_busy(two_disks, peers):
    store, mapping = two_disks
    data = os.urandom(FILE)
    put(store, "m", data, Tier.HDD)
    mover = peers(mapping)
    mover.send("move", "m", "ssd", FILE / 1.0)  # paced: about a second
    wait_for(lambda: store.is_busy("m"), "the move to start")
    with pytest.raises(WriteInProgress):
        store.begin_write("m", 5)
    with pytest.raises(WriteInProgress):
        store.move("m", Tier.SSD)
    with pytest.raises(WriteInProgress):  # removed now, the move would publish it again
        store.remove("m")
    assert mover.reply() == f"ok {mapping['tiers']['ssd'][0]['path']}"
    assert not store.is_busy("m") and store.path_of(store.index.get("m")).read_bytes() == data
    assert store.remove("m") and store.index.get("m") is None  # once the move is done, it goes


# --- dead writers --------------------------------------------------------------------------------

def test_a_killed_writer_is_reaped_and_its_temp_cleaned(two_disks, peers):
    store, peer, temp = killed_writer(two_disks, peers, "begin", written=500)
    [row] = store.index.writes()
    assert row.pid == peer.proc.pid and not owner_alive(row)
    assert store.clean_tmp(time.time()) == 1  # young, yet its owner is dead: it goes at once
    assert not temp.exists() and store.index.writes() == [] and store.busy_keys() == set()
    assert put(store, "k", b"again").size == 5


def test_a_killed_writer_does_not_block_the_key(two_disks, peers):
    store, _, temp = killed_writer(two_disks, peers, "begin")
    with store.begin_write("k", 3, Tier.SSD) as w:  # the stale row is reaped on the way
        assert not temp.exists()  # a .tmp nobody can finish
        w.write(b"new")
        w.commit()
    assert store.index.writes() == [] and store.index.get("k").tier is Tier.SSD


def test_a_killed_resumable_writer_leaves_its_part_to_resume(two_disks, peers):
    store, _, part = killed_writer(two_disks, peers, "resume", written=600)
    assert store.clean_tmp(time.time()) == 0 and part.exists()  # a .part is worth resuming
    with store.begin_write("k", 1000, resume=True) as w:
        assert w.path == part and w.offset == 600
        w.write(b"w" * 400)
        w.commit()
    assert store.index.get("k").size == 1000 and store.index.writes() == []


def test_a_zombie_owns_nothing(two_disks, peers):
    """A writer killed but not yet waited for by its parent is a zombie: dead, though its pid stays."""
    store, mapping = two_disks
    peer = peers(mapping)
    peer("begin", "k", 10, "hdd")
    peer.kill(wait=False)
    wait_for(lambda: process_start(peer.proc.pid) is None, "the zombie")
    assert os.path.exists(f"/proc/{peer.proc.pid}")
    with store.begin_write("k", 1) as w:
        w.write(b"x")
        w.commit()
    peer.proc.wait(TIMEOUT_S)


def test_a_recycled_pid_is_not_the_owner(two_disks):
    """A row whose pid now belongs to another process (here: this one) started at another time, or
    in another boot (start times count from boot, so pid and start time may both come back)."""
    store, _ = two_disks
    me = os.getpid()
    mine = WriteRow("k", str(store.config.disks[0].path), 4096, "x.1.y.tmp", me, process_start(me),
                    boot_id(), "t0", 0.0)
    assert owner_alive(mine)
    assert not owner_alive(mine._replace(pid_start=process_start(me) - 1))
    assert not owner_alive(mine._replace(boot="00000000-0000-0000-0000-000000000000"))
    assert store.index.add_write(mine._replace(pid_start=process_start(me) - 1))
    assert put(store, "k", b"mine").size == 4
    assert store.index.add_write(mine._replace(key="j", boot="another boot"))
    assert put(store, "j", b"mine").size == 4 and store.index.writes() == []


# --- space ---------------------------------------------------------------------------------------

def test_another_process_booking_shrinks_free_space(tmp_path, tiny_fs, peers):
    disk = tiny_fs("ssd", 1024 * KiB)
    mapping = mapping_of(tmp_path, {"ssd": [disk]})
    store = Store.open(parse(mapping))
    try:
        free = store.disk_spaces()[0].free_bytes
        peer = peers(mapping)
        assert peer("begin", "big", 500 * KiB, "ssd").startswith("ok ")
        booked = free - store.disk_spaces()[0].free_bytes
        assert booked == space_needed(500 * KiB)
        with pytest.raises(NoSpace):  # fits the disk, not the disk less the other's booking
            store.begin_write("small", 500 * KiB)
        assert peer("write", "big", 300 * KiB) == f"ok {300 * KiB}"
        # Written bytes count in the disk's free blocks and leave the booking: not counted twice.
        assert abs(free - store.disk_spaces()[0].free_bytes - booked) <= 8 * KiB
        assert peer("abort", "big") == "ok None"
        assert store.disk_spaces()[0].free_bytes == free
        put(store, "small", os.urandom(500 * KiB))
    finally:
        store.close()


def test_racing_processes_never_book_the_same_room(tmp_path, tiny_fs, peers):
    """Four processes begin a 300 KiB write at once on a 1 MiB disk that holds two: two get the
    room, two get NoSpace, and neither winner then runs out of space mid-write."""
    disk = tiny_fs("hdd", 1024 * KiB)
    mapping = mapping_of(tmp_path, {"hdd": [disk]})
    Store.open(parse(mapping)).close()  # the schema, before the race
    racers = [peers(mapping) for _ in range(4)]
    for i, racer in enumerate(racers):
        racer.send("begin", f"k{i}", 300 * KiB, "hdd")
    answers = [r.reply() for r in racers]
    winners = [i for i, a in enumerate(answers) if a.startswith("ok ")]
    assert len(winners) == 2 and sorted(a for a in answers if a.startswith("err")) == ["err NoSpace"] * 2
    for i in winners:
        assert racers[i]("write", f"k{i}", 300 * KiB) == f"ok {300 * KiB}"
        assert racers[i]("commit", f"k{i}") == f"ok {disk}"


# --- other processes' files ----------------------------------------------------------------------

def test_clean_tmp_never_takes_another_process_live_temp(two_disks, peers):
    store, mapping = two_disks
    peer = peers(mapping)
    temp = Path(peer("begin", "k", 6, "hdd")[3:])
    part = Path(peer("resume", "p", 6, "hdd")[3:])
    assert peer("write", "k", 3) == "ok 3"
    old = time.time() - 30 * 86400
    for f in (temp, part):
        os.utime(f, (old, old))  # as stale-looking as a file gets
    orphan = temp.with_name("orphan.1.x.tmp")
    orphan.write_bytes(b"")
    os.utime(orphan, (old, old))
    assert store.clean_tmp(time.time()) == 1  # the orphan only
    assert temp.exists() and part.exists() and not orphan.exists()
    assert peer("write", "k", 3) == "ok 3"
    assert peer("commit", "k").startswith("ok ")
    assert store.index.get("k").size == 6


def test_eviction_spares_keys_other_processes_write_or_move(tmp_path, tiny_fs, peers):
    ssd, hdd = tiny_fs("ssd", 1024 * KiB), tiny_fs("hdd", 1024 * KiB)
    mapping = mapping_of(tmp_path, {"ssd": [ssd], "hdd": [hdd]})
    store = Store.open(parse(mapping))
    try:
        for key in ("moving", "rewritten", "warm", "hot"):
            put(store, key, os.urandom(FILE), Tier.HDD)
        store.index.add_hits({"warm": (2, 2 * FILE), "hot": (9, 9 * FILE)}, time.time(), 100.0)
        writer, mover = peers(mapping), peers(mapping)
        assert writer("begin", "rewritten", FILE, "ssd").startswith("ok ")  # the coldest two are busy
        mover.send("move", "moving", "ssd", FILE / 1.5)
        wait_for(lambda: store.is_busy("moving"), "the move to start")
        with store.begin_write("new", FILE, Tier.HDD, fallback=False) as w:  # the HDD is full
            w.write(os.urandom(FILE))
            w.commit()
        assert store.index.get("warm") is None and not (hdd / "warm").exists()
        assert mover.reply() == f"ok {ssd}"
        assert writer("write", "rewritten", FILE) == f"ok {FILE}"
        assert writer("commit", "rewritten") == f"ok {ssd}"
        assert {e.key: e.tier for e in store.index.all()} == {
            "moving": Tier.SSD, "rewritten": Tier.SSD, "hot": Tier.HDD, "new": Tier.HDD}
    finally:
        store.close()
