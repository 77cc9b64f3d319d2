"""The tier mover on real disks: an SSD tmpfs (so it can fill up) and an HDD directory."""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from oca.config import Tier, parse
from oca.core.placement import Move
from oca.store import Store
from oca.store.mover import run_mover_once

KiB = 1024
FILE = 200 * KiB
HALF_LIFE = 100.0


@pytest.fixture
def ssd(tmp_path):
    path = tmp_path / "ssd"
    path.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1024k", "tmpfs", str(path)],
                            capture_output=True)
    if result.returncode != 0:
        pytest.skip("cannot mount a tmpfs (needs root)")
    yield path
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def store(tmp_path, ssd):
    (tmp_path / "hdd").mkdir()
    config = parse({
        "appliance": {"id": "test"},
        "tokens": {"key_file": str(tmp_path / "keys.toml")},
        "store": {"index": str(tmp_path / "state" / "index.db"), "popularity_half_life_s": HALF_LIFE},
        "tiers": {"ssd": [{"path": str(ssd)}], "hdd": [{"path": str(tmp_path / "hdd")}]},
        "mover": {"interval_s": 0.1, "io_budget_bps": 50_000_000},
    })
    s = Store.open(config)
    yield s
    s.close()


def put(store: Store, key: str, tier: Tier) -> bytes:
    data = os.urandom(FILE)
    with store.begin_write(key, len(data), tier) as w:
        w.write(data)
        w.commit()
    return data


def serve(store: Store, now: float, **heats: float) -> None:
    """Record hits worth `heat` full reads of each file."""
    store.index.add_hits({k: (int(h) or 1, int(h * FILE)) for k, h in heats.items()}, now, HALF_LIFE)


def tiers(store: Store) -> dict[str, Tier]:
    return {e.key: e.tier for e in store.index.all()}


def test_promotes_hottest_within_budget(store, tmp_path):
    data = {k: put(store, k, Tier.HDD) for k in ("a", "b", "c")}
    now = time.time()
    serve(store, now, a=10, b=5)
    moves = run_mover_once(store, now, budget_bytes=FILE)  # room for one copy only
    assert moves == [Move("a", Tier.HDD, Tier.SSD, FILE)]
    assert tiers(store) == {"a": Tier.SSD, "b": Tier.HDD, "c": Tier.HDD}
    moves = run_mover_once(store, now, budget_bytes=10 * FILE)
    assert moves == [Move("b", Tier.HDD, Tier.SSD, FILE)]  # c was never served: stays
    for key in ("a", "b"):
        entry = store.index.get(key)
        assert store.path_of(entry).read_bytes() == data[key]
        assert not (tmp_path / "hdd" / key).exists()


def test_demotes_coldest_for_a_clearly_hotter_file(store):
    for key in ("s1", "s2", "s3", "s4"):
        put(store, key, Tier.SSD)  # 800 KiB of a 1 MiB SSD: over the 0.9 high water with one more
    put(store, "h", Tier.HDD)
    now = time.time()
    serve(store, now, s1=2, s2=3, s3=4, s4=0.5, h=10)
    moves = run_mover_once(store, now, budget_bytes=10 * FILE)
    assert moves == [Move("s4", Tier.SSD, Tier.HDD, FILE), Move("h", Tier.HDD, Tier.SSD, FILE)]
    assert tiers(store) == {"s1": Tier.SSD, "s2": Tier.SSD, "s3": Tier.SSD, "s4": Tier.HDD, "h": Tier.SSD}
    assert run_mover_once(store, now, budget_bytes=10 * FILE) == []  # settled: no ping-pong


def test_near_equal_heat_does_not_swap(store):
    for key in ("s1", "s2", "s3", "s4"):
        put(store, key, Tier.SSD)
    put(store, "h", Tier.HDD)
    now = time.time()
    serve(store, now, s1=4, s2=4, s3=4, s4=4, h=4.5)
    assert run_mover_once(store, now, budget_bytes=10 * FILE) == []


def test_mover_never_evicts(store, tmp_path):
    """A demotion that fails (a directory sits where the file must go) holds back the promotion it
    made room for, and nothing is evicted to make room instead: every file stays indexed."""
    for key in ("s1", "s2", "s3", "s4"):
        put(store, key, Tier.SSD)
    put(store, "h", Tier.HDD)
    blocker = tmp_path / "hdd" / "s1"
    blocker.mkdir()  # a directory where the demoted file must go: the demotion fails
    now = time.time()
    serve(store, now, s1=0.1, s2=3, s3=4, s4=5, h=10)
    assert run_mover_once(store, now, budget_bytes=10 * FILE) == []
    assert len(tiers(store)) == 5 and tiers(store)["h"] is Tier.HDD


def test_single_tier_appliance_has_nothing_to_move(tmp_path):
    (tmp_path / "only").mkdir()
    store = Store.open(parse({
        "appliance": {"id": "t"}, "tokens": {"key_file": str(tmp_path / "k")},
        "store": {"index": str(tmp_path / "i.db")}, "tiers": {"hdd": [{"path": str(tmp_path / "only")}]},
    }))
    try:
        assert run_mover_once(store, time.time(), 10**9) == []
    finally:
        store.close()


def test_moves_are_paced(store):
    put(store, "a", Tier.HDD)
    serve(store, time.time(), a=10)
    start = time.monotonic()
    run_mover_once(store, time.time(), budget_bytes=FILE, rate_bps=FILE / 0.3)
    assert time.monotonic() - start >= 0.25
