"""Fill's config (the example parses; errors name the dotted key) and the CLI's argument handling."""
from __future__ import annotations

from pathlib import Path

import pytest

from fill import config as fill_config
from fill.agent import EXIT_USAGE
from fill.agent_cli import main, parser, settings
from fill.config import ConfigError, parse

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "fill.example.toml"


def test_example_parses():
    cfg = fill_config.load(EXAMPLE)
    assert cfg.transfer.rate_limit_bps == 1_200_000_000
    assert cfg.window.window.start_minute == 120 and cfg.window.window.duration_s == 12 * 3600
    assert cfg.plan.origin.s3_bucket == "media-origin" and cfg.plan.origin.s3_prefix == "prod"
    assert cfg.agent.steering[0].startswith("http://steering-1")


@pytest.mark.parametrize("mapping, message", [
    ({"window": {"start": "25:00"}}, "window.start:"),
    ({"window": {"timezone": "Mars/Olympus"}}, "window.timezone: unknown time zone"),
    ({"transfer": {"max_files": 0}}, "transfer.max_files: must be at least 1"),
    ({"transfer": {"rate_limit_bps": "fast"}}, "transfer.rate_limit_bps: must be an integer"),
    ({"origin": {"url": "ftp://x"}}, "origin.url: must be an http(s) URL"),
    ({"origin": {"url": "http://o", "location": "s3://b"}}, "origin.location: give either"),
    ({"plan": {"copy_thresholds": [5, 1]}}, "plan.copy_thresholds: must be ascending"),
    ({"plan": {"origin_s3": "bucket"}}, "plan.origin_s3: must be s3://bucket"),
    ({"serving": {"io_class": "rt"}}, "serving.io_class: must be one of"),
    ({"agent": {"steering": ["steering:8090"]}}, "agent.steering[0]: must be an http(s) URL"),
    ({"transfer": {"typo": 1}}, "transfer.typo: unknown setting"),
], ids=["bad-start", "bad-zone", "zero-files", "rate-type", "origin-scheme", "origin-both", "thresholds-order",
        "plan-s3", "io-class", "steering-url", "unknown-key"])
def test_errors_name_the_key(mapping, message):
    with pytest.raises(ConfigError) as err:
        parse(mapping)
    assert message in str(err.value)


def test_flags_override(tmp_path):
    args = parser().parse_args(["-c", "x.toml", "--fill-config", str(EXAMPLE), "--origin", "http://o:8070/",
                                "--rate-limit-bps", "0", "--steering", "http://s:1", "--no-verify-catalog"])
    cfg = settings(args)
    assert cfg.origin.url == "http://o:8070" and cfg.origin.location is None and not cfg.origin.verify_catalog
    assert cfg.transfer.rate_limit_bps == 0 and cfg.agent.steering == ("http://s:1",)


def test_usage_errors(tmp_path, capsys):
    assert main(["-c", str(tmp_path / "missing.toml"), "--manifest", "m.json"]) == EXIT_USAGE
    from fill_helpers import write_keyfile, write_oca_config
    cfg = write_oca_config(tmp_path / "a", "a1", "s1", write_keyfile(tmp_path / "k.toml"))
    assert main(["-c", str(cfg)]) == EXIT_USAGE
    assert "--steering URL or --manifest FILE" in capsys.readouterr().err
    assert main(["-c", str(cfg), "--manifest", "m.json", "--origin", "ftp://x"]) == EXIT_USAGE


def test_fill_toml_beside_the_appliance_config_is_used(tmp_path):
    (tmp_path / "oca.toml").write_text("")
    (tmp_path / "fill.toml").write_text('[agent]\nsteering = ["http://s:1"]\n')
    cfg = settings(parser().parse_args(["-c", str(tmp_path / "oca.toml")]))
    assert cfg.agent.steering == ("http://s:1",)


def test_lower_priority_only_lowers():
    import subprocess
    import sys
    code = ("import os; from fill.agent_cli import lower_priority; os.nice(15); lower_priority(10, 'best-effort');"
            "lower_priority(10, 'idle'); lower_priority(10, 'best-effort'); print(os.getpriority(os.PRIO_PROCESS, 0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == 15
