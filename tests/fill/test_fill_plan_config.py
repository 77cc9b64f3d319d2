"""`fill plan`'s config (the example parses; errors name the dotted key) and its command line: usage
errors exit 2, a key file derived for one appliance is refused as the master, a second run while one
holds the lock exits 3 and does nothing."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from contracts.keys import derive_keyring, keyfile_text, load_keyring
from fill import config as plan_config
from fill.cli import main
from fill.config import ConfigError, parse
from fill.job import EXIT_BUSY, Planner
from fill_helpers import write_keyfile

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "fill-plan.example.toml"
BASE = {"planner": {"key_file": "/k.toml"}, "steering": {"replicas": ["http://s1:8100"]},
        "origin": {"location": "s3://media/prod", "endpoint_url": "http://minio:9000"}}


def test_example_parses():
    cfg = plan_config.load(EXAMPLE)
    assert cfg.planner.key_file == EXAMPLE.parent / "keys.example.toml" and cfg.planner.keep_plans == 5
    assert len(cfg.steering.urls) == 2 and cfg.playback.token_file == cfg.steering.token_file
    assert cfg.origin.location == "/var/lib/opencdn/origin" and cfg.origin.endpoint_url is None
    assert cfg.manifests.location == "/var/lib/opencdn/fill-manifests"
    assert cfg.policy.origin.url == "http://origin.example.net:8070" and cfg.policy.origin.s3_bucket is None


def test_defaults_manifests_beside_the_origin_and_regions_by_site(tmp_path):
    cfg = parse({**BASE, "regions": {"ams": "nl", "rtm": "nl"}}, base=tmp_path)
    assert cfg.manifests == cfg.origin and cfg.manifests.endpoint_url == "http://minio:9000"
    assert cfg.regions == {"ams": "nl", "rtm": "nl"} and cfg.planner.state_dir is None
    local = parse({**BASE, "manifests": {"location": "plans"}}, base=tmp_path)
    assert local.manifests.location == str(tmp_path / "plans") and local.manifests.endpoint_url is None


@pytest.mark.parametrize("change, message", [
    ({"planner": {}}, "planner.key_file: required"),
    ({"steering": {"replicas": []}}, "steering.replicas: at least one"),
    ({"steering": {"replicas": ["s1:8100"]}}, "steering.replicas[0]: must be an http(s) URL"),
    ({"steering": {"replicas": ["http://a", "http://a"]}}, "steering.replicas: a replica is listed twice"),
    ({"origin": {"location": "ftp://x"}}, "origin.location: 'ftp://x': only a local path"),
    ({"manifests": {"location": "/srv/m", "endpoint_url": "http://x"}}, "manifests.endpoint_url: only for an s3://"),
    ({"regions": {"ams": 3}}, "regions.ams: must be a string"),
    ({"regions": {"ams": "n l"}}, "regions.ams: site and region ids"),
    ({"plan": {"copy_thresholds": [5, 1]}}, "plan.copy_thresholds: must be ascending"),
    ({"plan": {"copy_thresholds": [5, 0]}}, "plan.copy_thresholds[1]: must be above 0"),
    ({"manifests": {"locaton": "/m"}}, "manifests.locaton: unknown setting"),
    ({"plan": {"origin_s3": "bucket"}}, "plan.origin_s3: must be s3://bucket"),
    ({"planner": {"key_file": "/k", "keep_plans": 1}}, "planner.keep_plans: must be at least 2"),
    ({"planner": {"key_file": "/k", "typo": 1}}, "planner.typo: unknown setting"),
], ids=["no-key", "no-steering", "steering-url", "twice", "origin-scheme", "endpoint-local", "region-type",
        "region-id", "thresholds-order", "thresholds-positive", "manifests-typo", "plan-s3", "keep", "unknown"])
def test_errors_name_the_key(change, message):
    with pytest.raises(ConfigError) as err:
        parse({**BASE, **change})
    assert message in str(err.value)


def _config(tmp_path: Path, keys: Path) -> Path:
    path = tmp_path / "fill-plan.toml"
    path.write_text(f'[planner]\nkey_file = "{keys}"\nstate_dir = "state"\n'
                    f'[steering]\nreplicas = ["http://127.0.0.1:9"]\n[origin]\nlocation = "origin"\n')
    return path


def test_check_config_and_usage_errors(tmp_path, capsys):
    master = write_keyfile(tmp_path / "keys.toml")
    assert main(["check-config", "-c", str(_config(tmp_path, master))]) == 0
    assert "ok" in capsys.readouterr().out
    derived = tmp_path / "ams-1.toml"
    derived.write_text(keyfile_text(derive_keyring(load_keyring(master), "ams-1"), "ams-1"))
    assert main(["check-config", "-c", str(_config(tmp_path, derived))]) == 2
    assert "derived for 'ams-1', not the master keys" in capsys.readouterr().err
    assert main(["plan", "-c", str(_config(tmp_path, derived))]) == 2
    assert main(["plan", "-c", str(tmp_path / "missing.toml")]) == 2
    assert main(["check-config", "-c", str(_config(tmp_path, tmp_path / "nokeys.toml"))]) == 2


def test_a_second_run_while_one_holds_the_lock_does_nothing(tmp_path, capsys):
    cfg = plan_config.load(_config(tmp_path, write_keyfile(tmp_path / "keys.toml")))
    (tmp_path / "state").mkdir()
    fd = os.open(tmp_path / "state" / "fill-plan.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert Planner(cfg).plan() == EXIT_BUSY
        assert '"plan-busy"' in capsys.readouterr().out
    finally:
        os.close(fd)


def test_every_policy_setting_is_read():
    cfg = parse({**BASE, "plan": {"learn_days": 7, "learn_factor": 1.5, "reactive_share": 0.2, "min_copies": 2,
                                  "include_cold": False, "origin_url": "http://o:8070/"}})
    p = cfg.policy
    assert (p.learn_days, p.learn_factor, p.reactive_share, p.min_copies, p.include_cold) == (7, 1.5, 0.2, 2, False)
    assert p.origin.url == "http://o:8070" and p.origin.s3_bucket is None
