"""Steering config and fleet files: examples load, errors name the dotted key."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from contracts.keys import write_new_keyfile
from contracts.structconf import ConfigError
from steering import config as steering_config
from steering.cli import main
from steering.core.admission import PullPolicy
from steering.core.health import HealthPolicy
from steering.fleetconf import load_fleet, parse_fleet

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = {"steering": {"fleet_file": "/f.toml", "key_file": "/k.toml", "default_site": "ams"}}


def test_examples_pass_check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Where it sits (it names the fleet, key and callers examples beside it), and copied elsewhere
    with its key file replaced: relative paths are taken against the config's folder."""
    assert main(["check-config", "-c", str(ROOT / "config" / "steering.example.toml")]) == 0
    out = capsys.readouterr().out
    assert "3 sites, 5 appliances, 6 prefixes" in out and "signing k1" in out
    for name in ("steering.example.toml", "fleet.example.toml", "callers.example.toml"):
        shutil.copy(ROOT / "config" / name, tmp_path / name)
    write_new_keyfile(tmp_path / "keys.toml")
    cfg = tmp_path / "steering.example.toml"
    cfg.write_text(cfg.read_text().replace('"keys.example.toml"', '"keys.toml"'))
    assert main(["check-config", "-c", str(cfg)]) == 0
    assert f"keys: {tmp_path / 'keys.toml'}" in capsys.readouterr().out


def test_check_config_reports_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text('[steering]\nfleet_file = "f.toml"\nkey_file = "k.toml"\ndefault_site = "x"\nprot = 1\n')
    assert main(["check-config", "-c", str(cfg)]) == 2
    assert "steering.prot: unknown setting" in capsys.readouterr().err


def test_console_script_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "steering.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "check-config" in out.stdout


def with_(path: str, value: object) -> dict:
    cfg = json.loads(json.dumps(MINIMAL))
    *parents, last = path.split(".")
    target = cfg
    for p in parents:
        target = target.setdefault(p, {})
    target[last] = value
    return cfg


@pytest.mark.parametrize("mapping, message", [
    ({}, "steering: required"),
    ({"steering": {"key_file": "/k", "default_site": "a"}}, "steering.fleet_file: required"),
    (with_("steering.fleet_file", "rel.toml"), "steering.fleet_file: must be an absolute path"),
    (with_("steering.port", 70000), "steering.port: must be at most 65535"),
    (with_("health.missed_reports", 0), "health.missed_reports: must be at least 1"),
    (with_("health.egress_up_fraction", 0.95), "health.egress_up_fraction: must not exceed"),
    (with_("health.typo", 1), "health.typo: unknown setting"),
    (with_("tokens.ttl_s", 10**7), "tokens.ttl_s: must not exceed tokens.max_ttl_s"),
    (with_("tokens.client_prefix_v4", 33), "tokens.client_prefix_v4: must be at most 32"),
    (with_("ranking.max_locations", 0), "ranking.max_locations: must be at least 1"),
    (with_("geo.slack_km", "far"), "geo.slack_km: must be a number"),
    (with_("steering.max_connections", 0), "steering.max_connections: must be at least 1"),  # the guard's
    (with_("steering.fleet_url", 5), "steering.fleet_url: must be a string"),
    (with_("demand.source", "a b"), "demand.source: must be 1-64 of [A-Za-z0-9_.-]"),
    (with_("pull_through.misses_to_admit", 0), "pull_through.misses_to_admit: must be at least 1"),
    (with_("fill.origin_url", "ftp://x"), "fill.origin_url: must be an http(s) URL"),
    ({**MINIMAL, "fill": {"poll_interval_s": 9, "replan_interval_s": 7}}, "fill.replan_interval_s: the old name"),
    (with_("tls.cert", "/c.pem"), "tls.cert: unknown setting"),
    (with_("tls", 5), "tls: must be a table"),
], ids=["no-section", "no-fleet", "relative-path", "port", "missed", "band-inverted", "typo", "ttl",
        "prefix-bits", "max-locations", "slack-type", "guard", "fleet-url-type", "demand-source", "pull-misses",
        "fill-origin-url", "fill-both-intervals", "tls-unknown", "tls-type"])
def test_config_errors_name_the_key(mapping: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        steering_config.parse(mapping)
    assert message in str(err.value)


def test_config_defaults_and_relative_paths(tmp_path: Path) -> None:
    cfg = steering_config.parse({"steering": {"fleet_file": "f.toml", "key_file": "k.toml", "default_site": "a"},
                                 "geo": {"database": "GeoLite2-City.mmdb"}}, base=tmp_path)
    assert cfg.fleet_file == tmp_path / "f.toml" and cfg.geo.database == tmp_path / "GeoLite2-City.mmdb"
    assert cfg.health.missed_reports == 3 and cfg.ranking.max_locations == 3 and cfg.tokens.ttl_s == 21600
    assert cfg.demand.state_dir == tmp_path / "steering-demand" and cfg.demand.source.endswith("-8100")
    assert cfg.pull_through.policy == PullPolicy() and cfg.health == HealthPolicy() and cfg.tls is None


@pytest.mark.parametrize("fill, origin, poll_s", [
    ({}, None, 5.0),
    ({"origin": "manifests", "replan_interval_s": 7}, "manifests", 7.0),  # the old name, still read
    ({"origin": "s3://b/p", "poll_interval_s": 3}, "s3://b/p", 3.0),
], ids=["defaults", "relative-and-old-name", "s3"])
def test_fill_settings(tmp_path: Path, fill: dict, origin: str | None, poll_s: float) -> None:
    cfg = steering_config.parse({**MINIMAL, "fill": fill}, base=tmp_path)
    want = str(tmp_path / origin) if origin and not origin.startswith("s3://") else origin
    assert (cfg.fill.origin, cfg.fill.poll_interval_s, cfg.fill.replan_interval_s) == (want, poll_s, poll_s)


SITE = {"id": "ams", "latitude": 52.37, "longitude": 4.9, "prefixes": ["192.0.2.0/24"],
        "appliances": [{"id": "ams-1", "base_url": "https://a1.example.net/", "capacity_gbps": 10}]}


def site(**changes: object) -> dict:
    return {"sites": [{**SITE, **changes}]}


@pytest.mark.parametrize("mapping, message", [
    ({"sites": []}, "sites: the fleet needs at least one site"),
    (site(latitude=91), "sites[0].latitude: must be at most 90"),
    (site(id="a b"), "sites[0].id: must be 1-64"),
    (site(id=5), "sites[0].id: must be 1-64"),
    (site(colour="red"), "sites[0].colour: unknown setting"),
    (site(prefixes=["192.0.2.1/24"]), "sites[0].prefixes[0]: 192.0.2.1/24 has host bits set"),
    (site(prefixes=["not-a-net"]), "sites[0].prefixes[0]"),
    (site(appliances=[{"id": "x", "base_url": "ftp://x", "capacity_gbps": 1}]), "sites[0].appliances[0].base_url"),
    (site(appliances=[{"id": "x", "base_url": "http://x", "capacity_gbps": 0}]),
     "sites[0].appliances[0].capacity_gbps: must be at least"),
    (site(appliances=[{"id": "x", "base_url": "http://x"}]), "sites[0].appliances[0].capacity_gbps: required"),
    ({"sites": [SITE, SITE]}, "sites.ams: site listed twice"),
    ({"sites": [SITE, {**SITE, "id": "fra"}]}, "appliance 'ams-1' also listed in site 'ams'"),
    ({"coverageZones": {"ams": {"network": ["2001:db8::/32"], "coordinates": {"latitude": 1, "longitude": 2}}}},
     "coverageZones.ams.network[0]: 2001:db8::/32 is not an IPv4 network"),
    ({"coverageZones": {"ams": {"network": []}}}, "coverageZones.ams.coordinates: required"),
    ({"coverageZones": {}}, "coverageZones: must be an object with at least one zone"),
], ids=["no-sites", "latitude", "site-id", "site-id-type", "unknown-site-key", "host-bits", "not-a-network", "scheme",
        "zero-capacity",
        "no-capacity", "duplicate-site", "duplicate-appliance", "czf-v6-in-network", "czf-no-coordinates",
        "czf-empty"])
def test_fleet_errors_name_the_key(mapping: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_fleet(mapping)
    assert message in str(err.value)


def test_coverage_zone_json_shape(tmp_path: Path) -> None:
    czf = {"coverageZones": {
        "ams": {"network": ["192.0.2.0/24"], "network6": ["2001:db8::/32"],
                "coordinates": {"latitude": 52.37, "longitude": 4.90},
                "appliances": [{"id": "ams-1", "base_url": "https://ams-1.example.net", "capacity_gbps": 40}]},
        "fra": {"network": ["198.51.100.0/24"], "coordinates": {"latitude": 50.11, "longitude": 8.68}}}}
    path = tmp_path / "czf.json"
    path.write_text(json.dumps(czf))
    fleet = load_fleet(path)
    assert set(fleet.sites) == {"ams", "fra"} and len(fleet.prefixes) == 3
    assert fleet.appliances["ams-1"].capacity_bps == 40 * 10**9
    assert fleet.sites["fra"].appliances == ()


def test_fleet_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load_fleet(tmp_path / "missing.toml")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_fleet(tmp_path / "bad.json")


def test_a_reload_that_moves_listen_port_or_tls_keeps_the_running_ones_and_says_so(tmp_path, caplog):
    """The listening socket and its TLS files are the process's: a reload that changes them warns that
    a restart is needed and keeps the running values (everything else is adopted)."""
    import logging

    from msgspec.structs import replace

    from steer_helpers import write_setup
    from steering.service import Replica, load_all

    from contracts.tlsserve import TlsSettings

    config = steering_config.load(write_setup(tmp_path / "s"))
    replica = Replica(config, load_all(config))
    moved = replace(config, server=replace(config.server, port=config.server.port + 1),
                    tls=TlsSettings(cert_file=tmp_path / "c.pem", key_file=tmp_path / "k.pem"),
                    default_site="lon")
    with caplog.at_level(logging.WARNING, logger="steering"):
        replica.adopt(moved, load_all(config))
    assert {r.getMessage() for r in caplog.records} >= {"listen-change-needs-restart", "tls-change-needs-restart"}
    kept = replica.config
    assert (kept.server.port, kept.tls, kept.default_site) == (config.server.port, None, "lon")
