"""`fill plan` end to end, every part a real process: moto's S3 server holds the origin (bucket
"fp-media": catalog and files) and the manifest store (bucket "fp-plans"; moto keeps buckets per process,
so these names are this module's own); two steering replicas (`steering serve`);
three appliances (`oca serve`) in two sites reporting to both replicas; `fill plan` and `oca fill` as
the systemd units run them. Stand-ins only where a replica must misbehave (a playback replica's demand).

- one plan, and both replicas serve each appliance the same bytes under the same ETag; the agent fills
  from them;
- a steering replica down, a playback replica answering garbage, a catalog entry that does not parse:
  each reported (log line, summary), and the plan is still written;
- no steering replica answering: exit 1, nothing written, replicas keep serving the plan in force, an
  appliance filling again keeps every file;
- a file only site A holds, asked for by site B's clients (content misses: steering counts the demand),
  is in B's manifest after the next plan, and after B's fill steering sends B's clients to B (a hit).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from contracts.demand import DemandReport, encode as encode_demand
from contracts.manifest import decode_manifest
from fill_helpers import (ThreadServer, h, moto_s3, stop_appliances, title_entry, write_derived_keyfile, write_keyfile,
                          write_oca_config)
from oca.store.index import Index
from origin.backends.s3 import S3Backend
from origin.catalog import Catalog
from origin.config import Location, S3Config
from plan_helpers import (REPO, DemandStandIn, SteeringReplica, fill_plan_toml, proc_env, run_plan,
                          wait_for)
from tests.oca.conftest import Appliance
from tests.steering.steer_helpers import AUTH, callers_toml, free_port

KB = 1024
SITES = {"sa": ("192.0.2.0/24", 52.37, 4.90, ["sa-1", "sa-2"]), "sb": ("198.51.100.0/24", 50.11, 8.68, ["sb-1"])}
CLIENT_B = "198.51.100.7"


class World:
    def __init__(self, root: Path, endpoint: str, master: Path) -> None:
        self.root, self.endpoint, self.master = root, endpoint, master
        self.media = S3Backend(Location(bucket="fp-media", endpoint_url=endpoint, region="us-east-1"), S3Config())
        self.plans = S3Backend(Location(bucket="fp-plans", endpoint_url=endpoint, region="us-east-1"), S3Config())
        self.catalog = Catalog(self.media)
        self.objects: dict[str, bytes] = {}
        self.replicas: list[SteeringReplica] = []
        self.apps: dict[str, Appliance] = {}
        self.configs: dict[str, Path] = {}

    def add_title(self, title_id: str, sizes: dict[str, int]) -> list[str]:
        entry, objects = title_entry(title_id, {n: os.urandom(s) for n, s in sizes.items()})
        for key, data in objects.items():
            self.media.put_bytes(key, data, "video/mp4", h(data))
        self.catalog.put(entry)
        self.objects.update(objects)
        return sorted(objects)

    def config(self, name: str, steering: list[str] | None = None, **kw) -> Path:
        # The appliances fill one at a time here, not side by side in one window as in production: a
        # peer the plan says is filling a file would be waited for in vain, so the wait is short.
        kw["plan"] = kw.get("plan", "") + "\nescalate_after_s = 1"
        return fill_plan_toml(self.root / "planner" / f"{name}.toml", self.master,
                              steering if steering is not None else [r.url for r in self.replicas],
                              "s3://fp-media", "s3://fp-plans", self.endpoint, **kw)

    def pointer(self) -> bytes:
        return self.plans.get_bytes("fill-manifests/current.json")

    def served(self, appliance: str) -> list[tuple[int, bytes, str | None]]:
        out = []
        for r in self.replicas:
            resp = r.manifest(appliance)
            out.append((resp.status_code, resp.content, resp.headers.get("ETag")))
        return out

    def wait_served(self, plan: str) -> None:
        """Until every replica serves `plan` (X-Fill-Plan) for every appliance."""
        def adopted() -> bool:
            return all(r.manifest(a).headers.get("X-Fill-Plan") == plan for r in self.replicas for a in self.apps)
        wait_for(adopted, 30, what=f"every replica serving plan {plan}")

    def fill(self, name: str) -> tuple[int, str]:
        steering = [x for r in self.replicas for x in ("--steering", r.url)]
        out = subprocess.run([sys.executable, "-m", "oca.fill.cli", "-c", str(self.configs[name]), *steering,
                              "--origin", "s3://fp-media", "--endpoint-url", self.endpoint, "--ignore-window",
                              "--no-progress", "--no-lowprio"],
                             cwd=REPO, env=proc_env(), capture_output=True, text=True, timeout=120)
        return out.returncode, out.stdout + out.stderr

    def index(self, name: str) -> set[str]:
        idx = Index.open(self.configs[name].parent / "state/index.db", readonly=True)
        try:
            return {e.key for e in idx.all()}
        finally:
            idx.close()

    def holds(self, appliance: str, key: str) -> bool:
        """Whether every replica's inventory shows `appliance` holding `key` (its heartbeats arrived)."""
        for r in self.replicas:
            state = r.get("/v1/fleet/state").json()
            (a,) = [x for x in state["appliances"] if x["id"] == appliance]
            if key not in a["inventory"]["files"]:
                return False
        return True

    def steer(self, key: str, client: str = CLIENT_B) -> dict:
        resp = requests.post(self.replicas[0].url + "/v1/steer", headers=AUTH, timeout=10,
                             json={"client": client, "files": [key], "explain": True})
        assert resp.status_code == 200, resp.text
        return resp.json()["files"][key]["decision"]


def _fleet_toml(ports: dict[str, int]) -> str:
    out = []
    for site, (prefix, lat, lon, names) in SITES.items():
        out.append(f'[[sites]]\nid = "{site}"\nlatitude = {lat}\nlongitude = {lon}\nprefixes = ["{prefix}"]\n')
        out += [f'[[sites.appliances]]\nid = "{a}"\nbase_url = "http://127.0.0.1:{ports[a]}"\ncapacity_gbps = 10\n'
                for a in names]
    return "\n".join(out)


def _steering_toml(folder: Path, endpoint: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "callers.toml").write_text(callers_toml())
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
origin = "s3://fp-plans"
endpoint_url = "{endpoint}"
poll_interval_s = 0.5
""")
    return path


def _appliance(root: Path, name: str, site: str, port: int, master: Path, steering: list[str]) -> Path:
    (root / name).mkdir()
    own = write_derived_keyfile(master, name, root / name / "keys.toml")
    cfg = write_oca_config(root / name, name, site, own)
    text = cfg.read_text().replace("port = 0", f"port = {port}", 1)
    cfg.write_text(text + f"\n[steering]\nurls = {json.dumps(steering)}\nreport_interval_s = 0.3\n")
    return cfg


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("fill-plan-e2e")
    master = write_keyfile(root / "keys.toml")  # steering's and the planner's; appliances get derived keys
    with moto_s3("fp-media", "fp-plans") as endpoint:
        w = World(root, endpoint, master)
        try:
            ports = {a: free_port() for _, _, _, names in SITES.values() for a in names}
            (root / "fleet.toml").write_text(_fleet_toml(ports))
            w.replicas = [SteeringReplica(_steering_toml(root / f"steering-{i}", endpoint)) for i in (1, 2)]
            for site, (_, _, _, names) in SITES.items():
                for name in names:
                    w.configs[name] = _appliance(root, name, site, ports[name], master, [r.url for r in w.replicas])
                    w.apps[name] = app = Appliance(root / name, w.configs[name])
                    app.start()
            for r in w.replicas:
                wait_for(lambda r=r: r.get("/healthz").json().get("up") == len(w.apps), 30, what=f"{r.url}: all up")
            yield w
        finally:
            stop_appliances(w.apps.values())
            for r in w.replicas:
                r.stop()


def plan_metrics(w: World) -> dict[str, float]:
    """The planner's textfile (fill-plan.prom in its state_dir), parsed as node_exporter would."""
    text = (w.root / "planner" / "fill-plan-state" / "fill-plan.prom").read_text()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return out


def test_one_plan_every_replica_serves_the_same_bytes(world):
    w = world
    w.add_title("one", {"720p.mp4": 300 * KB, "360p.mp4": 120 * KB})
    w.add_title("two", {"720p.mp4": 200 * KB})
    run = run_plan(w.config("plain", plan='origin_s3 = "s3://fp-media"'))
    assert run.code == 0, run.output
    s = run.summary
    assert s["ok"] and s["written"] and s["appliances"] == 3 and s["steering"]["answered"] == 2
    assert s["catalog"] == {"titles": 2, "files": 3, "skipped": []}
    pointer = json.loads(w.pointer())
    assert pointer["plan"] == s["plan"] and set(pointer["manifests"]) == set(w.apps)
    w.wait_served(s["plan"])
    for name in w.apps:
        (st1, body1, etag1), (st2, body2, etag2) = w.served(name)
        manifest = decode_manifest(body1, name, None)
        assert st1 == st2 == 200 and body1 == body2 and etag1 == etag2 == manifest.etag
        assert body1 == w.plans.get_bytes(pointer["manifests"][name]["key"])  # the stored bytes, as they are
        assert w.replicas[1].manifest(name, **{"If-None-Match": etag1}).status_code == 304
    m = plan_metrics(w)
    assert m["fill_plan_ok"] == 1 and m["fill_plan_appliances"] == 3 and m["fill_plan_files"] >= 3
    assert m["fill_plan_last_success_timestamp_seconds"] == m["fill_plan_last_run_timestamp_seconds"] > 0
    code, out = w.fill("sb-1")
    assert code == 0, out
    manifest = decode_manifest(w.served("sb-1")[0][1], "sb-1", None)
    assert w.index("sb-1") == set(manifest.keys()) and manifest.keys()


def test_bad_inputs_are_reported_and_the_plan_still_written(world):
    w = world
    before = json.loads(w.pointer())["plan"]
    w.media.put_bytes("catalog/broken.json", b'{"schema": 1, "id": "broken", "renditions": [', "application/json")
    good = DemandStandIn(encode_demand(DemandReport("playback-1", "playback", 1.0e9, 86400.0, {})))
    garbage = DemandStandIn(b'{"v": 1, "source": "playback-2", "kind": "playback", "at": 1.0, "half_life_s": 60,'
                            b' "regions": 7}')
    dead = f"http://127.0.0.1:{free_port()}"  # a steering replica that is down
    try:
        with ThreadServer(good.app()) as pb1, ThreadServer(garbage.app()) as pb2:
            config = w.config("bad-inputs", steering=[w.replicas[0].url, dead, w.replicas[1].url],
                              playback=[pb1.url, pb2.url], plan='origin_s3 = "s3://fp-media"')
            run = run_plan(config)
        assert run.code == 0, run.output
        s = run.summary
        assert s["written"] and s["plan"] != before and json.loads(w.pointer())["plan"] == s["plan"]
        assert s["steering"]["answered"] == 2 and list(s["steering"]["failed"]) == [f"{dead}/v1/fleet/state"]
        failed = s["demand"]["failed"]
        assert f"{dead}/v1/demand" in failed and failed[f"{pb2.url}/v1/demand"].startswith("malformed: regions")
        assert f"{pb1.url}/v1/demand" not in failed and good.requests == garbage.requests == 1
        assert [x["title"] for x in s["catalog"]["skipped"]] == ["broken"]
        assert [e["title"] for e in run.named("catalog-entry-skipped")] == ["broken"]
        assert {e["url"] for e in run.named("replica-skipped")} >= {f"{dead}/v1/fleet/state", f"{pb2.url}/v1/demand"}
        w.wait_served(s["plan"])
    finally:
        w.media.delete("catalog/broken.json")


def test_no_steering_replica_means_nothing_written_and_nothing_deleted(world):
    w = world
    pointer, served = w.pointer(), {a: w.served(a) for a in w.apps}
    held = w.index("sb-1")
    dead = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    run = run_plan(w.config("no-steering", steering=dead, plan='origin_s3 = "s3://fp-media"'))
    assert run.code == 1, run.output
    assert run.summary["ok"] is False and "no steering replica gave the fleet state" in run.summary["error"]
    m = plan_metrics(w)  # the failure is visible to Prometheus, and so is when a plan was last written
    assert m["fill_plan_ok"] == 0 and m['fill_plan_replicas_failed{input="fleet-state"}'] == 2
    assert 0 < m["fill_plan_last_success_timestamp_seconds"] < m["fill_plan_last_run_timestamp_seconds"]
    assert w.pointer() == pointer
    assert {a: w.served(a) for a in w.apps} == served
    code, out = w.fill("sb-1")
    assert code == 0, out
    assert w.index("sb-1") == held  # the appliance keeps every file


def test_a_content_miss_at_site_b_becomes_a_hit_after_the_next_plan(world):
    w = world
    (key,) = w.add_title("solo", {"720p.mp4": 250 * KB})
    w.apps["sa-1"].put(w.objects[key], key, tier="hdd")  # only site A holds it (pre-positioned, not filled)
    wait_for(lambda: w.holds("sa-1", key), 20, what="steering seeing sa-1 hold it")
    decision = w.steer(key)
    assert decision["site"] == "sb" and decision["outcome"] == "content-miss", decision
    assert decision["candidates"][0]["appliance"] == "sa-1"
    demand = w.replicas[0].get("/v1/demand").json()
    assert demand["regions"]["sb"][key][0] > 0  # the miss was counted in site B's region
    # Cold files are not placed: only demand (or served bytes) brings a file to a site.
    config = w.config("demand", plan='origin_s3 = "s3://fp-media"\ninclude_cold = false')
    run = run_plan(config)
    assert run.code == 0, run.output
    manifest = decode_manifest(w.plans.get_bytes(json.loads(w.pointer())["manifests"]["sb-1"]["key"]), "sb-1", None)
    assert key in manifest.keys()
    w.wait_served(run.summary["plan"])
    code, out = w.fill("sb-1")
    assert code == 0, out
    assert key in w.index("sb-1")
    wait_for(lambda: w.holds("sb-1", key), 20, what="steering seeing sb-1 hold it")
    decision = w.steer(key)
    assert decision["outcome"] == "hit" and decision["candidates"][0]["appliance"] == "sb-1", decision
