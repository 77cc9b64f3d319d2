"""End to end over real HTTP: the origin is moto's S3 server (catalog and files), steering is a test
stand-in serving manifests built by fill.service.build_manifests (ETag/304), and 2 clusters x 2
appliances are real `oca serve` processes over temporary SSD/HDD directories. Agents run as
processes (`python -m oca.fill.cli`, what `oca fill` runs).

- after a fill every appliance holds exactly its manifest, hashes verified, tiers as planned; the
  second appliance of a cluster takes shared files from its peer;
- a corrupted origin object is refused, reported (metrics, quarantine ledger) and never served;
- an agent killed mid-file and re-run resumes without fetching the finished bytes again, and no
  partial file is visible at any time.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from contracts.ids import FileKey
from fill.core.model import ApplianceView, ClusterView, FleetView, OriginRef, PlanPolicy
from fill.service import build_manifests
from oca.fill.statedir import StateDir
from fill_helpers import (AWS_ENV, SteeringStandIn, ThreadServer, moto_s3, stop_appliances, h, title_entry, wait_until, write_derived_keyfile,
                          write_keyfile, write_oca_config)
from oca.store.fsutil import hash_file
from oca.store.index import Index
from origin.backends.s3 import S3Backend
from origin.catalog import Catalog
from origin.config import Location, S3Config
from tests.oca.conftest import Appliance
from tests.support.prom import Samples, samples, value

KB, MB = 1024, 1 << 20
REPO = Path(__file__).resolve().parents[2]
CLUSTERS = {"ams": ("nl", ["ams-1", "ams-2"]), "fra": ("de", ["fra-1", "fra-2"])}
# Appliances fill in rounds here, not all in one window: a peer the plan says is filling a file may not
# be, so waiting for one is short (escalation itself: tests/fill/test_fill_agent.py).
POLICY = PlanPolicy(copy_thresholds=(100.0,), predicted_popularity=50.0, origin=OriginRef(s3_bucket="media"),
                    escalate_after_s=1.0)


class World:
    def __init__(self, root: Path, endpoint: str, steering: SteeringStandIn, steering_url: str) -> None:
        self.root, self.endpoint, self.steering, self.steering_url = root, endpoint, steering, steering_url
        self.backend = S3Backend(Location(bucket="media", endpoint_url=endpoint, region="us-east-1"), S3Config())
        self.catalog = Catalog(self.backend)
        self.entries: list = []
        self.objects: dict[str, bytes] = {}
        self.apps: dict[str, Appliance] = {}
        self.configs: dict[str, Path] = {}
        self.reports: dict = {}

    def add_title(self, title_id: str, sizes: dict[str, int], release: str | None = None,
                  corrupt: bool = False) -> list[str]:
        entry, objects = title_entry(title_id, {n: os.urandom(s) for n, s in sizes.items()}, release)
        for key, data in objects.items():
            stored = bytes([data[0] ^ 0xFF]) + data[1:] if corrupt else data
            self.backend.put_bytes(key, stored, "video/mp4", h(data))
        self.catalog.put(entry)
        self.entries.append(entry)
        self.objects.update(objects)
        return sorted(objects)

    def view(self) -> FleetView:
        holders: dict[FileKey, set] = {}
        for name in self.apps:
            for key in self.index(name):
                holders.setdefault(key, set()).add(name)
        clusters = tuple(ClusterView(site, region, tuple(
            ApplianceView(a, f"http://127.0.0.1:{self.apps[a].port}", 4 * MB, 40 * MB) for a in names))
            for site, (region, names) in CLUSTERS.items())
        return FleetView(clusters, holders)

    def publish(self, entries=None) -> dict:
        manifests = build_manifests(self.view(), entries or self.entries, self.reports, time.time(), POLICY)
        self.steering.manifests = dict(manifests)
        return manifests

    def agent(self, name: str, *extra: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "oca.fill.cli", "-c", str(self.configs[name]), "--steering", self.steering_url,
               "--origin", "s3://media", "--endpoint-url", self.endpoint, "--ignore-window", "--no-progress",
               "--part-bytes", str(512 * KB), *extra]
        env = dict(os.environ, **AWS_ENV, PYTHONPATH=str(REPO))
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def fill(self, *names: str, extra: tuple[str, ...] = ()) -> dict[str, tuple[int, str]]:
        procs = {n: self.agent(n, *extra) for n in names}
        return {n: (p.wait(120), p.stdout.read()) for n, p in procs.items()}  # type: ignore[union-attr]

    def index(self, name: str) -> dict:
        idx = Index.open(self.configs[name].parent / "state/index.db", readonly=True)
        try:
            return {e.key: e for e in idx.all()}
        finally:
            idx.close()

    def state_dir(self, name: str) -> StateDir:
        return StateDir(self.configs[name].parent / "state/fill")

    def metrics(self, name: str) -> Samples:
        return samples((self.configs[name].parent / "state/fill/fill-metrics.prom").read_text())

    def get_published(self, name: str, key: str) -> tuple[int, bytes]:
        """GET once the appliance's workers have seen the index change (they poll it)."""
        result: list = []
        wait_until(lambda: result.append(self.get(name, key)) or result[-1][0] == 200, timeout=10, step=0.1)
        return result[-1]

    def get(self, name: str, key: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.apps[name].url(key, keyfile=self.root / name / "keys.toml"),
                                        timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("fill-e2e")
    keyfile = write_keyfile(root / "keys.toml")  # the master: steering's (here the stand-in's) alone
    stand_in = SteeringStandIn(keyfile)
    with moto_s3("media") as endpoint, ThreadServer(stand_in.app()) as steering:
        w = World(root, endpoint, stand_in, steering.url)
        try:
            for site, (_, names) in CLUSTERS.items():
                for name in names:
                    (root / name).mkdir()
                    own = write_derived_keyfile(keyfile, name, root / name / "keys.toml")
                    w.configs[name] = write_oca_config(root / name, name, site, own)
                    w.apps[name] = app = Appliance(root / name, w.configs[name])
                    app.start()
            yield w
        finally:
            stop_appliances(w.apps.values())


def _check_holds_manifest(w: World, name: str, manifest) -> None:
    idx = w.index(name)
    assert set(idx) == set(manifest.keys()), name
    for f in manifest.files:
        e = idx[f.key]
        assert (e.size, e.xxh3, e.tier.value, e.pinned) == (f.size, f.xxh3, f.tier, True), (name, f.key)
        digest, _ = hash_file(e.disk, f.key)
        assert digest == f.xxh3 == h(w.objects[f.key])


def test_fill_two_clusters_peer_first(world):
    w = world
    hot = w.add_title("hot1", {"1080p.mp4": 1200 * KB, "720p.mp4": 700 * KB, "360p.mp4": 300 * KB})
    w.add_title("cold1", {"720p.mp4": 900 * KB, "360p.mp4": 200 * KB})
    tomorrow = (dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=1)).isoformat()
    launch = w.add_title("new1", {"720p.mp4": 600 * KB, "360p.mp4": 150 * KB}, release=tomorrow)
    w.reports = {"ams-1": {k: (10.0, 500.0 * len(w.objects[k])) for k in hot},
                 "fra-2": {k: (1.0, 20.0 * len(w.objects[k])) for k in hot}}
    manifests = w.publish()
    assert set(manifests) == {"ams-1", "ams-2", "fra-1", "fra-2"}
    # Hot in nl: two copies there (both ams appliances), the hottest on SSD; launches everywhere.
    for name in ("ams-1", "ams-2"):
        tiers = {f.key: f.tier for f in manifests[name].files}
        assert set(hot) <= set(tiers) and tiers[hot[0]] == "ssd"
    for k in launch:
        assert sum(k in m.keys() for m in manifests.values()) == 2  # one copy per cluster
    results = w.fill("ams-1", "fra-1")
    for name, (code, out) in results.items():
        assert code == 0, out
        _check_holds_manifest(w, name, manifests[name])
    # Second round: the inventory now shows what ams-1/fra-1 hold, so their peers fill from them first.
    manifests = w.publish()
    peer_first = [f for f in manifests["ams-2"].files if f.key in w.index("ams-1")]
    assert peer_first and all(f.sources[0].kind == "peer" and f.sources[0].appliance == "ams-1" for f in peer_first)
    # What only fra-1 (the other cluster) holds comes by tier fill before the origin.
    tier = [f for f in manifests["ams-2"].files if f.key in w.index("fra-1") and f not in peer_first]
    assert all(f.sources[0].kind == "peer" and f.sources[0].appliance == "fra-1" for f in tier)
    for f in peer_first:  # ams-1's workers follow its index by polling: wait until they serve it (else a 404)
        assert w.get_published("ams-1", f.key)[0] == 200
    for f in tier:
        assert w.get_published("fra-1", f.key)[0] == 200
    results = w.fill("ams-2", "fra-2")
    for name, (code, out) in results.items():
        assert code == 0, out
        _check_holds_manifest(w, name, manifests[name])
    m = w.metrics("ams-2")
    from_peers = value(m, "fill_files_published_total", kind="peer")
    from_origin = value(m, "fill_files_published_total", kind="origin") or 0
    assert from_peers + from_origin == len(manifests["ams-2"].files)
    # at least every file a peer held; more when fra-2, filling beside it, was the fleet's first copy of one
    assert from_peers >= len(peer_first) + len(tier)
    # Served: a verified file answers 200 with its bytes from the appliance that holds it.
    status, body = w.get_published("ams-2", hot[0])
    assert status == 200 and body == w.objects[hot[0]]
    # Nothing changed for ams-1: 304 from steering, nothing to fetch.
    w.steering.statuses.clear()
    manifests = w.publish()
    code, out = w.fill("ams-1")["ams-1"]
    assert code == 0 and w.steering.statuses[-1] in (200, 304), out
    (plan,) = [e for e in map(json.loads, out.splitlines()) if e["event"] == "plan"]
    assert plan["fetch"] == 0


def test_corrupted_origin_object_is_refused_reported_never_served(world):
    w = world
    bad = w.add_title("bad1", {"720p.mp4": 400 * KB}, release=dt.date.today().isoformat(), corrupt=True)
    manifests = w.publish()
    (key,) = bad
    holders = [n for n, m in manifests.items() if key in m.keys()]
    name = holders[0]
    code, out = w.fill(name)[name]
    assert code == 1, out
    assert key not in w.index(name)
    m = w.metrics(name)
    assert value(m, "fill_hash_mismatches_total", kind="origin") >= 1 and value(m, "fill_complete") == 0
    ledger = w.state_dir(name).quarantined()
    assert any(q["key"] == key and q["expected"] == h(w.objects[key]) for q in ledger)
    assert w.get(name, key)[0] == 404
    app_root = w.configs[name].parent
    assert not (app_root / "ssd0" / key).exists() and not (app_root / "hdd0" / key).exists()
    # Drop it from the catalog again so later plans do not list it.
    w.entries = [e for e in w.entries if e.title_id != "bad1"]
    w.catalog.delete("bad1")


def test_killed_mid_file_resumes_without_refetching(world):
    w = world
    (key,) = w.add_title("big1", {"1080p.mp4": 12 * MB}, release=dt.date.today().isoformat())
    manifests = w.publish()
    name = next(n for n, m in manifests.items() if key in m.keys())
    app_root = w.configs[name].parent
    size, digest = len(w.objects[key]), h(w.objects[key])
    proc = w.agent(name, "--rate-limit-bps", str(24_000_000), "--parts-per-file", "3")
    journal = lambda: w.state_dir(name).load_journal(key, size, digest, str(app_root / "hdd0")) or \
        w.state_dir(name).load_journal(key, size, digest, str(app_root / "ssd0"))
    seen_partial = []

    def progressed() -> bool:
        # No partial file is ever visible: not at its path, not indexed, not served.
        assert not (app_root / "ssd0" / key).exists() and not (app_root / "hdd0" / key).exists()
        assert key not in w.index(name)
        done = sum(e - s for s, e in journal())
        seen_partial.append(done)
        return done >= 3 * MB

    assert wait_until(progressed, timeout=60, step=0.1), proc.communicate()[0] if proc.poll() is not None else ""
    assert w.get(name, key)[0] == 404
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    finished = sum(e - s for s, e in journal())
    assert 3 * MB <= finished < size
    assert key not in w.index(name) and w.get(name, key)[0] == 404
    code, out = w.fill(name)[name]
    assert code == 0, out
    m = w.metrics(name)
    assert value(m, "fill_resumed_bytes_total") == finished
    assert value(m, "fill_bytes_downloaded_total", kind="origin") == size - finished  # only the missing bytes
    assert w.index(name)[key].xxh3 == digest
    status, body = w.get_published(name, key)
    assert status == 200 and h(body) == digest
    summary = [json.loads(line) for line in out.splitlines() if '"fill-done"' in line]
    assert summary and summary[0]["complete"] is True
