"""One `fill plan` run (fill.job) against a TEST STAND-IN steering replica (its GET /v1/fleet/state
bytes made by steering.fleetstate.encode) and local-directory origin and manifest stores: what it
writes, what it keeps in force, and when it refuses to write at all."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web

from contracts.manifest import decode_manifest
from fill import config as plan_config
from fill.job import EXIT_FAILED, EXIT_OK, Planner
from fill.manifeststore import POINTER, PREFIX
from fill_helpers import ThreadServer, title_entry, write_keyfile
from origin.backends.local import LocalDirBackend
from origin.catalog import Catalog
from steering.fleetstate import encode
from tests.steering.steer_helpers import OPERATOR_TOKEN

GB = 1 << 30


def appliance(id: str, site: str, reported: bool = True) -> dict:
    report = {"age_s": 0.5, "seq": 1, "site": site, "accepting": True, "draining": False,
              "disks": [{"tier": "hdd", "state": "ok", "total_bytes": GB, "free_bytes": GB}], "popularity": {}}
    return {"id": id, "site": site, "base_url": f"http://{id}:8080", "capacity_bps": 1e10, "status": "up",
            "reason": "", "report": report if reported else None, "inventory": {"generation": 1, "files": []}}


class FleetStandIn:
    """TEST STAND-IN for a steering replica's GET /v1/fleet/state (and a 404 for /v1/demand)."""

    def __init__(self) -> None:
        self.appliances = [appliance("ams-1", "ams"), appliance("ams-2", "ams")]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/fleet/state", self._state)
        return app

    async def _state(self, request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == f"Bearer {OPERATOR_TOKEN}"
        return web.Response(body=encode(json.loads(json.dumps(self.appliances)), 1.0),
                            content_type="application/json")


@pytest.fixture()
def world(tmp_path: Path):
    stand_in = FleetStandIn()
    with ThreadServer(stand_in.app()) as steering:
        (tmp_path / "token").write_text(OPERATOR_TOKEN)
        write_keyfile(tmp_path / "keys.toml")
        catalog = Catalog(LocalDirBackend(tmp_path / "origin"))
        for title in ("t1", "t2"):
            catalog.put(title_entry(title, {"720p.mp4": title.encode() * 100})[0])
        (tmp_path / "fill-plan.toml").write_text(f"""[planner]
key_file = "keys.toml"
state_dir = "state"
keep_plans = 2
[steering]
replicas = ["{steering.url}"]
token_file = "token"
[origin]
location = "origin"
[manifests]
location = "plans"
[plan]
origin_url = "http://origin:8070"
""")
        yield tmp_path, stand_in


def plan(root: Path, **kw) -> int:
    return Planner(plan_config.load(root / "fill-plan.toml"), **kw).plan()


def pointer(root: Path) -> dict:
    return json.loads((root / "plans" / POINTER).read_bytes())


def test_writes_signed_manifests_then_the_pointer_and_keeps_two_plans(world, capsys):
    root, _ = world
    plans = []
    for i in range(3):
        assert plan(root, now=1767225600.0 + 3600 * i) == EXIT_OK
        plans.append(pointer(root)["plan"])
    assert len(set(plans)) == 3
    assert sorted(p.name for p in (root / "plans" / PREFIX).iterdir() if p.is_dir()) == plans[1:]  # keep_plans
    entry = pointer(root)["manifests"]["ams-1"]
    body = (root / "plans" / entry["key"]).read_bytes()
    from contracts.keys import derive_keyring, load_keyring
    m = decode_manifest(body, "ams-1", derive_keyring(load_keyring(root / "keys.toml"), "ams-1"))
    assert m.version == entry["version"] and {f.key for f in m.files} and m.credentials.keys() == {"origin"}
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    done = [e for e in events if e["event"] == "plan-done"]
    assert len(done) == 3 and done[-1]["appliances"] == 2 and done[-1]["catalog"]["titles"] == 2
    assert done[-1]["demand"]["failed"]  # the stand-in has no /v1/demand: reported, not fatal


def test_an_appliance_no_replica_heard_from_keeps_its_manifest(world, capsys):
    root, stand_in = world
    assert plan(root, now=1767225600.0) == EXIT_OK
    first = pointer(root)
    kept = (root / "plans" / first["manifests"]["ams-2"]["key"]).read_bytes()
    stand_in.appliances[1] = appliance("ams-2", "ams", reported=False)
    assert plan(root, now=1767229200.0) == EXIT_OK
    second = pointer(root)
    assert second["plan"] != first["plan"]
    assert second["manifests"]["ams-2"]["key"].startswith(f"{PREFIX}{second['plan']}/")
    assert (root / "plans" / second["manifests"]["ams-2"]["key"]).read_bytes() == kept
    done = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"plan-done"' in line]
    assert done[-1]["carried"] == ["ams-2"]


@pytest.mark.parametrize("spoil, error", [
    (lambda root, s: s.appliances.__setitem__(slice(None), [appliance("ams-1", "ams", reported=False)]),
     "no appliance has reported"),
    (lambda root, s: [p.unlink() for p in (root / "origin" / "catalog").iterdir()], "yields no file"),
    (lambda root, s: (root / "origin" / "catalog" / "t1.json").write_text("{broken"), "1 of 2 catalog entries"),
], ids=["nobody-reported", "empty-catalog", "too-many-broken"])
def test_refuses_to_write_when_it_cannot_plan_safely(world, capsys, spoil, error):
    root, stand_in = world
    (root / "fill-plan.toml").write_text((root / "fill-plan.toml").read_text().replace(
        "keep_plans = 2", "keep_plans = 2\nmax_catalog_skip_fraction = 0.3"))
    assert plan(root, now=1767225600.0) == EXIT_OK
    before = (root / "plans" / POINTER).read_bytes()
    spoil(root, stand_in)
    assert plan(root, now=1767229200.0) == EXIT_FAILED
    assert (root / "plans" / POINTER).read_bytes() == before
    failed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"plan-failed"' in line]
    assert error in failed[-1]["error"]


def test_dry_run_writes_nothing(world):
    root, _ = world
    assert Planner(plan_config.load(root / "fill-plan.toml")).plan(dry_run=True) == EXIT_OK
    assert not (root / "plans").exists() or not any((root / "plans").rglob("*.json"))
