"""Steering serves what `fill plan` wrote (steering.fillplan): a real steering server over a local
manifest store written by fill.manifeststore. It serves the stored bytes as they are (ETag = version,
304), switches plans whole when the pointer moves, and keeps the last good state when the store fails
it: a damaged pointer keeps the plan in force (the chore fails, is counted and retried), and a
manifest that is missing or not signed for its appliance keeps that appliance on the one it had."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from contracts.keys import DerivedKeys, load_keyring
from contracts.manifest import ManifestFile, Source, encode_manifest, make_manifest
from fill.credentials import authorize
from fill.manifeststore import POINTER, ManifestStore, Pointer, entry_for, manifest_key, plan_id
from origin.backends.local import LocalDirBackend
from tests.steering.steer_helpers import AUTH, ServerThread, wait_until, write_setup
from tests.support.prom import value

H = "0123456789abcdef" * 2


def files(*names: str) -> list[ManifestFile]:
    return [ManifestFile(f"t/{n}.mp4", 100 + i, H, "hdd", i, (Source("origin", url=f"http://o:8070/t/{n}.mp4"),))
            for i, n in enumerate(names)]


class Store:
    def __init__(self, root: Path, master: Path) -> None:
        self.store = ManifestStore(LocalDirBackend(root))
        self.derived = DerivedKeys(load_keyring(master))
        self.now = time.time()

    def body(self, appliance: str, names: tuple[str, ...], signer: str | None = None) -> tuple[str, bytes]:
        m = make_manifest(appliance, files(*names), self.now)
        signed = authorize(m, self.derived, self.now)
        if signer is not None:  # signed with another appliance's keys: what a tampered store would hold
            from contracts.manifest import sign_manifest
            signed = sign_manifest(m, self.derived.for_holder(signer), signed.credentials)
        return m.version, encode_manifest(signed)

    def publish(self, plan: dict[str, tuple[str, bytes]], missing: tuple[str, ...] = ()) -> str:
        self.now += 1
        pid = plan_id(self.now, {a: v for a, (v, _) in plan.items()})
        entries = {a: entry_for(manifest_key(pid, a), v, b) for a, (v, b) in plan.items()}
        self.store.publish(Pointer(pid, self.now, entries), {a: b for a, (_, b) in plan.items() if a not in missing},
                           b"{}")
        return pid


@pytest.fixture()
def setup(tmp_path: Path):
    config = write_setup(tmp_path, extra='[fill]\norigin = "store"\npoll_interval_s = 0.5\n')
    (tmp_path / "store").mkdir()
    with ServerThread(config) as server:
        yield server, Store(tmp_path / "store", tmp_path / "keys.toml")


def get(server: ServerThread, appliance: str, **headers: str) -> requests.Response:
    return requests.get(f"{server.url}/v1/fill-manifest", params={"appliance": appliance},
                        headers={**AUTH, **headers}, timeout=5)


def serving(server: ServerThread, plan: str) -> bool:
    return get(server, "ams-1").headers.get("X-Fill-Plan") == plan


def metric(server: ServerThread, name: str, **labels: str) -> float:
    return value(requests.get(server.url + "/metrics", timeout=5).text, name, **labels) or 0.0


def test_serves_the_stored_bytes_and_switches_plans_whole(setup):
    server, store = setup
    assert get(server, "ams-1").status_code == 404  # no plan written yet
    one = {"ams-1": store.body("ams-1", ("a", "b")), "ams-2": store.body("ams-2", ("c",))}
    p1 = store.publish(one)
    wait_until(lambda: serving(server, p1), timeout_s=10)
    for appliance, (version, body) in one.items():
        r = get(server, appliance)
        assert r.status_code == 200 and r.content == body and r.headers["ETag"] == f'"{version}"'
        assert get(server, appliance, **{"If-None-Match": f'"{version}"'}).status_code == 304
    assert get(server, "ams-3").status_code == 404  # not in the plan
    two = {"ams-1": one["ams-1"], "ams-3": store.body("ams-3", ("d",))}  # ams-2 leaves the plan
    p2 = store.publish(two)
    wait_until(lambda: serving(server, p2), timeout_s=10)
    assert get(server, "ams-1").content == one["ams-1"][1] and get(server, "ams-3").content == two["ams-3"][1]
    assert get(server, "ams-2").status_code == 404


def test_a_damaged_pointer_keeps_the_plan_in_force(setup):
    server, store = setup
    one = {"ams-1": store.body("ams-1", ("a",))}
    p1 = store.publish(one)
    wait_until(lambda: serving(server, p1), timeout_s=10)
    store.store.backend.put_bytes(POINTER, b'{"v": 1, "plan": "half a', "application/json")
    wait_until(lambda: metric(server, "steering_task_failures_total", task="fill-plan") >= 2, timeout_s=15)
    r = get(server, "ams-1")
    assert r.status_code == 200 and r.content == one["ams-1"][1] and r.headers["X-Fill-Plan"] == p1
    p2 = store.publish({"ams-1": store.body("ams-1", ("b",))})  # a good pointer again: the chore recovers
    wait_until(lambda: serving(server, p2), timeout_s=20)


def test_a_bad_manifest_keeps_its_appliance_on_the_last_good(setup):
    server, store = setup
    one = {"ams-1": store.body("ams-1", ("a",)), "ams-2": store.body("ams-2", ("b",))}
    p1 = store.publish(one)
    wait_until(lambda: serving(server, p1), timeout_s=10)
    two = {"ams-1": store.body("ams-1", ("a", "x"), signer="ams-2"),  # not signed for ams-1
           "ams-2": store.body("ams-2", ("b", "y")),
           "ams-3": store.body("ams-3", ("z",))}  # named by the pointer, never written
    p2 = store.publish(two, missing=("ams-3",))
    wait_until(lambda: get(server, "ams-2").headers.get("X-Fill-Plan") == p2, timeout_s=10)
    assert get(server, "ams-2").content == two["ams-2"][1]
    r = get(server, "ams-1")
    assert r.content == one["ams-1"][1] and r.headers["X-Fill-Plan"] == p1  # its last good manifest
    assert get(server, "ams-3").status_code == 404
    assert metric(server, "steering_fill_manifests_rejected_total") == 2


def test_fleet_state_endpoint_for_the_planner(tmp_path: Path, monkeypatch):
    """GET /v1/fleet/state (steering.fleetstate): what fill.fleetstate decodes, to callers with the
    "fleet" role only, compressed when asked."""
    import hashlib

    import steering_with_fleetstate
    from fill import fleetstate
    from tests.steering import steer_helpers
    from tests.steering.steer_helpers import heartbeat

    monkeypatch.setattr(steer_helpers, "make_app", steering_with_fleetstate.make_app)
    config = write_setup(tmp_path)
    steer_only = "steer-only-token-0123456789abcdef0123456789"
    digest = hashlib.sha256(steer_only.encode()).hexdigest()
    with open(tmp_path / "callers.toml", "a") as fh:
        fh.write(f'[callers.player]\ntoken_sha256 = "{digest}"\nroles = ["steer"]\n')
    with ServerThread(config) as server:
        assert server.post_heartbeat(heartbeat("ams-1", "ams", added=["t/a.mp4", "t/b.mp4"])).status_code == 200
        url = server.url + "/v1/fleet/state"
        r = requests.get(url, headers={**AUTH, "Accept-Encoding": "gzip"}, timeout=5)
        assert r.status_code == 200 and r.headers["Content-Encoding"] == "gzip"
        states = {a.id: a for a in fleetstate.decode(r.content)}
        assert len(states) == 9 and states["ams-1"].files == {"t/a.mp4", "t/b.mp4"}
        assert states["ams-1"].reported and states["ams-1"].tier_bytes() == (0, 2 * 10**12)
        assert not states["ams-2"].reported and states["ams-2"].site == "ams"
        assert requests.get(url, timeout=5).status_code == 401
        r = requests.get(url, headers={"Authorization": f"Bearer {steer_only}"}, timeout=5)
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
