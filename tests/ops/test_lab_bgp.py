"""`scripts/lab up --bgp` (scripts/labbgp.py): BIRD plays the ISP's router for the lab. Its config
parses (`bird -p`); in a real lab (detached, 2 s sample title, no fill) every appliance's IPv4 and IPv6
session with BIRD is up, as the appliances and steering say; steering sends a client in each network
BIRD announces to the site it was announced to, by that route and its AS path — also through the
banner's own curl lines; `status` lists bird and `down` stops it. Waits are bounded; nothing asserts a
duration."""
from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from tests.support.labtest import eventually, lab_cli  # also puts scripts/ on sys.path

import labbgp  # noqa: E402
from labdaemons import free_port, get_json  # noqa: E402
from labproc import is_ours  # noqa: E402

# As tests/steering/test_steer_bgp.py: outside CI a machine that skipped scripts/setup may lack BIRD.
pytestmark = pytest.mark.skipif(labbgp.binaries() is None and not os.environ.get("CI"),
                                reason="BIRD 2 is not installed here (scripts/setup installs it)")




def test_birds_config_for_the_lab_parses(tmp_path):
    sessions = labbgp.plan({"lab-a1": "lab-a", "lab-b1": "lab-b"}, free_port)
    (tmp_path / "bird.conf").write_text(labbgp.bird_conf(sessions, tmp_path, {4: 40179, 6: 40179}))
    bird = labbgp.binaries()[0]
    out = subprocess.run([bird, "-p", "-c", str(tmp_path / "bird.conf")], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert [s.routes for s in sessions] == [{"198.51.100.0/24": (64510,)}, {"2001:db8:a::/48": (64510,)},
                                            {"203.0.113.0/24": (64520, 64521)}, {"2001:db8:b::/48": (64520, 64521)}]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    state = tmp_path_factory.mktemp("lab-bgp") / "lab"
    out = lab_cli(state, "up", "--bgp", "--detach", "--no-fill", "--seconds", "2")
    try:
        assert out.returncode == 0, out.stderr[-3000:]
        yield state, json.loads((state / "lab.json").read_text()), out.stdout
    finally:
        lab_cli(state, "down", timeout_s=180)


def steer(url: str, token: Path, client: str) -> dict:
    query = urllib.parse.urlencode({"file": "files/lab-sample/any/240p.mp4", "client": client, "explain": "1"})
    return get_json(f"{url}/v1/steer?{query}", token_file=token)["decision"]


def test_lab_bgp_steers_each_announced_network_to_its_site(lab):
    state, info, banner = lab
    bgp, token = info["bgp"], state / "operator.token"
    assert f"birdc -s {bgp['socket']} show protocols" in banner and "BGP:          on" in banner
    assert Path(bgp["config"]).is_file() and Path(bgp["socket"]).exists()

    for name, app in info["appliances"].items():  # each appliance: both sessions with BIRD up
        sessions = eventually(lambda app=app: (s := get_json(f"{app['admin']}/v1/health")["bgp"]["sessions"])
                              and all(x["state"] == "up" for x in s) and s, f"{name}'s BGP sessions up")
        assert sorted((s["peer"], s["peer_as"], s["prefixes"]) for s in sessions) == [
            ("127.0.0.1", 64500, 1), ("::1", 64500, 1)]
    for url in info["steering_replicas"].values():  # each replica: every appliance reports them up
        fleet = get_json(f"{url}/v1/fleet", token_file=token)
        states = {a["id"]: [s["state"] for s in a["bgp"]["sessions"]] for site in fleet["sites"]
                  for a in site["appliances"]}
        assert states == {name: ["up", "up"] for name in info["appliances"]}

        for site, clients in bgp["clients"].items():  # a client in every announced network: that site, by BGP
            for prefix, client in clients.items():
                decision = eventually(lambda url=url, client=client, site=site: (
                    d := steer(url, token, client))["site"] == site and d, f"{url}: {client} to {site}")
                assert decision["method"] == "bgp", decision
                assert decision["route"]["prefix"] == prefix
                assert decision["route"]["as_path"] == bgp["announced"][site][prefix]
                assert sorted(decision["route"]["heard_by"]) == [f"{site}1", f"{site}2"]

    for site in bgp["clients"]:  # the banner's own example call answers as it says
        line = next(x for x in banner.splitlines() if x.startswith(f"  steer {site}:"))
        command = re.search(r"(curl .*?'\S+')", line).group(1)
        out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)
        assert json.loads(out.stdout)["decision"]["site"] == site, out.stdout + out.stderr


def test_bird_is_a_lab_daemon_and_down_stops_it(lab):
    state, info, _ = lab
    rows = {r["name"]: r for r in json.loads(lab_cli(state, "status", "--json").stdout)["daemons"]}
    assert rows["bird"]["state"] == "alive"
    bird = info["daemons"]["bird"]
    assert is_ours(bird)
    out = lab_cli(state, "down", timeout_s=180)
    assert out.returncode == 0 and "bird" in out.stdout, out.stdout + out.stderr
    assert not is_ours(bird)
