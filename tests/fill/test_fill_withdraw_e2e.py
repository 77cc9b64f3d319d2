"""Withdrawing a title version fleet-wide, every part a real process: moto's S3 server holds the origin
(bucket "wd-media") and the control store (bucket "wd-plans": fill plans and the withdrawal log); two
steering replicas (`steering serve`), an appliance (`oca serve`) reporting to both, `playback serve`,
`fill plan` and `oca fill` as the units run them, and the content team's `steering withdraw`.

- withdrawn: the replica asked answers 410 for its files at once, the other within one poll; the audit
  says who (the caller's name from the callers file), when and why; playback stops listing it and
  answers 410 for its pages and manifests; the next plan leaves its files out, the next fill deletes
  them, and fills after it never fetch them again; the other title is untouched;
- refused: a caller without the role `withdraw` (403), an undo of what is not withdrawn (409);
- undone: steered again, listed again, planned and filled again; the audit keeps both events.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from contracts.manifest import decode_manifest
from fill_helpers import h, moto_s3, stop_appliances, title_entry, write_derived_keyfile, write_keyfile, write_oca_config
from oca.store.index import Index
from origin.backends.s3 import S3Backend
from origin.catalog import Catalog
from origin.config import Location, S3Config
from plan_helpers import REPO, SteeringReplica, fill_plan_toml, proc_env, run_plan, wait_for
from tests.oca.conftest import Appliance
from tests.playback.playback_testkit import PlaybackProcess
from tests.steering.steer_helpers import AUTH, OPERATOR_TOKEN, callers_toml, free_port

KB = 1024
VIEWER_TOKEN = "test-viewer-token-0123456789abcdef0123456789abcdef"  # roles steer and fleet only
VIEWER = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
REASON = "broken audio in the 720p rung (CONTENT-12)"


class World:
    def __init__(self, root: Path, endpoint: str, master: Path) -> None:
        self.root, self.endpoint, self.master = root, endpoint, master
        self.media = S3Backend(Location(bucket="wd-media", endpoint_url=endpoint, region="us-east-1"), S3Config())
        self.plans = S3Backend(Location(bucket="wd-plans", endpoint_url=endpoint, region="us-east-1"), S3Config())
        self.replicas: list[SteeringReplica] = []
        self.app: Appliance | None = None
        self.config: Path | None = None
        self.playback: PlaybackProcess | None = None
        self.token = root / "operator.token"
        self.token.write_text(OPERATOR_TOKEN + "\n")

    def add_title(self, title_id: str, sizes: dict[str, int]):
        entry, objects = title_entry(title_id, {n: os.urandom(s) for n, s in sizes.items()})
        for key, data in objects.items():
            self.media.put_bytes(key, data, "video/mp4", h(data))
        Catalog(self.media).put(entry)
        return entry

    def plan(self):
        config = fill_plan_toml(self.root / "planner" / "plan.toml", self.master, [r.url for r in self.replicas],
                                "s3://wd-media", "s3://wd-plans", self.endpoint,
                                plan='origin_s3 = "s3://wd-media"\nescalate_after_s = 1')
        run = run_plan(config)
        assert run.code == 0, run.output
        plan = run.summary["plan"]
        wait_for(lambda: all(r.manifest("sa-1").headers.get("X-Fill-Plan") == plan for r in self.replicas), 30,
                 what=f"every replica serving plan {plan}")
        return run

    def manifest_keys(self) -> set[str]:
        return set(decode_manifest(self.replicas[0].manifest("sa-1").content, "sa-1", None).keys())

    def fill(self) -> tuple[list[dict], str]:
        steering = [x for r in self.replicas for x in ("--steering", r.url)]
        out = subprocess.run([sys.executable, "-m", "oca.fill.cli", "-c", str(self.config), *steering,
                              "--origin", "s3://wd-media", "--endpoint-url", self.endpoint, "--ignore-window",
                              "--no-progress", "--no-lowprio"],
                             cwd=REPO, env=proc_env(), capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        events = []
        for line in out.stdout.splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
        return events, out.stdout + out.stderr

    def held(self) -> set[str]:
        idx = Index.open(self.config.parent / "state/index.db", readonly=True)
        try:
            return {e.key for e in idx.all()}
        finally:
            idx.close()

    def steer(self, replica: int, keys: list[str], token: dict | None = None) -> requests.Response:
        return requests.post(self.replicas[replica].url + "/v1/steer", headers=token or AUTH, timeout=10,
                             json={"client": "192.0.2.7", "files": keys})

    def withdraw(self, target: str, reason: str, *extra: str, replica: int = 0) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "steering.cli", "withdraw", target, "--reason", reason, *extra,
                               "--url", self.replicas[replica].url, "--token-file", str(self.token)],
                              cwd=REPO, env=proc_env(), capture_output=True, text=True, timeout=60)

    def titles(self) -> set[str]:
        body = requests.get(self.playback.url + "/v1/titles", timeout=10).json()
        return {t["id"] for t in body["titles"]}


def _steering_toml(folder: Path, endpoint: str) -> Path:
    folder.mkdir(parents=True)
    viewer = hashlib.sha256(VIEWER_TOKEN.encode()).hexdigest()
    (folder / "callers.toml").write_text(callers_toml() + f'\n[callers.viewer]\ntoken_sha256 = "{viewer}"\n'
                                                          'roles = ["steer", "fleet"]\n')
    path = folder / "steering.toml"
    path.write_text(f"""[steering]
listen = "127.0.0.1"
port = 0
fleet_file = "../fleet.toml"
key_file = "../keys.toml"
callers_file = "callers.toml"
default_site = "sa"
reload_check_interval_s = 0.2
drain_grace_s = 0.1
drain_timeout_s = 2.0
log_decisions = false
[health]
report_interval_s = 0.3
missed_reports = 10
up_after_reports = 1
[fill]
origin = "s3://wd-plans"
endpoint_url = "{endpoint}"
poll_interval_s = 0.5
""")
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("withdraw-e2e")
    master = write_keyfile(root / "keys.toml")
    with moto_s3("wd-media", "wd-plans") as endpoint:
        w = World(root, endpoint, master)
        try:
            port = free_port()
            (root / "fleet.toml").write_text(
                '[[sites]]\nid = "sa"\nlatitude = 52.37\nlongitude = 4.90\nprefixes = ["192.0.2.0/24"]\n'
                f'[[sites.appliances]]\nid = "sa-1"\nbase_url = "http://127.0.0.1:{port}"\ncapacity_gbps = 10\n')
            w.replicas = [SteeringReplica(_steering_toml(root / f"steering-{i}", endpoint)) for i in (1, 2)]
            (root / "sa-1").mkdir()
            cfg = write_oca_config(root / "sa-1", "sa-1", "sa", write_derived_keyfile(master, "sa-1",
                                                                                     root / "sa-1" / "keys.toml"))
            cfg.write_text(cfg.read_text().replace("port = 0", f"port = {port}", 1)
                           + f"\n[steering]\nurls = {json.dumps([r.url for r in w.replicas])}\nreport_interval_s = 0.3\n")
            w.config, w.app = cfg, Appliance(root / "sa-1", cfg)
            w.app.start()
            for r in w.replicas:
                wait_for(lambda r=r: r.get("/healthz").json().get("up") == 1, 30, what=f"{r.url}: sa-1 up")
            pb = root / "playback" / "playback.toml"
            pb.parent.mkdir()
            pb.write_text(f"""
[playback]
listen = "127.0.0.1"
port = 0
steering_urls = {json.dumps([r.url for r in w.replicas])}
steering_token_file = "{w.token}"
fleet_cache_s = 0.2
drain_grace_s = 0.1
[origin]
location = "s3://wd-media"
endpoint_url = "{endpoint}"
""")
            w.playback = PlaybackProcess(pb)
            yield w
        finally:
            if w.playback is not None:
                w.playback.stop()
            stop_appliances([w.app] if w.app is not None else [])
            for r in w.replicas:
                r.stop()


def test_withdraw_a_version_fleet_wide_and_undo_it(world):
    w = world
    keep = w.add_title("keep", {"720p.mp4": 96 * KB})
    bad = w.add_title("bad", {"720p.mp4": 128 * KB, "360p.mp4": 64 * KB})
    bad_keys = sorted(r.key for r in bad.renditions)
    keep_keys = sorted(r.key for r in keep.renditions)
    w.plan()
    events, out = w.fill()
    assert set(bad_keys) <= w.held() and set(keep_keys) <= w.held(), out
    assert w.titles() == {"keep", "bad"}
    assert all(w.steer(i, bad_keys).status_code == 200 for i in (0, 1))

    # without the role, or undoing what is not withdrawn: refused, nothing recorded
    r = requests.post(w.replicas[0].url + "/v1/withdrawals", headers=VIEWER, timeout=10,
                      json={"title": "bad", "version": bad.version, "reason": REASON})
    assert r.status_code == 403
    undo = w.withdraw(f"bad/{bad.version}", "nothing to undo", "--undo")
    assert undo.returncode == 1 and "HTTP 409" in undo.stderr and "not withdrawn" in undo.stderr

    # withdrawn through replica 1: it refuses at once, replica 2 within one poll (0.5 s)
    done = w.withdraw(f"bad/{bad.version}", REASON)
    assert done.returncode == 0, done.stderr
    assert f"withdraw: bad/{bad.version} by operator" in done.stdout and REASON in done.stdout
    refused = w.steer(0, bad_keys)
    assert refused.status_code == 410 and refused.json()["error"] == "withdrawn" and REASON in refused.json()["detail"]
    started = time.monotonic()
    wait_for(lambda: w.steer(1, bad_keys).status_code == 410, 5, 0.05, what="replica 2 refusing")
    assert time.monotonic() - started < 2.0
    single = requests.get(w.replicas[1].url + "/v1/steer", params={"file": bad_keys[0], "client": "192.0.2.7"},
                          headers=AUTH, timeout=10)
    assert single.status_code == 410
    assert w.steer(1, keep_keys).status_code == 200  # the rest of the catalog is untouched
    assert w.steer(1, [keep_keys[0], bad_keys[0]]).status_code == 410  # a request naming one is refused
    audit = requests.get(w.replicas[1].url + "/v1/withdrawals", headers=VIEWER, timeout=10).json()
    (now,) = audit["withdrawn"]
    assert (now["title"], now["version"], now["by"], now["reason"]) == ("bad", bad.version, "operator", REASON)
    assert abs(now["at"] - time.time()) < 60 and [e["action"] for e in audit["audit"]] == ["withdraw"]
    listing = subprocess.run([sys.executable, "-m", "steering.cli", "withdrawals", "--url", w.replicas[1].url,
                              "--token-file", str(w.token)], cwd=REPO, env=proc_env(), capture_output=True,
                             text=True, timeout=60)
    assert listing.returncode == 0 and f"bad/{bad.version}" in listing.stdout and "by operator" in listing.stdout

    # playback: gone from the catalog API, its pages and manifests answer 410
    wait_for(lambda: w.titles() == {"keep"}, 10, what="playback no longer listing it")
    for path in ("/v1/titles/bad", "/v1/playback/bad/master.m3u8", "/v1/playback/bad/manifest.mpd",
                 "/v1/playback/bad/720p.m3u8?loc=x", "/v1/playback/bad/steering.json?pathways=sa"):
        r = requests.get(w.playback.url + path, timeout=10)
        assert r.status_code == 410 and r.json()["error"] == "withdrawn", (path, r.status_code, r.text)
    assert requests.get(w.playback.url + "/v1/playback/keep/master.m3u8", timeout=10).status_code == 200

    # the next plan leaves its files out; the next fill deletes them; later fills never fetch them
    run = w.plan()
    assert run.summary["withdrawn"]["files_left_out"] == 2
    assert run.summary["withdrawn"]["targets"] == [f"bad/{bad.version}"]
    assert not set(bad_keys) & w.manifest_keys() and set(keep_keys) <= w.manifest_keys()
    events, out = w.fill()
    assert not set(bad_keys) & w.held() and set(keep_keys) <= w.held(), out
    assert any(e.get("event") == "deleted" and e.get("files") == 2 for e in events), out
    for _ in range(2):
        w.plan()
        events, out = w.fill()
        assert not any(e.get("key") in bad_keys for e in events), out
        assert not set(bad_keys) & w.held()
    assert w.media.head(bad_keys[0]) is not None  # the origin keeps the bytes: an undo needs no re-ingest

    # undo: steered, listed, planned and filled again; the audit keeps both events
    undone = w.withdraw(f"bad/{bad.version}", "re-checked: the audio is fine", "--undo", replica=1)
    assert undone.returncode == 0, undone.stderr
    wait_for(lambda: w.steer(0, bad_keys).status_code == 200, 5, 0.05, what="replica 1 steering it again")
    wait_for(lambda: w.titles() == {"keep", "bad"}, 10, what="playback listing it again")
    audit = requests.get(w.replicas[0].url + "/v1/withdrawals", headers=AUTH, timeout=10).json()
    assert audit["withdrawn"] == [] and [e["action"] for e in audit["audit"]] == ["withdraw", "undo"]
    assert audit["audit"][1]["reason"] == "re-checked: the audio is fine"
    w.plan()
    assert set(bad_keys) <= w.manifest_keys()
    events, out = w.fill()
    assert set(bad_keys) <= w.held(), out
