"""The appliance config: `parse()` over table-driven mappings (every error names its dotted key), the
example config in config/ (parses, documents every key, passes `oca check-config`)."""
from __future__ import annotations

import copy
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest

from contracts.keys import load_keyring
from oca import config as oca_config
from oca.cli import main
from oca.config import (AdminConfig, ApplianceTable, ConfigError, DiskConfig, DiskTable, HttpConfig, MoverConfig,
                        PullThroughConfig, SteeringLinkConfig, StoreConfig, Tier, TokenConfig, parse)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "oca.example.toml"
MINIMAL: dict[str, Any] = {
    "appliance": {"id": "oca-1"},
    "tokens": {"key_file": "/etc/oca/keys.toml"},
    "store": {"index": "/var/lib/oca/index.db"},
    "tiers": {"ssd": [{"path": "/srv/oca/ssd0"}]},
}


def with_(dotted: str, value: Any) -> dict[str, Any]:
    """MINIMAL with one key set; `value` None deletes it. `tiers.ssd[1]` style indexes lists."""
    cfg = copy.deepcopy(MINIMAL)
    *parents, last = dotted.split(".")
    target: Any = cfg
    for part in parents:
        name, _, index = part.partition("[")
        target = target.setdefault(name, {})
        if index:
            target = target[int(index.rstrip("]"))]
    if value is None:
        del target[last]
    else:
        target[last] = value
    return cfg


def test_minimal_config_takes_every_default() -> None:
    cfg = parse(MINIMAL)
    assert (cfg.appliance_id, cfg.site, cfg.egress_capacity_bps) == ("oca-1", "default", 10_000_000_000)
    assert cfg.http == HttpConfig() and cfg.admin == AdminConfig()
    assert cfg.mover == MoverConfig() and cfg.pull_through == PullThroughConfig()
    assert cfg.tokens == TokenConfig(key_file=Path("/etc/oca/keys.toml"))
    assert cfg.store == StoreConfig(index_path=Path("/var/lib/oca/index.db"))
    assert cfg.disks == (DiskConfig(path=Path("/srv/oca/ssd0"), tier=Tier.SSD),)
    assert cfg.source is None and not cfg.dev


@pytest.mark.parametrize("mapping, check", [
    (with_("http.workers", 3), lambda c: c.effective_workers() == 3),
    (with_("http.workers", 0), lambda c: c.effective_workers() >= 1),
    (with_("http.keepalive_timeout_s", 5), lambda c: c.http.keepalive_timeout_s == 5.0),
    (with_("http.port", 0), lambda c: c.http.port == 0),
    (with_("admin.port", 65535), lambda c: c.admin.port == 65535),
    (with_("store.eviction", "lru"), lambda c: c.store.eviction == "lru"),
    (with_("mover.ssd_high_water", 1.0), lambda c: c.mover.ssd_high_water == 1.0),
    (with_("pull_through", {"enabled": True, "parent": "http://p:8000", "key_file": "/etc/oca/pull.toml"}),
     lambda c: c.pull_through.enabled and c.pull_through.parent == "http://p:8000"),
    (with_("pull_through.parent", "http://p:8000"), lambda c: not c.pull_through.enabled),
    (with_("tiers", {"hdd": [{"path": "/h0"}, {"path": "/h1", "reserve_bytes": 5}]}),
     lambda c: [(str(d.path), d.tier, d.reserve_bytes) for d in c.disks] == [("/h0", Tier.HDD, 0),
                                                                            ("/h1", Tier.HDD, 5)]),
    (with_("tiers.hdd", [{"path": "/h0"}]), lambda c: [d.tier for d in c.disks] == [Tier.SSD, Tier.HDD]),
], ids=["workers", "workers-per-core", "int-for-float", "port-0", "admin-port-max", "lru", "high-water-1",
        "pull-through-on", "parent-while-off", "hdd-only", "ssd-and-hdd"])
def test_valid_configs(mapping: dict, check) -> None:
    assert check(parse(mapping))


def test_relative_paths_are_taken_against_base(tmp_path: Path) -> None:
    mapping = with_("tiers.ssd", [{"path": "ssd0"}])
    mapping["tokens"]["key_file"] = "keys.toml"
    mapping["store"]["index"] = "state/index.db"
    cfg = parse(mapping, base=tmp_path)
    assert cfg.tokens.key_file == tmp_path / "keys.toml"
    assert cfg.store.index_path == tmp_path / "state" / "index.db"
    assert cfg.disks[0].path == tmp_path / "ssd0"


@pytest.mark.parametrize("mapping, message", [
    ({k: v for k, v in MINIMAL.items() if k != "appliance"}, "appliance: required"),
    (with_("appliance.id", None), "appliance.id: required"),
    (with_("appliance.id", 7), "appliance.id: must be a string"),
    (with_("appliance.egress_capacity_bps", 0), "appliance.egress_capacity_bps: must be at least 1"),
    (with_("appliance.name", "x"), "appliance.name: unknown setting"),
    (with_("bogus", {}), "bogus: unknown setting"),
    (with_("http", 5), "http: must be a table"),
    (with_("http.prot", 80), "http.prot: unknown setting"),
    (with_("http.port", 70000), "http.port: must be at most 65535"),
    (with_("http.port", -1), "http.port: must be at least 0"),
    (with_("http.port", "8080"), "http.port: must be an integer"),
    (with_("http.port", True), "http.port: must be an integer"),
    (with_("admin.port", 65536), "admin.port: must be at most 65535"),
    (with_("http.workers", 257), "http.workers: must be at most 256"),
    (with_("http.sendfile", "yes"), "http.sendfile: must be true or false"),
    (with_("http.header_timeout_s", 0), "http.header_timeout_s: must be at least 0.1"),
    (with_("http.max_header_bytes", 512), "http.max_header_bytes: must be at least 1024"),
    (with_("tokens", None), "tokens: required"),
    (with_("tokens.key_file", None), "tokens.key_file: required"),
    (with_("tokens.key_file", "keys.toml"), "tokens.key_file: must be an absolute path"),
    (with_("tokens.client_prefix_v4", 33), "tokens.client_prefix_v4: must be at most 32"),
    (with_("tokens.client_prefix_v6", 129), "tokens.client_prefix_v6: must be at most 128"),
    (with_("store.index", None), "store.index: required"),
    (with_("store.index", ""), "store.index: must be a path string"),
    (with_("store.eviction", "fifo"), "store.eviction: must be one of lowest-popularity, lru"),
    (with_("store.index_path", "/x.db"), "store.index_path: unknown setting"),
    (with_("tiers", None), "tiers: required"),
    (with_("tiers", {}), "tiers: at least one disk under tiers.ssd or tiers.hdd"),
    (with_("tiers.ssd", []), "tiers: at least one disk under tiers.ssd or tiers.hdd"),
    (with_("tiers.ssd", {"path": "/d"}), "tiers.ssd: must be an array of tables"),
    (with_("tiers.nvme", [{"path": "/d"}]), "tiers.nvme: unknown setting"),
    (with_("tiers.ssd", [{"path": "/a"}, {"path": 5}]), "tiers.ssd[1].path: must be a path string"),
    (with_("tiers.ssd", [{"path": "/a"}, {}]), "tiers.ssd[1].path: required"),
    (with_("tiers.ssd", [{"path": "/a", "size": 1}]), "tiers.ssd[0].size: unknown setting"),
    (with_("tiers.ssd", [{"path": "/a", "reserve_bytes": -1}]), "tiers.ssd[0].reserve_bytes: must be at least 0"),
    (with_("tiers.hdd", [{"path": "/srv/oca/ssd0"}]), "tiers: disk path /srv/oca/ssd0 listed twice"),
    (with_("tiers.ssd", [{"path": "/a"}, {"path": "/a"}]), "tiers: disk path /a listed twice"),
    (with_("mover.ssd_high_water", 1.5), "mover.ssd_high_water: must be at most 1"),
    (with_("mover.io_budget_bps", 0), "mover.io_budget_bps: must be at least 1"),
    (with_("pull_through.enabled", True), "pull_through.parent: required when pull_through.enabled is true"),
    (with_("pull_through", {"enabled": True, "parent": ""}), "pull_through.parent: required when"),
    (with_("pull_through", {"enabled": True, "parent": "http://p:8000"}), "pull_through.key_file: required when"),
    (with_("pull_through.parent", 5), "pull_through.parent: must be a string"),
    (with_("bgp", 5), "bgp: must be a table"),
    (with_("bgp", {"local_az": 1}), "bgp.local_az: unknown setting (did you mean 'local_as'?"),
    (with_("tls", {"certificate": []}), "tls.certificate: unknown setting"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_errors_name_the_dotted_key(mapping: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(mapping)
    assert str(err.value).startswith(message), str(err.value)


def test_load_refuses_bad_toml(tmp_path: Path) -> None:
    path = tmp_path / "oca.toml"
    path.write_text("[appliance\nid = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        oca_config.load(path)
    with pytest.raises(ConfigError, match="missing.toml"):
        oca_config.load(tmp_path / "missing.toml")


# -- the example config ----------------------------------------------------------------------------

def test_example_config_loads() -> None:
    cfg = oca_config.load(EXAMPLE)
    assert cfg.source == EXAMPLE.resolve() and cfg.appliance_id == "ams-1"
    assert cfg.tokens.key_file == EXAMPLE.resolve().parent / "keys.example.toml"
    assert load_keyring(cfg.tokens.key_file).signing_id == "k1"
    assert cfg.store.index_path == Path("/var/lib/oca/index.db")
    assert [(str(d.path), d.tier) for d in cfg.disks] == [
        ("/srv/oca/ssd0", Tier.SSD), ("/srv/oca/ssd1", Tier.SSD), ("/srv/oca/hdd0", Tier.HDD),
        ("/srv/oca/hdd1", Tier.HDD)]
    # Its values are the defaults, so copying it changes nothing but ids, paths and reserves.
    assert cfg.http == HttpConfig() and cfg.admin == AdminConfig() and cfg.mover == MoverConfig()
    # ... except pull-through, which the example turns on (as shipped: steering admits a site's 8th
    # miss of a file to its own appliance, which pulls it from the parent; loadtests/offload_sim.py)
    assert cfg.pull_through.enabled and not PullThroughConfig().enabled
    assert msgspec.structs.replace(cfg.pull_through, enabled=False, parent=None, key_file=None) == PullThroughConfig()


def _names(cls: type) -> set[str]:
    """The TOML keys of a table's Struct."""
    return {f.encode_name for f in msgspec.structs.fields(cls)}


def test_example_config_documents_every_key() -> None:
    """A key added to oca/config.py must be added (with its comment) to the example too."""
    raw = tomllib.loads(EXAMPLE.read_text())
    expected = {
        "appliance": _names(ApplianceTable),
        "http": _names(HttpConfig), "admin": _names(AdminConfig), "tokens": _names(TokenConfig),
        "store": _names(StoreConfig), "mover": _names(MoverConfig),
        "pull_through": _names(PullThroughConfig), "steering": _names(SteeringLinkConfig),
    }
    assert set(raw) == set(expected) | {"tiers"}
    for section, keys in expected.items():
        assert set(raw[section]) == keys, section
    assert set(raw["tiers"]["ssd"][0]) == _names(DiskTable)


def test_example_config_passes_check_config() -> None:
    """Its disks are not mounted here: an error, unless asked to allow it (tests/ops/test_examples.py
    checks every example where it sits)."""
    cmd = [sys.executable, "-m", "oca.cli", "check-config", "-c", str(EXAMPLE)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert out.returncode == 2 and "error: tiers.ssd: /srv/oca/ssd0 is not a directory" in out.stderr, out.stderr
    assert "--allow-missing-disks" in out.stderr and "ok" not in out.stdout
    out = subprocess.run(cmd + ["--allow-missing-disks"], capture_output=True, text=True, timeout=60, cwd=ROOT,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert "ok" in out.stdout and "4 disk(s) (4 missing)" in out.stdout and "signing key k1" in out.stdout
    assert "warning: tiers.hdd: /srv/oca/hdd1 is not a directory" in out.stderr


def test_check_config_loads_the_key_files_and_fill_settings(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """What the workers and `oca fill` would refuse at start, check-config refuses: the pull-through key
    file (when on), the fill settings beside the config; every disk present passes."""
    disks = [tmp_path / n for n in ("ssd0", "ssd1", "hdd0", "hdd1")]
    for d in disks:
        d.mkdir()
    text = EXAMPLE.read_text().replace('"keys.example.toml"', f'"{EXAMPLE.parent / "keys.example.toml"}"')
    for d in disks:
        text = text.replace(f'"/srv/oca/{d.name}"', f'"{d}"')
    cfg = tmp_path / "oca.toml"
    cfg.write_text(text)
    assert main(["check-config", "-c", str(cfg)]) == 0
    assert "4 disk(s), 1 key(s)" in capsys.readouterr().out  # no fill.toml beside it: the defaults
    cfg.write_text(re.sub(r'(\[pull_through\][\s\S]*?key_file = )"[^"]*"', r'\1"pull-keys.toml"', text))
    assert main(["check-config", "-c", str(cfg)]) == 2
    assert "pull_through.key_file: key file " in capsys.readouterr().err
    cfg.write_text(text)
    (tmp_path / "fill.toml").write_text("[transfer]\nmax_fils = 3\n")
    assert main(["check-config", "-c", str(cfg)]) == 2
    assert "transfer.max_fils: unknown setting (did you mean 'max_files'?)" in capsys.readouterr().err


def test_check_config_names_the_bad_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "oca.toml"
    bad.write_text(EXAMPLE.read_text().replace("[http]", "[http]\nprot = 80", 1)
                   .replace('"keys.example.toml"', f'"{EXAMPLE.parent / "keys.example.toml"}"'))
    assert main(["check-config", "-c", str(bad)]) == 2
    assert "http.prot: unknown setting" in capsys.readouterr().err
