"""The fill agent's config (the example parses; errors name the dotted key) and `oca fill`'s argument
handling. (The planner's config: test_fill_plan_config.py.)"""
from __future__ import annotations

from pathlib import Path

import pytest

from oca.fill import config as fill_config
from oca.fill.agent import EXIT_USAGE
from oca.fill.cli import main, parser, settings
from oca.fill.config import ConfigError, parse

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "fill.example.toml"


def test_example_parses():
    cfg = fill_config.load(EXAMPLE)
    assert cfg.transfer.rate_limit_bps == 1_200_000_000
    assert cfg.window.window.start_minute == 120 and cfg.window.window.duration_s == 12 * 3600
    assert cfg.agent.steering[0].startswith("http://steering-1")


@pytest.mark.parametrize("mapping, message", [
    ({"window": {"start": "25:00"}}, "window.start:"),
    ({"window": {"timezone": "Mars/Olympus"}}, "window.timezone: unknown time zone"),
    ({"transfer": {"max_files": 0}}, "transfer.max_files: must be at least 1"),
    ({"transfer": {"rate_limit_bps": "fast"}}, "transfer.rate_limit_bps: must be an integer"),
    ({"origin": {"url": "ftp://x"}}, "origin.url: must be an http(s) URL"),
    ({"origin": {"url": "http://o", "location": "s3://b"}}, "origin.location: give either"),
    ({"serving": {"io_class": "rt"}}, "serving.io_class: must be one of"),
    ({"agent": {"steering": ["steering:8090"]}}, "agent.steering[0]: must be an http(s) URL"),
    ({"transfer": {"typo": 1}}, "transfer.typo: unknown setting"),
], ids=["bad-start", "bad-zone", "zero-files", "rate-type", "origin-scheme", "origin-both", "io-class",
        "steering-url", "unknown-key"])
def test_errors_name_the_key(mapping, message):
    with pytest.raises(ConfigError) as err:
        parse(mapping)
    assert message in str(err.value)


def test_a_plan_table_from_before_the_split_is_ignored():
    """The planner's policy moved to fill-plan.toml; an appliance's old fill.toml still loads."""
    cfg = parse({"plan": {"copy_thresholds": [5, 1], "whatever": 1}, "transfer": {"max_files": 2}})
    assert cfg.transfer.max_files == 2 and not hasattr(cfg, "plan")


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
    code = ("import os; from oca.fill.cli import lower_priority; os.nice(15); lower_priority(10, 'best-effort');"
            "lower_priority(10, 'idle'); lower_priority(10, 'best-effort'); print(os.getpriority(os.PRIO_PROCESS, 0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == 15
