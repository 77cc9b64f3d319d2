"""The example configs in config/: each passes its service's `check-config` where it sits, they agree
with each other, and the packages install them agreeing with the packaged secrets.

How "where it sits" works: an example names the other examples beside it (keys.example.toml,
fleet.example.toml, callers.example.toml, the *.example.token files) by paths relative to itself, and
every service takes a relative path against its config file's folder — so each check below runs on
config/ itself, from an unrelated working directory, with nothing copied or rewritten. Absolute paths
are left for what a check does not open (state directories, the origin's directory, the appliance's
disks: `oca check-config --allow-missing-disks`). The packages set the relative keys to the installed
files (/etc/oca/… for the appliance, /etc/opencdn/… for the control plane: Conffile settings in
packaging/build.py), which the last test holds to the packaged conffiles and secrets."""
from __future__ import annotations

import hashlib
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "packaging"))
import build  # noqa: E402  (packaging/build.py: stdlib only)

# Every example, by the command that checks it where it sits. Several files go through one command:
# `oca check-config` reads the fill settings it is given, steering's reads its fleet, key and callers
# files (the checks below assert the configs name those very files).
OCA = ("oca", "check-config", "-c", "oca.example.toml", "--fill-config", "fill.example.toml",
       "--allow-missing-disks")
STEERING = ("steering", "check-config", "-c", "steering.example.toml")
CHECKS = {
    "oca.example.toml": OCA,
    "fill.example.toml": OCA,
    "steering.example.toml": STEERING,
    "fleet.example.toml": STEERING,
    "callers.example.toml": STEERING,
    "keys.example.toml": STEERING,
    "playback.example.toml": ("playback", "check-config", "-c", "playback.example.toml"),
    "origin.example.toml": ("origin", "check-config", "-c", "origin.example.toml"),
    "fill-plan.example.toml": ("fill", "check-config", "-c", "fill-plan.example.toml"),
}


def test_every_example_has_its_check():
    assert sorted(p.name for p in CONFIG.glob("*.toml")) == sorted(CHECKS)


@pytest.mark.parametrize("command", sorted(set(CHECKS.values())), ids=lambda c: c[0])
def test_example_passes_check_config_where_it_sits(command, tmp_path):
    program, *args = command
    args = [str(CONFIG / a) if a.endswith(".toml") else a for a in args]
    out = subprocess.run([str(BIN / program), *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok" in out.stdout and "error" not in out.stderr.lower(), out.stdout + out.stderr


# ---- the examples agree -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ex() -> dict[str, Any]:
    from fill import config as plan_config
    from oca import config as oca_config
    from oca.fill import config as fill_config
    from origin import config as origin_config
    from playback import config as playback_config
    from steering import config as steering_config
    from steering.fleetconf import load_fleet

    steering = steering_config.load(CONFIG / "steering.example.toml")
    return {
        "oca": oca_config.load(CONFIG / "oca.example.toml"), "fill": fill_config.load(CONFIG / "fill.example.toml"),
        "steering": steering, "fleet": load_fleet(steering.fleet_file),
        "playback": playback_config.load(CONFIG / "playback.example.toml"),
        "origin": origin_config.load(CONFIG / "origin.example.toml"),
        "plan": plan_config.load(CONFIG / "fill-plan.example.toml"),
    }


def port(url: str) -> int | None:
    return urlsplit(url).port


def test_everyone_calls_steering_where_it_listens(ex):
    replicas = ex["oca"].steering.urls
    assert replicas and {port(u) for u in replicas} == {ex["steering"].server.port}
    for name, urls in (("fill [agent] steering", ex["fill"].agent.steering),
                       ("playback steering_urls", ex["playback"].steering_urls),
                       ("fill-plan [steering] replicas", ex["plan"].steering.urls)):
        assert tuple(urls) == tuple(replicas), name  # the same replicas, on steering's port
    assert ex["steering"].server.listen not in ("127.0.0.1", "::1")  # ... and reachable from them


def test_the_planner_asks_playback_where_it_listens(ex):
    assert ex["plan"].playback.urls and {port(u) for u in ex["plan"].playback.urls} == {ex["playback"].port}


def test_appliances_reach_the_origin_where_it_serves(ex):
    serve = ex["origin"].serve
    for name, url in (("oca pull_through.parent", ex["oca"].pull_through.parent),
                      ("fill [origin] url", ex["fill"].origin.url),
                      ("fill-plan [plan] origin_url", ex["plan"].policy.origin.url)):
        assert url is not None and port(url) == serve.port, name
    assert serve.listen not in ("127.0.0.1", "::1")


def test_one_origin_and_one_manifest_store(ex):
    origin = ex["origin"].location.path
    assert origin is not None and ex["playback"].origin.path == origin
    assert Path(ex["plan"].origin.location) == origin
    assert ex["steering"].fill.origin == ex["plan"].manifests.location != ex["plan"].origin.location


def test_the_appliance_is_in_the_fleet(ex):
    oca, fleet = ex["oca"], ex["fleet"]
    spec = fleet.appliances[oca.appliance_id]
    assert spec.site == oca.site and spec.capacity_bps == oca.egress_capacity_bps
    assert ex["steering"].default_site in fleet.sites


def test_report_interval_and_token_rules_agree(ex):
    oca, steering, playback = ex["oca"], ex["steering"], ex["playback"]
    assert steering.health.interval_s == oca.steering.report_interval_s
    assert (oca.tokens.client_prefix_v4, oca.tokens.client_prefix_v6) == (
        steering.tokens.client_prefix_v4, steering.tokens.client_prefix_v6)
    assert playback.token_max_ttl_s <= steering.tokens.max_ttl_s


def test_key_files_are_the_example_master(ex):
    keys = CONFIG / "keys.example.toml"
    assert ex["oca"].tokens.key_file == keys and ex["oca"].pull_through.key_file == keys
    assert ex["steering"].key_file == keys and ex["origin"].serve.key_file == keys
    assert ex["plan"].planner.key_file == keys
    assert ex["steering"].fleet_file == CONFIG / "fleet.example.toml"
    assert ex["steering"].callers_file == ex["playback"].callers_file == CONFIG / "callers.example.toml"


def test_tokens_are_known_callers_with_their_roles(ex):
    from contracts.callers import parse_callers

    callers = parse_callers(tomllib.loads((CONFIG / "callers.example.toml").read_text()))
    playback_token = ex["playback"].steering_token
    assert playback_token == (CONFIG / "playback.example.token").read_text().strip()
    assert {"steer", "fleet"} <= callers[hashlib.sha256(playback_token.encode()).hexdigest()].roles
    plan = ex["plan"]
    assert plan.steering.token_file == plan.playback.token_file == CONFIG / "fill-plan.example.token"
    planner = callers[hashlib.sha256(plan.steering.token_file.read_text().strip().encode()).hexdigest()]
    assert {"fleet", "demand"} <= planner.roles  # steering's fleet state and demand; playback's demand


# ---- what the packages install from them ------------------------------------------------------------

def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


@pytest.mark.parametrize("name", sorted(build.packages()))
def test_installed_configs_name_installed_files(name):
    """No example file survives into an installed config, and every /etc file one names is a conffile
    or a secret of the same package (the /etc/oca vs /etc/opencdn split follows the package)."""
    pkg = build.packages()[name]
    installed = {c.dest for c in pkg.conffiles} | set(pkg.secrets)
    for conf in pkg.conffiles:
        if not conf.dest.endswith(".toml"):
            continue
        values = list(strings(tomllib.loads(build.render_conffile(conf))))
        assert not [v for v in values if v.endswith((".example.toml", ".example.token"))], conf.dest
        named = [v for v in values if v.startswith("/etc/")]
        assert set(named) <= installed, (conf.dest, set(named) - installed)
